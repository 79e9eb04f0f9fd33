"""Seed 000's `send_mail` (SPEC §12): recipients and attachments in the seed's shapes, files
uploaded at send time, and, when asked, the body and the files encrypted to every recipient's
directory key, with the `X-AgentMail-Attachments` manifest saying which files are ciphertext.

Never sends plaintext where encryption was asked: a recipient without a key, a file that cannot
be encrypted or a manifest the daemon would refuse stops the send before it is posted, and
before anything is uploaded when it can be known up front.
"""

from __future__ import annotations

import json
import mimetypes
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from daemon.client.api import Api, segment
from daemon.client.errors import PostroomError
from daemon.openpgp import Encryptor, GpgUnavailable, OpenPgpError

PGP_ENCRYPTED = "application/pgp-encrypted"
ENCRYPTION = {"algorithm": "openpgp", "format": "armored"}
MANIFEST_HEADER = "X-AgentMail-Attachments"
# The daemon's composer refuses a manifest longer than this (daemon/outbound/compose.py
# MAX_MANIFEST_VALUE, under the reader's 64 KiB): checked here before anything is uploaded.
MAX_MANIFEST_CHARS = 60 * 1024
_REF_FIELDS = ("object_key", "key", "id")

Address: TypeAlias = str | Mapping[str, Any]
Addresses: TypeAlias = Address | Sequence[Address] | None


@dataclass(frozen=True)
class OutboundAttachment:
    """A file to upload at send time (seed 000): `display_name` is the name the recipient
    sees (the file's own name by default), `content_type` is guessed from it when not given."""

    path: str | os.PathLike[str]
    display_name: str | None = None
    content_type: str | None = None

    @property
    def file_name(self) -> str:
        return self.display_name or Path(self.path).name

    @property
    def mime_type(self) -> str:
        return self.content_type or guess_type(self.file_name)


Attachment: TypeAlias = OutboundAttachment | Mapping[str, Any]


def guess_type(file_name: str) -> str:
    return mimetypes.guess_type(file_name)[0] or "application/octet-stream"


def mailboxes(value: Addresses, what: str = "to") -> list[str | dict[str, Any]]:
    """`to`/`cc`/`bcc` as the API takes them: one address or a list, each a string or an
    `{"email", "name"}` dict."""
    if value is None:
        return []
    items = [value] if isinstance(value, str | Mapping) else list(value)
    out: list[str | dict[str, Any]] = []
    for item in items:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, Mapping) and isinstance(item.get("email"), str):
            out.append(dict(item))
        else:
            raise TypeError(f"{what}: an address is a string or a dict with an 'email'")
    return out


def address_of(box: str | Mapping[str, Any]) -> str:
    return box if isinstance(box, str) else str(box["email"])


def attachment_ref(item: Attachment) -> dict[str, Any]:
    """An already-uploaded ref as the API takes it (one of object_key, key, id, and names)."""
    if not isinstance(item, Mapping) or sum(item.get(k) is not None for k in _REF_FIELDS) != 1:
        raise TypeError("an attachment is an OutboundAttachment or a dict with one of "
                        "'object_key', 'key' or 'id'")
    return dict(item)


def _ref_name(ref: Mapping[str, Any]) -> str | None:
    name = ref.get("filename") or ref.get("file_name")
    return str(name) if name else None


def _ref_type(ref: Mapping[str, Any]) -> str | None:
    kind = ref.get("mime_type") or ref.get("content_type")
    return str(kind) if kind else None


@dataclass
class _Plan:
    """One attachment of an encrypted send: what it is called and typed, and where its bytes
    are (a local file, or a ref whose bytes are fetched to be encrypted)."""

    file_name: str
    content_type: str
    local: Path | None = None
    ref: dict[str, Any] | None = None
    url: str | None = None  # of a ref by id, from its record

    @property
    def passed_through(self) -> bool:
        """A ref that is OpenPGP ciphertext already: sent as it is, flagged in the manifest."""
        return self.ref is not None and self.content_type == PGP_ENCRYPTED

    @property
    def sent_name(self) -> str:
        return self.file_name if self.passed_through else self.file_name + ".asc"

    def manifest_entry(self, originals: bool) -> dict[str, Any]:
        entry: dict[str, Any] = {"file_name": self.sent_name, "content_type": PGP_ENCRYPTED,
                                 "encrypted": True, "encryption": dict(ENCRYPTION)}
        if originals and not self.passed_through:
            entry |= {"original_file_name": self.file_name,
                      "original_content_type": self.content_type}
        return entry


