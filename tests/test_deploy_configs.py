"""Configs of the production path (compose, Alertmanager, Grafana, Loki, Tempo) are valid.

Grafana, Loki and Tempo cannot run here, so their configs are checked for the facts that
make them work with runledger; compose and Alertmanager are checked by their own tools.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import yaml

from _support import ROOT


def load(relative: str) -> Any:
    return yaml.safe_load((ROOT / relative).read_text())


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: `make test` installs it (Debian package)"
    return path


def test_compose_file_is_valid_and_pins_every_image() -> None:
    out = subprocess.run(
        [tool("docker-compose"), "-f", "docker-compose.yml", "config"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    config = yaml.safe_load(out.stdout)
    for name, service in config["services"].items():
        image = service.get("image", "")
        assert image and not image.endswith(":latest") and ":" in image, (name, image)
        assert "healthcheck" in service or name in {"migrate", "retention", "demo"}, name
    for mount in config["services"]["prometheus"]["volumes"]:
        if isinstance(mount, dict) and mount.get("type") == "bind":
            assert mount.get("read_only"), mount


def test_alertmanager_config_passes_amtool() -> None:
    out = subprocess.run(
        [tool("amtool"), "check-config", "alertmanager/alertmanager.yml"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_grafana_datasources_have_fixed_uids_and_link_signals() -> None:
    sources = {
        d["uid"]: d for d in load("grafana/provisioning/datasources/runledger.yml")["datasources"]
    }
    assert set(sources) == {"prometheus", "tempo", "loki", "postgres", "alertmanager"}
    exemplars = sources["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert exemplars == [{"name": "trace_id", "datasourceUid": "tempo"}]
    assert sources["tempo"]["jsonData"]["tracesToLogsV2"]["datasourceUid"] == "loki"
    derived = sources["loki"]["jsonData"]["derivedFields"][0]
    assert derived["datasourceUid"] == "tempo"
    assert derived["url"] == "$${__value.raw}", "provisioning expands $: a literal needs $$"
    assert sources["postgres"]["type"] == "grafana-postgresql-datasource"
    assert sources["postgres"]["jsonData"]["database"] == "runledger"


def test_loki_keeps_logs_30_days_with_otlp_metadata() -> None:
    loki = load("loki/loki.yml")
    assert loki["limits_config"]["allow_structured_metadata"] is True
    assert loki["limits_config"]["retention_period"] == "720h"
    compactor = loki["compactor"]
    assert compactor["retention_enabled"] is True
    assert compactor["delete_request_store"] == "filesystem"  # Loki 3 refuses to start without
    schema = loki["schema_config"]["configs"][-1]
    assert (schema["store"], schema["schema"]) == ("tsdb", "v13")


def test_tempo_receives_otlp_and_keeps_traces_14_to_30_days() -> None:
    tempo = load("tempo/tempo.yml")
    protocols = tempo["distributor"]["receivers"]["otlp"]["protocols"]
    assert protocols["http"]["endpoint"].endswith(":4318")
    assert protocols["grpc"]["endpoint"].endswith(":4317")
    hours = int(re.fullmatch(r"(\d+)h", tempo["compactor"]["compaction"]["block_retention"])[1])
    assert 14 * 24 <= hours <= 30 * 24


def test_dockerfile_copies_only_what_exists() -> None:
    for line in (ROOT / "exporter" / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source
