"""What a daemon loads only when it is asked for: the MCP SDK (≈ 23 MiB, at the first `/mcp`
request: tests/mcp drives that) and aiohttp (≈ 7 MiB, at the first webhook POST:
tests/webhooks). A daemon nobody asks for either never imports them."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = ("import sys, daemon.cli, daemon.server, daemon.api, daemon.webhooks; "
         "print(sorted({{m.split('.')[0] for m in sys.modules}} & {{{names}}}))")


@pytest.mark.parametrize("names", [("mcp", "mcp_types", "sse_starlette", "httpx2"),
                                   ("aiohttp", "yarl")])
def test_the_daemon_imports_these_only_when_asked(names: tuple[str, ...]) -> None:
    probe = PROBE.format(names=", ".join(repr(n) for n in names))
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