def manifest_header(plans: Sequence[_Plan]) -> str:
    """The manifest's value: a JSON array, ASCII. JSON's own ", " and ": " are kept so that the
    composer can fold the header at spaces (a long value without any is folded into RFC 2047
    encoded words instead, which readers other than postroom may not undo). The plaintext
    names are dropped when the header would be too long with them."""
    for originals in (True, False):
        value = json.dumps([p.manifest_entry(originals) for p in plans], ensure_ascii=True)
        if len(value) <= MAX_MANIFEST_CHARS:
            return value
    raise PostroomError(0, "manifest_too_large",
                        f"the {MANIFEST_HEADER} header of {len(plans)} attachments is longer "
                        f"than {MAX_MANIFEST_CHARS} characters: send fewer files per message")


def peer_key(api: Api, address: str) -> str:
    """The armored key the directory has for `address`; `no_peer_key` when it has none."""
    try:
        peer = api.object("GET", f"/v1/directory/{segment(address)}")
    except PostroomError as e:
        if e.status == 404:
            raise PostroomError(404, "no_peer_key",
                                f"{address} is not in the directory: no key to encrypt to") from e
        raise
    key = peer.get("openpgp_public_key")
    if not isinstance(key, str) or not key:
        raise PostroomError(0, "no_peer_key", f"{address} has no OpenPGP key in the directory")
    return key


def _plan_ref(api: Api, ref: dict[str, Any]) -> _Plan:
    if ref.get("id") is not None:
        record = api.object("GET", f"/v1/attachments/{segment(str(ref['id']))}")
        if record.get("stored_sha256"):
            raise PostroomError(0, "encrypted_at_rest",
                                f"attachment {ref['id']} is stored encrypted to this agent's "
                                "key: it cannot be encrypted for another reader")
        name = _ref_name(ref) or str(record.get("file_name") or "attachment")
        kind = _ref_type(ref) or str(record.get("content_type") or guess_type(name))
        return _Plan(name, kind, ref=ref, url=record.get("url"))
    key = str(ref.get("object_key") or ref.get("key"))
    # uploads/<agent_id>/<uuid>-<safe file name> (SPEC §5)
    name = _ref_name(ref) or key.rsplit("/", 1)[-1].partition("-")[2] or "attachment"
    return _Plan(name, _ref_type(ref) or guess_type(name), ref=ref)


def _fetch_ref(api: Api, plan: _Plan, dest: Path) -> None:
    assert plan.ref is not None
    url = plan.url
    if url is None and plan.ref.get("id") is None:
        key = str(plan.ref.get("object_key") or plan.ref.get("key"))
        url = api.object("POST", "/v1/uploads/download", json={"object_key": key})["url"]
    if not url:
        raise PostroomError(409, "not_ready", f"attachment {plan.ref.get('id')} is not ready")
    api.download_to(str(url), dest)


@contextmanager
def _encryptor(keys: Sequence[str], hidden: Sequence[str]) -> Iterator[Encryptor]:
    """An Encryptor for the message, its failures as PostroomError."""
    try:
        with Encryptor(keys, hidden) as encryptor:
            yield encryptor
    except GpgUnavailable as e:
        raise PostroomError(0, "gpg_unavailable", str(e)) from e
    except OpenPgpError as e:
        raise PostroomError(0, "peer_key_unusable", str(e)) from e


