"""One timestamp format in every answer of the API: RFC 3339 in UTC with milliseconds and a Z
(docs/api.md), whether the time was stored (a row's datetime) or computed (a URL's expiry)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from daemon.api import iso
from tests.harness import running_daemon
from tests.mail import with_attachment

RFC3339_MS_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
TIME_FIELDS = {"created_at", "ready_at", "received_at", "processed_at", "expires_at"}


def test_iso_writes_datetimes_and_posix_seconds_alike() -> None:
    when = datetime(2026, 12, 2, 17, 0, 0, 123456, tzinfo=UTC)
    assert iso(when) == "2026-12-02T17:00:00.123Z"
    assert iso(when.replace(tzinfo=None)) == "2026-12-02T17:00:00.123Z"  # stored naive: UTC
    assert iso(when.astimezone(timezone(timedelta(hours=-5)))) == "2026-12-02T17:00:00.123Z"
    assert iso(when.timestamp()) == "2026-12-02T17:00:00.123Z"
    assert iso(float(int(when.timestamp()))) == "2026-12-02T17:00:00.000Z"
    assert iso(None) is None


def _timestamps(value: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """(where, value) of every time field in a JSON answer, however deep."""
    if isinstance(value, dict):
        for name, inner in value.items():
            if name in TIME_FIELDS and inner is not None:
                yield f"{where}.{name}", inner
            else:
                yield from _timestamps(inner, f"{where}.{name}")
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            yield from _timestamps(inner, f"{where}[{i}]")


def test_every_timestamp_the_api_returns_has_one_format(fresh_root: Path) -> None:
    with running_daemon(fresh_root) as d:
        ann = d.add_agent("ann", "ann@agents.test")
        msg_id = d.send(with_attachment("ann@agents.test", b"%PDF-1.4\n" + b"x" * 3000),
                        ["ann@agents.test"])
        d.wait_message(ann["api_key"], msg_id)
        with d.api(ann["api_key"]) as api:
            upload = api.post("/v1/uploads", files={"file": ("a.txt", b"a", "text/plain")})
            answers = [
                api.get("/v1/messages"),
                api.get(f"/v1/messages/{msg_id}"),
                api.get(f"/v1/messages/{msg_id}/attachments/0"),
                api.post(f"/v1/messages/{msg_id}/attachments/0/download"),
                api.post(f"/v1/messages/{msg_id}/raw/download"),
                upload,
                api.post("/v1/uploads/form", json={"file_name": "b.pdf",
                                                  "content_type": "application/pdf"}),
                api.post("/v1/uploads/url", json={"file_name": "c.csv",
                                                 "content_type": "text/csv", "size": 3}),
                api.post("/v1/uploads/download", json={"object_key": upload.json()["object_key"]}),
                api.get(f"/v1/attachments/{upload.json()['id']}"),
                api.get("/v1/events"),
            ]
    seen: dict[str, str] = {}
    for r in answers:
        assert r.status_code in (200, 201), (r.request.url, r.text)
        for where, value in _timestamps(r.json()):
            seen[f"{r.request.method} {r.request.url.path}{where}"] = value
    assert {where.rsplit(".", 1)[1] for where in seen} == TIME_FIELDS
    assert any(".events[" in where for where in seen)
    wrong = {where: value for where, value in seen.items()
             if not RFC3339_MS_UTC.fullmatch(value)}
    assert not wrong
