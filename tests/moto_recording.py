"""`python -m tests.moto_recording ARGS`: moto's server with its request recorder made safe for
concurrent requests (moto writes each entry in pieces, so parallel PUTs interleave in the file),
and, with MOTO_REPLAY_FIRST=1, the recording replayed in-process before the port is bound.

The fault tests kill this server with SIGKILL and start another on the same port that first
replays what the dead one recorded, so no client ever sees a bucket emptier than the one it
wrote to: what a real S3 would have kept.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import moto.server
from moto.moto_api import recorder
from moto.moto_api._internal.recorder.models import Recorder
from werkzeug.test import Client

_lock = threading.Lock()
_record = Recorder._record_request


def _record_whole(self: Recorder, *args: Any, **kwargs: Any) -> None:
    with _lock:
        _record(self, *args, **kwargs)


def _replay(app: Any, recording: Path) -> None:
    """Every whole entry of `recording` sent to `app` in order (a last entry cut short by the
    writer's death is dropped: its request was never answered)."""
    client = Client(app)
    for line in recording.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        body = entry.get("body") or b""
        if entry.get("body_encoded"):
            body = base64.b64decode(body)
        url = urlsplit(entry["url"])
        headers = {k: v for k, v in entry["headers"].items()
                   if k.lower() not in ("transfer-encoding", "content-length")}
        client.open(url.path, method=entry["method"], query_string=url.query,
                    headers=headers, data=body)


_serve = moto.server.run_simple


def _run_simple(host: str, port: int, app: Any, **kwargs: Any) -> None:
    if os.environ.get("MOTO_REPLAY_FIRST") == "1":
        recorder.stop_recording()
        _replay(app, Path(os.environ["MOTO_RECORDER_FILEPATH"]))
        recorder.start_recording()
    _serve(host, port, app, **kwargs)


Recorder._record_request = _record_whole  # type: ignore[method-assign]
moto.server.run_simple = _run_simple  # type: ignore[assignment]

if __name__ == "__main__":
    moto.server.main()
