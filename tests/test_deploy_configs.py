"""Configs of the production path (compose, Alertmanager, Grafana, Loki, Tempo) are valid.

Grafana, Loki and Tempo cannot run here, so their configs are checked for the facts that
make them work with runledger; compose and Alertmanager are checked by their own tools.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from _support import ROOT, local_nginx_config
from runledger.control import DEFAULTS


def load(relative: str) -> Any:
    return yaml.safe_load((ROOT / relative).read_text())


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: `make test` installs it (Debian package)"
    return path


def compose_config() -> Any:
    """Return the compose file as docker-compose resolves it (failing when it is invalid)."""
    out = subprocess.run(
        [tool("docker-compose"), "-f", "docker-compose.yml", "config"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def test_compose_file_is_valid_and_pins_every_image() -> None:
    config = compose_config()
    for name, service in config["services"].items():
        image = service.get("image", "")
        assert image and not image.endswith(":latest") and ":" in image, (name, image)
        assert "healthcheck" in service or name in {"migrate", "retention", "demo"}, name
    for mount in config["services"]["prometheus"]["volumes"]:
        if isinstance(mount, dict) and mount.get("type") == "bind":
            assert mount.get("read_only"), mount


def _compose_spec_check(*files: Path) -> subprocess.CompletedProcess[str]:
    """Validate against the Compose Specification's schema, which Compose v2 enforces."""
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         *map(str, files)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_compose_files_follow_the_compose_specification(tmp_path: Path) -> None:
    out = _compose_spec_check(ROOT / "docker-compose.yml", ROOT / "docker-compose.owners.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    config = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert "version" not in config, "obsolete in Compose v2"
    config["services"]["grafana"]["depends_on"]["tempo"]["condition"] = "service_up"
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(config))
    assert _compose_spec_check(broken).returncode != 0


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
    assert sources["tempo"]["jsonData"]["tracesToLogsV2"]["query"] == (
        '{$${__tags}} | trace_id = "$${__trace.traceId}"'
    )
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


def test_tempo_receives_otlp_and_keeps_traces_14_days_by_default() -> None:
    tempo = load("tempo/tempo.yml")
    protocols = tempo["distributor"]["receivers"]["otlp"]["protocols"]
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    retention = tempo["compactor"]["compaction"]["block_retention"]
    m = re.fullmatch(r"\$\{RUNLEDGER_TRACE_RETENTION:-(\d+)h\}", retention)
    assert m and int(m[1]) == 14 * 24, retention
    service = compose_config()["services"]["tempo"]
    assert "-config.expand-env=true" in service["command"], "the default needs env expansion"
    hours = re.fullmatch(r"(\d+)h", service["environment"]["RUNLEDGER_TRACE_RETENTION"])
    assert hours and 14 * 24 <= int(hours[1]) <= 30 * 24


