"""The Grafana dashboards as code: Admin, Tenant and Project Overviews (docs/grafana.md).

``runledger dashboards build`` writes them as JSON into ``grafana/dashboards/`` (the admins'
organisation) and ``grafana/owners/dashboards/`` (an owners' organisation).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders.dashboard import Dashboard
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from runledger.dashboards._common import CONSOLE_ROUTES, DEFAULT_CONSOLE_URL
from runledger.dashboards.admin import admin_overview
from runledger.dashboards.project import project_overview
from runledger.dashboards.tenant import tenant_overview

__all__ = [
    "CONSOLE_ROUTES",
    "DASHBOARDS",
    "DEFAULT_CONSOLE_URL",
    "build",
    "render",
    "write",
]

DASHBOARDS: dict[str, Callable[[], Dashboard]] = {
    "dashboards/admin-overview.json": admin_overview,
    "dashboards/tenant-overview.json": tenant_overview,
    "dashboards/project-overview.json": project_overview,
    "owners/dashboards/tenant-overview.json": lambda: tenant_overview(owners=True),
}
"""Each dashboard by its file under ``grafana/``."""


def build(console_url: str = DEFAULT_CONSOLE_URL) -> dict[str, dict[str, Any]]:
    """Return every dashboard as Grafana JSON, by its file under ``grafana/``.

    Args:
        console_url: the console's base URL as browsers reach it, the value of each
            dashboard's hidden ``console`` variable.
    """
    out: dict[str, dict[str, Any]] = {}
    for name, make in DASHBOARDS.items():
        model: dict[str, Any] = json.loads(json.dumps(make().build(), cls=JSONEncoder))
        for variable in model["templating"]["list"]:
            if variable["name"] == "console":
                variable["query"] = console_url.rstrip("/")
        out[name] = model
    return out


def render(model: dict[str, Any]) -> str:
    """Serialise one dashboard the way it is committed (stable key order, final newline)."""
    return json.dumps(model, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write(grafana_dir: Path, console_url: str = DEFAULT_CONSOLE_URL) -> list[Path]:
    """Write every dashboard under ``grafana_dir``; return the files written."""
    written = []
    for name, model in build(console_url).items():
        path = grafana_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(model))
        written.append(path)
    return written
