"""The values a configuration is written in: sizes, durations, listen addresses."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, Field

_SIZE_UNITS = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3,
    "k": 1024, "m": 1024**2, "g": 1024**3,
}
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class ConfigError(Exception):
    """The configuration is invalid; the message names the key."""


def parse_size(value: object) -> int:
    """Turn `"10MB"`, `"50MiB"` or an integer into a byte count."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 10MB, 50MiB or an integer")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", value)
        if m and m.group(2).lower() in _SIZE_UNITS:
            return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
    raise ValueError(f"{value!r} is not a size such as 10MB, 50MiB or an integer")


def parse_duration(value: object) -> float:
    """Turn `"15m"`, `"30s"`, `"250ms"` or a number of seconds into seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s or 15m")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", value)
        if m and m.group(2) in _DURATION_UNITS:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    raise ValueError(f"{value!r} is not a duration such as 30s or 15m")


Size = Annotated[int, BeforeValidator(parse_size)]
Duration = Annotated[float, BeforeValidator(parse_duration)]
PositiveSize = Annotated[int, BeforeValidator(parse_size), Field(gt=0)]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]


def parse_listen(value: str) -> tuple[str, int]:
    """Split `host:port` or `[v6]:port` into its parts."""
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([^:\[\]]+):(\d+)", value.strip())
    if not m:
        raise ValueError(f"{value!r} is not host:port or [ipv6]:port")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range")
    return host, port


def _listen_list(value: object) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ValueError("expected host:port or a list of them")
    for item in items:
        if not isinstance(item, str):
            raise ValueError("expected host:port strings")
        parse_listen(item)
    return items
