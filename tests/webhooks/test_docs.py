"""docs/webhooks.md's receivers, as the page shows them: the `standardwebhooks` one runs as a
process (its port changed) and prints what a real daemon pushes to it; the standard-library
check verifies a real POST."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.harness import running_daemon, wait_until
from tests.webhooks.receiver import Receiver
from tests.webhooks.test_webhooks import FAST, _agent, _mail

PAGE = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_the_pages_receivers_verify_what_postroom_pushes(fresh_root: Path) -> None:
    receiver_code, check_code = _python_blocks()
    port = _free_port()
    assert '("127.0.0.1", 8000)' in receiver_code
    fresh_root.mkdir(parents=True, exist_ok=True)
    script = fresh_root / "receiver.py"
    script.write_text(receiver_code.replace('("127.0.0.1", 8000)', f'("127.0.0.1", {port})'))
    with running_daemon(fresh_root, extra=FAST) as d:
        a, alice = _agent(d, "alice")
        with a:
            made = a.post("/v1/webhooks", json={"url": f"http://127.0.0.1:{port}/hook",
                                                "event_types": ["message.received"]}).json()
            proc = subprocess.Popen(
                [sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                env={**os.environ, "POSTROOM_WEBHOOK_SECRET": made["secret"]})
            try:
                wait_until(lambda: _listening(port), what="the page's receiver")
                message_id = d.send(_mail(alice), [alice])
                rows = wait_until(lambda: [r for r in a.get(
                    f"/v1/webhooks/{made['id']}/deliveries").json()["deliveries"]
                    if r["status"] == "delivered"], what="a delivered attempt")
                assert rows[0]["status_code"] == 204
            finally:
                proc.terminate()
                out, _ = proc.communicate(timeout=10)
            assert out.split() == ["message.received", message_id]

            # The standard-library check, on a POST as it arrived.
            rx = Receiver()
            try:
                a.patch(f"/v1/webhooks/{made['id']}", json={"url": rx.url})
                d.send(_mail(alice, "another"), [alice])  # (the same bytes again: deduped)
                arrival = wait_until(lambda: rx.arrivals and rx.arrivals[0], what="a POST")
            finally:
                rx.stop()
            names: dict[str, Any] = {}
            exec(check_code, names)  # the page's own code
            assert names["verified"](made["secret"], arrival.headers, arrival.raw)
            assert not names["verified"](made["secret"], arrival.headers, arrival.raw + b" ")
