"""Run every benchmark in bench/ (files not starting with "_") and summarise the results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    failed = []
    for script in sorted(HERE.glob("*.py")):
        if script.name.startswith("_") or script.name == "run_all.py":
            continue
        print(f"== {script.stem}", flush=True)
        if subprocess.run([sys.executable, str(script)], check=False).returncode != 0:
            failed.append(script.stem)
    print("\n== summary")
    for result in sorted((HERE / "results").glob("*.json")):
        figures = json.loads(result.read_text())
        shown = {k: v for k, v in figures.items() if k not in ("machine", "measured_at")}
        print(f"{result.stem}: {json.dumps(shown, sort_keys=True)}")
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
