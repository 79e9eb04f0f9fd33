"""Signed and encrypted mail: what PGP/MIME (RFC 3156) and S/MIME (RFC 8551) entities mean.

Nothing here verifies or decrypts: it only reads labels and the first bytes, so a message can say
`pgp` / `smime` and its encrypted payloads can be flagged. Pure; never raises.
"""

from __future__ import annotations

from typing import Literal

from extractors.entity import Entity
from extractors.records import Security

_PKCS7_MIME = ("application/pkcs7-mime", "application/x-pkcs7-mime")
_PKCS7_SIGNATURE = ("application/pkcs7-signature", "application/x-pkcs7-signature")
_ENVELOPED = ("enveloped-data", "authenveloped-data")
_PGP_FILE_SUFFIXES = (".pgp", ".gpg")
_ARMORED_MESSAGE = b"-----BEGIN PGP MESSAGE-----"


def _smime_type(entity: Entity) -> str:
    return entity.params.get("smime-type", "").strip().lower()


def entity_security(entity: Entity) -> tuple[Literal["pgp", "smime"], Security] | None:
    """What one entity says about its message: ("pgp", "encrypted"), ("smime", "signed"), …"""
    protocol = entity.params.get("protocol", "").strip().lower()
    if entity.content_type == "multipart/encrypted":
        # RFC 1847 leaves the protocol open; PGP/MIME is the only one in use.
        return ("pgp", "encrypted")
    if entity.content_type == "multipart/signed":
        if protocol in _PKCS7_SIGNATURE:
            return ("smime", "signed")
        if protocol == "application/pgp-signature":
            return ("pgp", "signed")
        return None
    if entity.content_type in _PKCS7_MIME:
        smime_type = _smime_type(entity)
        if smime_type in ("signed-data", "certs-only", "compressed-data"):
            return ("smime", "signed") if smime_type == "signed-data" else None
        # Without smime-type (older senders) a pkcs7-mime body is enveloped data.
        return ("smime", "encrypted")
    return None


def is_encrypted_part(entity: Entity, name: str | None, data: bytes) -> bool:
    """True for a leaf whose bytes are ciphertext: S/MIME enveloped data or an OpenPGP message."""
    if entity.content_type in _PKCS7_MIME:
        return _smime_type(entity) in (*_ENVELOPED, "")
    if name is not None and name.lower().endswith(_PGP_FILE_SUFFIXES):
        return True
    return data[:1024].lstrip().startswith(_ARMORED_MESSAGE)


def stronger(current: Security | None, seen: Security) -> Security:
    """Encrypted outranks signed: a signed-then-encrypted message is encrypted."""
    return "encrypted" if "encrypted" in (current, seen) else "signed"
