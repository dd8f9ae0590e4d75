"""The README's one-call agent, as a new user runs it: settings from the environment only.

Usage: python one_call_agent.py; prints ``exiting <time.time()>`` just before it returns, so
the test can measure how long the interpreter takes to exit after the agent's work.
"""

from __future__ import annotations

import time

from runledger.sdk import Ledger

ledger = Ledger()
with ledger.run("acme", "proj-1", phase="build", role="implementer") as run:
    with run.model_call(model="gpt-4.1", provider="openai") as call:
        call.record(tokens_in=1200, tokens_out=300)
print(f"exiting {time.time()}", flush=True)
