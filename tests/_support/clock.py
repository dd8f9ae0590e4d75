"""Helpers for the cost tests: a settable UTC clock."""

from __future__ import annotations

from datetime import datetime, timedelta


class Clock:
    """A settable UTC clock for the cap store and the control app."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)
