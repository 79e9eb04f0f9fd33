"""`fetch_message(decrypt_with=…)` (SPEC §8, §12): a message with its attachments' bytes, and
with the agent's private key, its plaintext: first what postroom encrypted at rest, then what
the sender encrypted end to end (an armored body, `.asc` files the manifest flags).

What the daemon encrypted at rest must open (a wrong key raises `decryption_failed`); what a
sender encrypted may be for someone else and is then left as it came, `decrypted: false`.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
from pathlib import Path
from typing import Any

from daemon.client.api import Api
from daemon.client.errors import PostroomError
from daemon.openpgp import Decryptor, GpgUnavailable, OpenPgpError

_ARMORED = re.compile(r"-----BEGIN PGP MESSAGE-----\r?\n.*?-----END PGP MESSAGE-----",
                      re.DOTALL)
_ARMOR_START = b"-----BEGIN PGP MESSAGE-----"
_SUFFIXES = (".asc", ".pgp", ".gpg")
_OPAQUE_TYPES = ("application/pgp-encrypted", "application/octet-stream")


def key_source(value: Any) -> str | bytes | Path:
    """What `decrypt_with` names: armored key text, or a path (a key file or a GnuPG home)."""
    if isinstance(value, Path | bytes):
        return value
    text = str(value)
    if "-----BEGIN PGP" in text:
        return text
    return Path(text)


def _open_text(decryptor: Decryptor, text: str) -> tuple[str, bool | None]:
    """`text` with each armored OpenPGP message in it replaced by its plaintext; whether they
    all opened (None when there were none)."""
    opened: list[bool] = []

    def plaintext(block: re.Match[str]) -> str:
        try:
            data = decryptor.decrypt_bytes(block.group(0).encode("ascii", "replace"))
        except OpenPgpError:
            opened.append(False)
            return block.group(0)
        opened.append(True)
        return data.decode("utf-8", "replace")

    out = _ARMORED.sub(plaintext, text)
    return out, (all(opened) if opened else None)


def _plaintext_name(file_name: str) -> str:
    stem, suffix = file_name[:-4], file_name[-4:].lower()
    return stem if suffix in _SUFFIXES and stem else file_name


def _open_at_rest(message: dict[str, Any], decryptor: Decryptor) -> None:
    for kind in ("text", "html"):
        if message.get(kind):
            message[kind] = decryptor.decrypt_bytes(
                str(message[kind]).encode("ascii")).decode("utf-8", "replace")


def _open_bodies(message: dict[str, Any], decryptor: Decryptor) -> None:
    outcomes = []
    for kind in ("text", "html"):
        if message.get(kind) and "-----BEGIN PGP MESSAGE-----" in str(message[kind]):
            message[kind], opened = _open_text(decryptor, str(message[kind]))
            outcomes.append(opened)
    if outcomes:
        message["decrypted"] = all(outcomes)


def _open_attachment(att: dict[str, Any], content: bytes, decryptor: Decryptor) -> bytes:
    """The attachment's plaintext, its status object updated (`file_name`, `decrypted`)."""
    at_rest = bool(att.get("stored_sha256"))
    if at_rest:
        content = decryptor.decrypt_bytes(content)
        if hashlib.sha256(content).hexdigest() != att["sha256"]:
            raise PostroomError(0, "integrity", f"attachment {att['index']}: decrypted bytes "
                                "do not match its sha256")
        att["file_name"] = _plaintext_name(str(att["file_name"]))
        att["decrypted"] = True
    # Ciphertext as the sender sent it: flagged by the daemon (bytes, name, manifest) or, under
    # postroom's own at-rest layer, recognisable by its armor.
    sealed = att.get("encrypted") if not at_rest else content.lstrip().startswith(_ARMOR_START)
    if not sealed:
        return content
    try:
        content = decryptor.decrypt_bytes(content)
    except OpenPgpError:
        att["decrypted"] = at_rest  # postroom's own layer did open
        return content
    att["decrypted"] = True
    att["file_name"] = _plaintext_name(str(att["file_name"]))
    if str(att.get("content_type", "")).lower() in _OPAQUE_TYPES:
        att["content_type"] = (mimetypes.guess_type(att["file_name"])[0]
                               or "application/octet-stream")
    return content


def fetch_message(api: Api, message_id: str, decrypt_with: Any = None,
                  passphrase: str | None = None) -> dict[str, Any]:
    """See `Client.fetch_message`."""
    message = api.object("GET", f"/v1/messages/{message_id}")
    decryptor: Decryptor | None = None
    try:
        if decrypt_with:
            decryptor = Decryptor(key_source(decrypt_with), passphrase)
            if message.get("encryption") is not None:
                _open_at_rest(message, decryptor)
            _open_bodies(message, decryptor)
        for att in message.get("attachments", []):
            if att.get("status") != "ready":
                continue
            link = api.object("POST", f"/v1/messages/{message_id}/attachments/"
                              f"{int(att['index'])}/download")
            content = api.download(str(link["url"]))
            if decryptor is not None:
                content = _open_attachment(att, content, decryptor)
            att["content"] = content
    except OpenPgpError as e:
        raise PostroomError(0, "decryption_failed", str(e)) from e
    except GpgUnavailable as e:
        raise PostroomError(0, "gpg_unavailable", str(e)) from e
    finally:
        if decryptor is not None:
            decryptor.close()
    return message
