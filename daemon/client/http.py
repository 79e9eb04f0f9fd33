"""The agent's side of postroom's HTTP API (SPEC §6 Client), with the seed documents' names.

    from daemon.client import Client, OutboundAttachment, PostroomError

    client = Client("http://127.0.0.1:8025", api_key)
    form = client.request_attachment_upload("report.pdf", "application/pdf", 10_000_000)
    fields = {k: v for k, v in form["upload"].items() if k != "url"}
    requests.post(form["upload"]["url"], data=fields, files={"file": open("report.pdf", "rb")})
    client.send_mail("bob@agents.example", "the report", "attached",
                     attachments=[OutboundAttachment("report.pdf")], encrypt_attachments=True)
    upload = client.attachments.get_upload_url("notes.txt", "text/plain", 5)  # seed 001

Seed 000's methods answer dicts, seed 001's namespaces answer records with attributes. Every
refusal raises `PostroomError` (`AgentMailError`) with the HTTP `.status` and the API's `.code`.
Synchronous (httpx); one connection pool per client, closed by `close()` or `with`.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from daemon.client.api import Api, segment
from daemon.client.errors import AgentMailError, PostroomError
from daemon.client.incoming import fetch_message
from daemon.client.outgoing import Addresses, Attachment, send_mail
from daemon.client.resources import Attachments, Inboxes, Messages

# The names tests and older code import from here.
__all__ = ["AgentMailError", "Client", "PostroomError"]


class Client:
    """One agent's handle on a postroom daemon."""

    def __init__(self, base_url: str, api_key: str, timeout: float = 60.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._api = Api(base_url, api_key, timeout, transport)
        self.attachments = Attachments(self._api)
        self.messages = Messages(self._api)
        self.inboxes = Inboxes(self._api)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._api.close()

    # Uploads (the claim-check flows).

    def request_attachment_upload(self, file_name: str, content_type: str,
                                  max_bytes: int) -> dict[str, Any]:
        """A presigned POST form: `{"object_key", "upload": {"url", …its fields}, "expires_at"}`."""
        return self._api.object("POST", "/v1/uploads/form", json={
            "file_name": file_name, "content_type": content_type, "max_bytes": max_bytes})

    def request_upload_url(self, file_name: str, content_type: str,
                           size: int) -> dict[str, Any]:
        """A presigned PUT: `{"upload_url", "object_key", "id", "expires_at"}`."""
        return self._api.object("POST", "/v1/uploads/url", json={
            "file_name": file_name, "content_type": content_type, "size": size})

    def upload_file(self, path: str | Path, content_type: str | None = None) -> dict[str, Any]:
        """Upload through the daemon; returns the attachment object (`id`, `url`, …)."""
        path = Path(path)
        kind = content_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return self._api.upload(path, path.name, kind)

    def request_attachment_download(self, object_key: str) -> dict[str, Any]:
        """A URL for one of this agent's uploads: `{"url", "expires_at"}`."""
        return self._api.object("POST", "/v1/uploads/download", json={"object_key": object_key})

    def get_attachment(self, attachment_id: str) -> dict[str, Any]:
        """Any attachment this agent may see (inbound or uploaded), with a fresh `url`."""
        return self._api.object("GET", f"/v1/attachments/{segment(attachment_id)}")

    # Inbound mail.

    def list_messages(self, after: str | None = None, limit: int = 50,
                      q: str | None = None) -> dict[str, Any]:
        """`{"messages", "next_cursor", "has_more"}`, oldest first; pass `next_cursor` back.
        With `q`, the messages matching it, best first (docs/content.md#search)."""
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            params["after"] = after
        if q is not None:
            params["q"] = q
        return self._api.object("GET", "/v1/messages", params=params)

    def list_threads(self, after: str | None = None, limit: int = 50) -> dict[str, Any]:
        """`{"threads", "next_cursor", "has_more"}`, the latest activity first."""
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            params["after"] = after
        return self._api.object("GET", "/v1/threads", params=params)

    def get_thread(self, thread_id: str, after: str | None = None,
                   limit: int = 50) -> dict[str, Any]:
        """`{"thread_id", "messages", "next_cursor", "has_more"}`: the agent's messages of the
        thread, oldest first, each with `extracted_text`."""
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            params["after"] = after
        return self._api.object("GET", f"/v1/threads/{segment(thread_id)}", params=params)

    def get_attachment_text(self, message_id: str, index: int,
                            wait: float | None = None) -> str:
        """The attachment's text when its `text_status` is ready (PostroomError 409 `no_text`
        or `not_ready` otherwise); armored OpenPGP for mail encrypted at rest."""
        params = {"wait": wait} if wait else {}
        return self._api.text(
            "GET", f"/v1/messages/{segment(message_id)}/attachments/{int(index)}/text",
            params=params).text

    def get_message(self, message_id: str) -> dict[str, Any]:
        return self._api.object("GET", f"/v1/messages/{segment(message_id)}")

    def get_inbound_attachment_status(self, message_id: str, index: int,
                                      wait: float | None = None) -> dict[str, Any]:
        """The attachment status object; `wait` (≤ 30 s) holds until it is terminal."""
        params = {"wait": wait} if wait else {}
        return self._api.object(
            "GET", f"/v1/messages/{segment(message_id)}/attachments/{int(index)}",
            params=params)

    def request_inbound_attachment_download(self, message_id: str, index: int,
                                            expires_in: int | None = None) -> dict[str, Any]:
        """`{"url", "expires_at", "file_name", "content_type", "size", "sha256"}`."""
        body = {"expires_in": expires_in} if expires_in is not None else None
        return self._api.object(
            "POST", f"/v1/messages/{segment(message_id)}/attachments/{int(index)}/download",
            json=body)

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
        return self._api.object("GET", "/v1/events", params=params)

    def download(self, url: str) -> bytes:
        """The bytes behind a presigned URL (no API key is sent: the URL is the credential)."""
        return self._api.download(url)

    def fetch_message(self, message_id: str, decrypt_with: Any = None,
                      passphrase: str | None = None) -> dict[str, Any]:
        """The message with every `ready` attachment's bytes under `content`.

        `decrypt_with` (an armored OpenPGP private key, a file holding one, or a GnuPG home
        directory) opens, in turn:
        - what postroom encrypted at rest (SPEC §8): `text`, `html`, and each attachment
          with a `stored_sha256`, checked against its `sha256`; a key that does not open
          them raises `decryption_failed`;
        - what the sender encrypted (SPEC §12, seed 000's `send_mail(encrypt_…=True)`): each
          armored OpenPGP message in `text` and `html` (the message gets `decrypted`), and each
          attachment flagged `encrypted` (PGP/MIME payloads, `.asc` files the manifest
          flags). One that opens has `decrypted: true`, its `file_name` without `.asc`
          (`.pgp`, `.gpg`) and, when it was typed only as ciphertext, a `content_type`
          guessed from that name; one this key does not open stays as it came, with
          `decrypted: false`.
        Without a key, everything stays as stored.
        """
        return fetch_message(self._api, segment(message_id), decrypt_with, passphrase)

    # Sending (SPEC §12).

    def get_peer(self, address: str) -> dict[str, Any]:
        """The directory's entry for `address`: `{"address", "local", "openpgp_public_key"}`."""
        return self._api.object("GET", f"/v1/directory/{segment(address)}")

    def send(self, body: Mapping[str, Any] | None = None, /, *,
             idempotency_key: str | None = None, **fields: Any) -> dict[str, Any]:
        """`POST /v1/messages` with the native body as given (SPEC §12: `to`, `cc`, `bcc`,
        `subject`, `text`, `html`, `in_reply_to`, `headers`, `attachments`, `from`, also
        spelled `from_`): the 202 answer `{"id", "status", "thread_id", "recipients", …}`."""
        draft = {**(body or {}), **fields}
        if "from_" in draft:
            draft["from"] = draft.pop("from_")
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self._api.object("POST", "/v1/messages", json=draft, headers=headers)

    def send_mail(self, to: Addresses, subject: str, body: str,
                  attachments: Sequence[Attachment] | None = None, encrypt_body: bool = False,
                  encrypt_attachments: bool = False, cc: Addresses = None,
                  bcc: Addresses = None, html: str | None = None,
                  in_reply_to: str | None = None, *,
                  idempotency_key: str | None = None) -> dict[str, Any]:
        """Seed 000's send: the 202 answer `{"id", "status", "thread_id", "recipients", …}`.

        `to`, `cc`, `bcc`: an address or a list of addresses and `{"email", "name"}` dicts.
        `attachments` mixes `OutboundAttachment` files (uploaded now) and refs of uploads or
        inbound attachments (`{"object_key"}`, `{"key"}` or `{"id"}`, optional `filename` /
        `file_name`, `mime_type` / `content_type`).

        `encrypt_body`, `encrypt_attachments`: encrypted to the directory key of every
        recipient (Bcc ones hidden in the ciphertext); `AgentMailError` `no_peer_key`, with
        nothing sent, when one has none. Each file goes as `<name>.asc`,
        `application/pgp-encrypted` (a ref's bytes are fetched to be encrypted, unless the ref
        is `application/pgp-encrypted` already), and the message carries the
        `X-AgentMail-Attachments` manifest flagging them; the subject is never encrypted.
        """
        return send_mail(
            self._api, to, subject, body, attachments, encrypt_body=encrypt_body,
            encrypt_attachments=encrypt_attachments, cc=cc, bcc=bcc, html=html,
            in_reply_to=in_reply_to, idempotency_key=idempotency_key)
