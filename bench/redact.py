"""Redactor throughput over a realistic mix of short event texts, against ``str.lower``.

The SDK redacts every free-text field (reasons, summaries, log bodies, attribute values) on
the caller's thread, and the control service will redact on ingest, so the redactor must be
cheap on the ordinary short texts that make up nearly all of them. The mix is 90% ordinary
texts (ids, hashes, prices, timestamps, model names, paths) and 10% texts holding a secret or
personal data, shuffled with a fixed seed.

The baseline is ``str.lower`` over the same texts in the same run: a single C-speed pass over
every character, the least any redaction can cost. Its ratio to the redactor does not depend
on the machine's speed the way a bare number of microseconds does. Rounds of the two
alternate so drift hits both alike.

Writes bench/results/redact.json: ``redact_us`` (microseconds per text of the mix),
``ordinary_us`` and ``sensitive_us`` (per text of each part), ``lower_us`` (medians of the
rounds' means) and ``ratio`` (redactor throughput / ``str.lower`` throughput; the median of
the rounds' ratios).
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

from runledger.redact import Redactor

ROUNDS = 15
TEXTS = 5000
SENSITIVE_SHARE = 0.1

ORDINARY = [
    "model timeout after 60s",
    "missing call to action",
    "geocode venue",
    "trace 4bf92f3577b34da6a3ce929d0e0e4736 span 00f067aa0ba902b7",
    "request 3f1c2a9e-7b4d-4c1e-9a0f-2b8d6e5c4a31 completed in 412 ms",
    "model call cost $0.0042 (gpt-4.1-mini-2025-04-14, 1534 tokens)",
    "started at 2025-04-14T09:30:12.345Z",
    "project proj-1 run run_8f3a phase build role implementer",
    "wrote site/index.html version 3 (12 480 bytes)",
    "retry 3 of 5 after 1.5 s (HTTP 429)",
    "daily cap $25.00 reached at 18:42 UTC; 12 runs stopped",
    "Build the landing page for release 2.10.0-rc1 by 2024-06-30 12:45:00 UTC.",
    "validation: hero image missing alt text on /pricing",
    "commit da39a3ee5e6b4b0d3255bfef95601890afd80709 deployed",
    "3 of 5 sections written; pricing and FAQ missing",
    "Meet in San Francisco at 10:30 to review phase build for project proj-17.",
]
SENSITIVE = [
    "login failed for jane.doe@example.com",
    "call the office on 020 7946 0958 tomorrow",
    "connect postgres://ledger:Wq7-pLm2xZ@db.internal:5432/runledger failed",
    "key sk-proj-Qw3rTy9UiOp4AsDfGhJkL1ZxCvBnM0qW rejected",
    "alert to https://hooks.slack.com/services/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",
    "Authorization: Basic c3ZjLWRlcGxveTpWcTgjbUxwMiFyVA==",
    "aws AKIAKTAI6P8PAT49CVJJ jiQNV+0C4L2oXrW8wSzJ88z2QCkmJI2TW6JH6tJ7",
    "pickup at 37.774929, -122.419416 now",
]


def _mix() -> list[str]:
    rng = random.Random(20261202)
    texts = [
        rng.choice(SENSITIVE) if rng.random() < SENSITIVE_SHARE else rng.choice(ORDINARY)
        for _ in range(TEXTS)
    ]
    # Distinct objects, as each event brings its own strings.
    return ["".join(list(t)) for t in texts]


def _seconds(fn: Callable[[str], object], texts: list[str]) -> float:
    start = time.perf_counter()
    for text in texts:
        fn(text)
    return time.perf_counter() - start


def main() -> int:
    redactor = Redactor()
    texts = _mix()
    ordinary = [t for t in texts if t in ORDINARY]
    sensitive = [t for t in texts if t not in ORDINARY]
    _seconds(redactor.text, texts)  # warm caches (city table, phone metadata)
    ratios: list[float] = []
    us: dict[str, list[float]] = {"redact": [], "lower": [], "ordinary": [], "sensitive": []}
    for _ in range(ROUNDS):
        low = _seconds(str.lower, texts)
        red = _seconds(redactor.text, texts)
        ratios.append(low / red)
        us["lower"].append(low * 1e6 / len(texts))
        us["redact"].append(red * 1e6 / len(texts))
        us["ordinary"].append(_seconds(redactor.text, ordinary) * 1e6 / len(ordinary))
        us["sensitive"].append(_seconds(redactor.text, sensitive) * 1e6 / len(sensitive))
    figures: dict[str, float] = {
        f"{name}_us": round(statistics.median(values), 4) for name, values in us.items()
    }
    figures.update(
        texts=len(texts),
        sensitive_share=SENSITIVE_SHARE,
        ratio=round(statistics.median(ratios), 5),
    )
    print(
        f"redactor {figures['redact_us']} us/text (ordinary {figures['ordinary_us']}, "
        f"sensitive {figures['sensitive_us']}); str.lower {figures['lower_us']} us/text; "
        f"ratio {figures['ratio']}"
    )
    print(f"wrote {write_result('redact', figures)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
