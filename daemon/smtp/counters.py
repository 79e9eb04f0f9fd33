"""The live numbers every SMTP connection shares; connection limits, drain and metrics read them.

Plain fields, changed only on the event loop by the connections and the handler; nothing here
decides, waits or logs.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SmtpCounters:
    """Live numbers shared by every connection (for limits, drain and metrics)."""

    open_connections: int = 0
    connections_total: int = 0
    transactions: dict[str, int] = field(default_factory=dict)  # by reply code
    bytes_received: int = 0
    draining: bool = False
    in_data: int = 0  # transactions between 354 and the reply that ends them
