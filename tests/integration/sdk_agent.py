"""A small agent for the fault tests: runs until killed (``work``) or drains its spool (``drain``).

Usage: python sdk_agent.py work|drain URL TOKEN SPOOL
Prints one line per recorded fact, flushed, so the test knows what was spooled:
``event <id>`` after an event was spooled, ``call`` after a model call was recorded.
"""

from __future__ import annotations

import sys

from runledger.sdk import DeliveryOptions, Ledger


def main() -> int:
    mode, url, token, spool = sys.argv[1:5]
    ledger = Ledger(
        url,
        token,
        delivery=DeliveryOptions(spool_path=spool),
        environ={"OTEL_SDK_DISABLED": "true"},
    )
    if mode == "drain":
        ok = ledger.flush(60)
        print(f"drained {ok} pending={ledger.pending()}", flush=True)
        ledger.close(timeout=5)
        return 0 if ok else 1
    i = 0
    while True:
        i += 1
        with ledger.run("acme", f"proj-{i % 3}", "build", "implementer") as run:
            for version in range(1, 4):
                with run.model_call("gpt-4.1", cost_usd="0.001") as call:
                    call.record(tokens_in=10, tokens_out=2)
                print("call", flush=True)
                print("event", run.artifact_written(f"out-{i}.md", version), flush=True)


if __name__ == "__main__":
    sys.exit(main())