def test_compose_runs_the_whole_stack_with_health_gated_start_up() -> None:
    services = compose_config()["services"]
    assert {"postgres", "migrate", "control", "proxy", "exporter", "prometheus", "alertmanager",
            "grafana", "loki", "tempo"} <= set(services)  # fmt: skip
    assert services["demo"]["profiles"] == ["demo"]
    one_shots = {"migrate", "retention", "demo"}
    for name, service in services.items():
        for dep, cond in service.get("depends_on", {}).items():
            wanted = ("service_completed_successfully" if dep == "migrate"
                      else "service_healthy")  # fmt: skip
            assert cond["condition"] == wanted, (name, dep, cond)
            assert dep in one_shots or "healthcheck" in services[dep], (name, dep)
        for mount in service.get("volumes", []):
            source, _target, mode = str(mount).rsplit(":", 2)
            if source.startswith("/"):  # a bind mount of a config folder
                assert mode == "ro", (name, mount)
    grafana = services["grafana"]
    targets = {str(v).rsplit(":", 2)[1] for v in grafana["volumes"]}
    assert {"/etc/grafana/provisioning", "/var/lib/grafana/dashboards"} <= targets
    for dep in ("postgres", "prometheus", "loki", "tempo"):
        assert grafana["depends_on"][dep]["condition"] == "service_healthy"
    demo = services["demo"]["environment"]
    assert demo["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] == "http://tempo:4318/v1/traces"
    assert demo["OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"] == "http://loki:3100/otlp/v1/logs"
    for dep in ("tempo", "loki"):
        assert services["demo"]["depends_on"][dep]["condition"] == "service_healthy"


def test_the_owners_override_adds_the_owners_organisation_only_with_a_token() -> None:
    files = ["-f", "docker-compose.yml", "-f", "docker-compose.owners.yml", "config"]
    env = {k: v for k, v in os.environ.items() if k != "RUNLEDGER_GRAFANA_OWNER_TOKEN"}
    refused = subprocess.run([tool("docker-compose"), *files], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert refused.returncode != 0
    assert "an owner token of the tenant" in refused.stderr
    out = subprocess.run(
        [tool("docker-compose"), *files], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**env, "RUNLEDGER_GRAFANA_OWNER_TOKEN": "owner-token"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    grafana = yaml.safe_load(out.stdout)["services"]["grafana"]
    mounts = {str(v).rsplit(":", 2)[1]: str(v) for v in grafana["volumes"]}
    for target in ("/etc/grafana/provisioning/datasources/owners.yml",
                   "/etc/grafana/provisioning/dashboards/owners.yml"):  # fmt: skip
        assert mounts[target].endswith(":ro")
        # Mounted over a placeholder that exists, inside the read-only provisioning mount.
        placeholder = ROOT / "grafana" / "provisioning" / target.split("provisioning/")[1]
        assert yaml.safe_load(placeholder.read_text()) in (
            {"apiVersion": 1, "datasources": []},
            {"apiVersion": 1, "providers": []},
        )
    assert mounts["/var/lib/grafana/owners-dashboards"].endswith(":ro")
    provider = load("grafana/owners/provisioning/dashboards/owners.yml")["providers"][0]
    assert provider["orgId"] == 2
    assert provider["options"]["path"] == "/var/lib/grafana/owners-dashboards"


def test_grafana_provisions_the_generated_dashboards() -> None:
    (provider,) = load("grafana/provisioning/dashboards/runledger.yml")["providers"]
    assert provider["orgId"] == 1
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    assert sorted(p.name for p in (ROOT / "grafana" / "dashboards").glob("*.json")) == [
        "admin-overview.json", "project-overview.json", "tenant-overview.json"]  # fmt: skip


def test_the_image_runs_as_a_non_root_user() -> None:
    lines = (ROOT / "exporter" / "Dockerfile").read_text().splitlines()
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert any("useradd" in line and users[-1] in line for line in lines)


def test_dockerfile_copies_only_what_exists() -> None:
    for line in (ROOT / "exporter" / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source


def test_the_control_service_is_reached_only_through_the_buffering_proxy() -> None:
    services = compose_config()["services"]
    proxy, control = services["proxy"], services["control"]
    assert re.fullmatch(r"nginx:\d+\.\d+\.\d+-alpine", proxy["image"])
    assert "ports" not in control, "the control service must not be published past the proxy"
    assert [str(p).removesuffix("/tcp") for p in proxy["ports"]] == ["127.0.0.1:8480:8480"]
    assert proxy["depends_on"]["control"]["condition"] == "service_healthy"
    (mount,) = proxy["volumes"]  # docker-compose 1.29 prints source:target:mode
    source, target, mode = mount.rsplit(":", 2)
    assert (source, mode) == (str(ROOT / "nginx"), "ro")
    assert proxy["command"][:3] == ["nginx", "-c", f"{target}/nginx.conf"]
    assert "/healthz" in " ".join(proxy["healthcheck"]["test"])
    demo = services["demo"]
    assert "http://proxy:8480" in demo["entrypoint"]
    assert demo["depends_on"]["proxy"]["condition"] == "service_healthy"


def _directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line.endswith(";"):
            name, _, value = line[:-1].partition(" ")
            found.setdefault(name, []).append(value.strip())
    return found


def test_the_proxy_reads_requests_whole_within_timeouts_and_the_service_limit() -> None:
    conf = _directives((ROOT / "nginx" / "nginx.conf").read_text())
    assert conf["proxy_request_buffering"] == ["on"]
    assert conf["proxy_pass"] == ["http://control"]
    assert conf["server"] == ["control:8480"]
    for timeout in ("client_header_timeout", "client_body_timeout", "send_timeout"):
        (value,) = conf[timeout]
        assert re.fullmatch(r"\d+s", value) and int(value[:-1]) <= 30, (timeout, value)
    (size,) = conf["client_max_body_size"]
    assert int(size.removesuffix("m")) * 1024 * 1024 == DEFAULTS["MAX_CONTENT_LENGTH"]
    assert conf["limit_conn"] == ["per_client 256"]
    # Idle upstream connections close on nginx's side before gunicorn's keep-alive (5 s).
    assert int(conf["keepalive_timeout"][-1].removesuffix("s")) < 5


def test_nginx_accepts_the_proxy_config(tmp_path: Path) -> None:
    conf = local_nginx_config(tmp_path, listen=18480, upstream=8480)
    out = subprocess.run(
        [tool("nginx"), "-t", "-c", str(conf), "-e", "stderr", "-g", f"pid {tmp_path}/nginx.pid;"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "test is successful" in out.stderr
