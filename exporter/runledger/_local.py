"""Local process helpers: a free loopback port, and stopping a child process by its PID."""

from __future__ import annotations

import socket
import subprocess
from typing import Any

__all__ = ["free_port", "stop_process"]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """Ask ``proc`` to stop (SIGTERM); kill it if it is still running after ``grace`` s."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
