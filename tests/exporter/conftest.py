"""Fixtures for the exporter tests (helpers live in _exporter_support)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _exporter_support import create_database


@pytest.fixture(scope="module")
def module_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("exporter")


@pytest.fixture(scope="module")
def module_db_url(pg_server: Any, template_url: str) -> Iterator[str]:
    """A fresh migrated database shared by the tests of one module."""
    url, drop = create_database(pg_server)
    yield url
    drop()
