"""The agent's side of postroom's HTTP API (SPEC §6 Client), with the seed documents' names.

    from daemon.client.http import Client, PostroomError

    client = Client("http://127.0.0.1:8025", api_key)
    form = client.request_attachment_upload("report.pdf", "application/pdf", 10_000_000)
    fields = {k: v for k, v in form["upload"].items() if k != "url"}
    requests.post(form["upload"]["url"], data=fields, files={"file": open("report.pdf", "rb")})
    link = client.request_attachment_download(form["object_key"])

Every refusal raises `PostroomError` with the HTTP `.status` and the API's error `.code`.
Synchronous (httpx); one connection pool per client, closed by `close()` or `with`.
tests/client/test_client.py runs the seed examples through it on the local store and on S3.
"""

from __future__ import annotations

import hashlib
import mimetypes
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from daemon.openpgp import Decryptor, OpenPgpError


class PostroomError(Exception):
    """The API said no: `.status` is the HTTP status, `.code` the error code of its body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


def _key_source(value: Any) -> str | bytes | Path:
    """What `decrypt_with` names: armored key text, or a path (a key file or a GnuPG home)."""
    if isinstance(value, Path | bytes):
        return value
    text = str(value)
    if "-----BEGIN PGP" in text:
        return text
    return Path(text)


class Client:
    """One agent's handle on a postroom daemon."""

    def __init__(self, base_url: str, api_key: str, timeout: float = 60.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout,
                                  headers={"Authorization": f"Bearer {api_key}"},
                                  transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise PostroomError(0, "unreachable", str(e)) from e
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                code, message = str(error["code"]), str(error["message"])
            except (ValueError, KeyError, TypeError):
                code, message = "http_error", response.text[:200]
            raise PostroomError(response.status_code, code, message)
        return response.json() if response.content else None

    # Uploads (the claim-check flows).

    def request_attachment_upload(self, file_name: str, content_type: str,
                                  max_bytes: int) -> dict[str, Any]:
        """A presigned POST form: `{"object_key", "upload": {"url", …its fields}, "expires_at"}`."""
        return dict(self._call("POST", "/v1/uploads/form", json={
            "file_name": file_name, "content_type": content_type, "max_bytes": max_bytes}))

    def request_upload_url(self, file_name: str, content_type: str,
                           size: int) -> dict[str, Any]:
        """A presigned PUT: `{"upload_url", "object_key", "id", "expires_at"}`."""
        return dict(self._call("POST", "/v1/uploads/url", json={
            "file_name": file_name, "content_type": content_type, "size": size}))

    def upload_file(self, path: str | Path, content_type: str | None = None) -> dict[str, Any]:
        """Upload through the daemon; returns the attachment object (`id`, `url`, …)."""
        path = Path(path)
        kind = content_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        with path.open("rb") as f:
            return dict(self._call("POST", "/v1/uploads",
                                   files={"file": (path.name, f, kind)}))

    def request_attachment_download(self, object_key: str) -> dict[str, Any]:
        """A URL for one of this agent's uploads: `{"url", "expires_at"}`."""
        return dict(self._call("POST", "/v1/uploads/download", json={"object_key": object_key}))

    def get_attachment(self, attachment_id: str) -> dict[str, Any]:
        """Any attachment this agent may see (inbound or uploaded), with a fresh `url`."""
        return dict(self._call("GET", f"/v1/attachments/{attachment_id}"))

    # Inbound mail.

    def list_messages(self, after: str | None = None, limit: int = 50) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            params["after"] = after
        return dict(self._call("GET", "/v1/messages", params=params))

    def get_message(self, message_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/messages/{message_id}"))

    def get_inbound_attachment_status(self, message_id: str, index: int,
                                      wait: float | None = None) -> dict[str, Any]:
        """The attachment status object; `wait` (≤ 30 s) holds until it is terminal."""
        params = {"wait": wait} if wait else {}
        return dict(self._call("GET", f"/v1/messages/{message_id}/attachments/{index}",
                               params=params))

    def request_inbound_attachment_download(self, message_id: str, index: int,
                                            expires_in: int | None = None) -> dict[str, Any]:
        """`{"url", "expires_at", "file_name", "content_type", "size", "sha256"}`."""
        body = {"expires_in": expires_in} if expires_in is not None else None
        return dict(self._call("POST", f"/v1/messages/{message_id}/attachments/{index}/download",
                               json=body))

    def events(self, after: str | None = None, wait: float | None = None,
               limit: int | None = None) -> dict[str, Any]:
        """`{"events", "next_cursor", "has_more"}`; pass `next_cursor` back as `after`."""
        params: dict[str, Any] = {}
        if after is not None:
            params["after"] = after
        if wait:
            params["wait"] = wait
        if limit is not None:
            params["limit"] = limit
        return dict(self._call("GET", "/v1/events", params=params))

    def download(self, url: str) -> bytes:
        """The bytes behind a presigned URL (no API key is sent: the URL is the credential)."""
        try:
            response = httpx.get(url, timeout=self._http.timeout)
        except httpx.HTTPError as e:
            raise PostroomError(0, "unreachable", str(e)) from e
        if response.status_code != 200:
            raise PostroomError(response.status_code, "download_failed", response.text[:200])
        return response.content

    def fetch_message(self, message_id: str, decrypt_with: Any = None,
                      passphrase: str | None = None) -> dict[str, Any]:
        """The message with every `ready` attachment's bytes under `content`.

        `decrypt_with` (an armored OpenPGP private key, a file holding one, or a GnuPG home
        directory) decrypts what was encrypted at rest (SPEC §8): `text` and `html`, and each
        attachment whose status says `encrypted` with postroom's own at-rest format. Each
        decrypted attachment is checked against its `sha256`; its `file_name` loses the
        `.asc` postroom added. Without a key, encrypted content stays as stored (armored).
        Attachments that arrived encrypted (PGP/MIME payloads) are decrypted too when the key
        opens them, else left as they are with `decrypted: false`.
        """
        message = self.get_message(message_id)
        decryptor = Decryptor(_key_source(decrypt_with), passphrase) if decrypt_with else None
        try:
            sealed = message.get("encryption") is not None
            if decryptor is not None and sealed:
                for kind in ("text", "html"):
                    if message.get(kind):
                        message[kind] = decryptor.decrypt_bytes(
                            str(message[kind]).encode("ascii")).decode("utf-8", "replace")
            for att in message.get("attachments", []):
                if att.get("status") != "ready":
                    continue
                link = self.request_inbound_attachment_download(message_id, int(att["index"]))
                content = self.download(link["url"])
                if decryptor is not None and att.get("stored_sha256"):
                    content = decryptor.decrypt_bytes(content)
                    if hashlib.sha256(content).hexdigest() != att["sha256"]:
                        raise PostroomError(0, "integrity", f"attachment {att['index']}: "
                                            "decrypted bytes do not match its sha256")
                    if str(att["file_name"]).endswith(".asc"):
                        att["file_name"] = str(att["file_name"])[:-4]
                    att["decrypted"] = True
                elif decryptor is not None and att.get("encrypted"):
                    try:
                        content = decryptor.decrypt_bytes(content)
                        att["decrypted"] = True
                    except OpenPgpError:
                        att["decrypted"] = False
                att["content"] = content
        except OpenPgpError as e:
            raise PostroomError(0, "decryption_failed", str(e)) from e
        finally:
            if decryptor is not None:
                decryptor.close()
        return message
