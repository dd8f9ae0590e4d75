"""The Prometheus exporter: events tailed into counters, ledger gauges computed per refresh."""

from runledger.exporter._collector import LedgerCollector, LedgerSnapshot, projected_spend
from runledger.exporter._config import ExporterConfig, load_config
from runledger.exporter._service import Exporter
from runledger.exporter._stack import native_prometheus_config
from runledger.exporter._tailer import EventTailer

__all__ = [
    "EventTailer",
    "Exporter",
    "ExporterConfig",
    "LedgerCollector",
    "LedgerSnapshot",
    "load_config",
    "native_prometheus_config",
    "projected_spend",
]