def send_mail(api: Api, to: Addresses, subject: str, body: str,
              attachments: Sequence[Attachment] | None, *, encrypt_body: bool,
              encrypt_attachments: bool, cc: Addresses, bcc: Addresses, html: str | None,
              in_reply_to: str | None, idempotency_key: str | None) -> dict[str, Any]:
    """Seed 000's send (see `Client.send_mail`): the 202 answer of `POST /v1/messages`."""
    draft: dict[str, Any] = {"to": mailboxes(to), "cc": mailboxes(cc, "cc"),
                             "bcc": mailboxes(bcc, "bcc"), "subject": subject, "text": body}
    if html is not None:
        draft["html"] = html
    if in_reply_to is not None:
        draft["in_reply_to"] = in_reply_to
    items = list(attachments or ())
    for item in items:  # refused now, before any upload
        if not isinstance(item, OutboundAttachment):
            attachment_ref(item)
        elif not Path(item.path).is_file():
            raise PostroomError(0, "unreadable_file", f"no such file: {item.path}")
    with tempfile.TemporaryDirectory(prefix="pr-send-") as scratch:
        if encrypt_body or (encrypt_attachments and items):
            draft["attachments"] = _encrypted(api, draft, items, encrypt_body,
                                              encrypt_attachments, Path(scratch))
        else:
            draft["attachments"] = [_plain_ref(api, item) for item in items]
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return api.object("POST", "/v1/messages", json=draft, headers=headers)


def _plain_ref(api: Api, item: Attachment) -> dict[str, Any]:
    if not isinstance(item, OutboundAttachment):
        return attachment_ref(item)
    uploaded = api.upload(Path(item.path), item.file_name, item.mime_type)
    return {"id": uploaded["id"], "filename": item.file_name, "content_type": item.mime_type}


def _encrypted(api: Api, draft: dict[str, Any], items: list[Attachment], encrypt_body: bool,
               encrypt_attachments: bool, scratch: Path) -> list[dict[str, Any]]:
    """Encrypt the body (into `draft`) and the attachments; the attachments' refs."""
    shown = [address_of(b) for b in (*draft["to"], *draft["cc"])]
    hidden = [address_of(b) for b in draft["bcc"]]
    if not shown and not hidden:
        raise PostroomError(0, "no_recipients", "nobody to encrypt to")
    keys = {a.lower(): peer_key(api, a) for a in dict.fromkeys(a.lower() for a in
                                                                (*shown, *hidden))}
    plans: list[_Plan] = []
    if encrypt_attachments:
        for item in items:
            if isinstance(item, OutboundAttachment):
                plans.append(_Plan(item.file_name, item.mime_type, local=Path(item.path)))
            else:
                plans.append(_plan_ref(api, attachment_ref(item)))
        draft["headers"] = {MANIFEST_HEADER: manifest_header(plans)} if plans else {}
    with _encryptor([keys[a.lower()] for a in shown], [keys[a.lower()] for a in hidden]) as enc:
        if encrypt_body:
            for part in ("text", "html"):
                if draft.get(part) is not None:
                    draft[part] = enc.encrypt_bytes(draft[part].encode("utf-8")).decode("ascii")
        if not encrypt_attachments:
            return [_plain_ref(api, item) for item in items]
        return [_encrypted_ref(api, enc, plan, scratch / str(n)) for n, plan in enumerate(plans)]


def _encrypted_ref(api: Api, enc: Encryptor, plan: _Plan, scratch: Path) -> dict[str, Any]:
    if plan.passed_through:
        assert plan.ref is not None
        return plan.ref
    scratch.mkdir()
    source = plan.local
    if source is None:
        source = scratch / "plain"
        _fetch_ref(api, plan, source)
    sealed = scratch / "sealed.asc"
    try:
        enc.encrypt_file(source, sealed)
        uploaded = api.upload(sealed, plan.sent_name, PGP_ENCRYPTED)
    finally:
        for leftover in scratch.iterdir():
            leftover.unlink()  # plaintext fetched from a ref is not kept a moment longer
    return {"id": uploaded["id"], "filename": plan.sent_name, "content_type": PGP_ENCRYPTED}
