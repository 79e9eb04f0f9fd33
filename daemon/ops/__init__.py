"""Running postroom: metrics, logs, systemd's notify protocol, retention and garbage collection."""

from daemon.ops.logs import configure_logging
from daemon.ops.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from daemon.ops.metrics import Errors, Metrics, Sources
from daemon.ops.retention import GcReport, RepairError, collect, reprocess, run_periodically
from daemon.ops.systemd import SystemdNotifier

__all__ = [
    "METRICS_CONTENT_TYPE",
    "Errors",
    "GcReport",
    "Metrics",
    "RepairError",
    "Sources",
    "SystemdNotifier",
    "collect",
    "configure_logging",
    "reprocess",
    "run_periodically",
]
