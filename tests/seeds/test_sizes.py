"""The seeds' size rules (10 MB an attachment, the declared size exact), on the local store and
on S3: seed 001's upload-url over the cap is 413, a PUT of more bytes than declared is refused,
seed 002's upload over the cap is 413.

moto checks no signatures, so on S3 the refusal of a longer PUT is S3's SigV4 check computed
here: the URL's signature is the one over the declared Content-Length, and not over any other.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from urllib.parse import parse_qsl, quote, urlsplit

import httpx
import pytest

from tests.s3server import S3_ENV
from tests.seeds.checks import Agent, Site, pdf

pytestmark = pytest.mark.e2e

CAP = 10 * 1024**2  # uploads.max_bytes by default: the seeds' 10 MB


def _agentpost(site: Site, agent: Agent) -> httpx.Client:
    return httpx.Client(base_url=site.daemon.url, timeout=60,
                        headers={"Authorization": f"Bearer {agent.key}"})


def _upload_url(site: Site, agent: Agent, size: int) -> httpx.Response:
    with _agentpost(site, agent) as api:
        return api.post("/api/v1/attachments/upload-url", json={
            "filename": "quarterly-report.pdf", "mime_type": "application/pdf", "size": size})


def test_an_upload_url_over_10_mb_is_refused_413(site: Site, sender: Agent) -> None:
    assert _upload_url(site, sender, CAP + 1).status_code == 413
    assert _upload_url(site, sender, CAP).status_code == 200


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sigv4_query_signature(method: str, url: str, headers: dict[str, str], secret: str) -> str:
    """The signature S3 computes for a presigned (query-signed) request with these headers."""
    parts = urlsplit(url)
    params = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
              if k != "X-Amz-Signature"]
    query = dict(params)
    signed = query["X-Amz-SignedHeaders"].split(";")
    canonical = "\n".join([
        method, parts.path,
        "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params)),
        "".join(f"{h}:{headers[h].strip()}\n" for h in signed), ";".join(signed),
        "UNSIGNED-PAYLOAD"])
    scope = query["X-Amz-Credential"].split("/", 1)[1]
    to_sign = "\n".join(["AWS4-HMAC-SHA256", query["X-Amz-Date"], scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for piece in scope.split("/"):
        key = _hmac(key, piece)
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def test_a_put_of_more_bytes_than_declared_is_refused(site: Site, sender: Agent) -> None:
    data = pdf(100_000)
    issued = _upload_url(site, sender, len(data))
    assert issued.status_code == 200, issued.text
    url = issued.json()["upload_url"]
    if site.backend == "local":
        longer = httpx.put(url, content=data + b"!", timeout=30,
                           headers={"Content-Type": "application/pdf"})
        assert longer.status_code == 400, longer.text
        with site.daemon.api(sender.key) as api:
            still = api.get(f"/v1/attachments/{issued.json()['id']}").json()
        assert still["status"] == "pending"
        return
    query = dict(parse_qsl(urlsplit(url).query))
    assert "content-length" in query["X-Amz-SignedHeaders"].split(";")
    secret = S3_ENV["AWS_SECRET_ACCESS_KEY"]

    def signature(length: int) -> str:
        return sigv4_query_signature("PUT", url, {
            "host": urlsplit(url).netloc, "content-type": "application/pdf",
            "content-length": str(length)}, secret)

    assert signature(len(data)) == query["X-Amz-Signature"]
    assert signature(len(data) + 1) != query["X-Amz-Signature"]


def test_an_agentsend_upload_over_10_mb_is_refused_413(site: Site, sender: Agent) -> None:
    big = os.urandom(CAP + 1)
    with httpx.Client(base_url=site.daemon.url, headers={"x-api-key": sender.key},
                      timeout=60) as api:
        over = api.post("/attachments", files={"file": ("big.bin", big)})
        assert over.status_code == 413, over.text
        at_cap = api.post("/attachments", files={"file": ("big.bin", big[:CAP])})
        assert at_cap.status_code == 201, at_cap.text
