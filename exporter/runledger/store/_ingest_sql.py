"""Advisory locks shared by ingest and retention.

The ingest transaction itself is the SQL function ``ingest_batch(json)`` created by the
migrations: one round trip stages a batch, checks ownership, de-duplicates, inserts the
events and applies every effect set-wise.
"""

from __future__ import annotations

# Held by writers to commit, so events.seq order is commit order ("runlings").
INGEST_LOCK = 0x72756E6C_696E6773
# Serialises partition DDL ("runlpart"); always taken before INGEST_LOCK.
PARTITION_LOCK = 0x72756E6C_70617274
