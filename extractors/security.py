"""Signed and encrypted mail: what PGP/MIME (RFC 3156) and S/MIME (RFC 8551) entities mean.

Nothing here verifies or decrypts: it only reads labels and the first bytes, so a message can say
`pgp` / `smime` and its encrypted payloads can be flagged. Pure; never raises.
"""

from __future__ import annotations

from typing import Literal

from extractors.entity import Entity
from extractors.pgp import openpgp_data
from extractors.records import Encryption, Security

_PKCS7_MIME = ("application/pkcs7-mime", "application/x-pkcs7-mime")
_PKCS7_SIGNATURE = ("application/pkcs7-signature", "application/x-pkcs7-signature")
_ENVELOPED = ("enveloped-data", "authenveloped-data")
_PGP_FILE_SUFFIXES = (".pgp", ".gpg")
_SMIME = Encryption("smime", "binary")


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


def part_encryption(
    entity: Entity | None, name: str | None, data: bytes, *, payload: bool = False
) -> Encryption | None:
    """How a leaf's bytes are encrypted as sent; None when they are not ciphertext.

    `payload` is the second part of a multipart/encrypted: ciphertext whatever it looks like.
    S/MIME enveloped data goes by its label. Otherwise an OpenPGP message is ciphertext: armored
    anywhere, binary when a .pgp/.gpg name or an application/pgp-encrypted type hints at it or
    its first packet looks whole. A .pgp/.gpg name with bytes we cannot read is trusted; one
    holding a key or a signature is not ciphertext, and neither is the RFC 3156 control part
    ("Version: 1").
    """
    content_type = "" if entity is None else entity.content_type
    if entity is not None and content_type in _PKCS7_MIME:
        if _smime_type(entity) in (*_ENVELOPED, ""):
            return _SMIME
        if not payload:
            return None
    named = name is not None and name.lower().endswith(_PGP_FILE_SUFFIXES)
    hinted = payload or named or content_type == "application/pgp-encrypted"
    found = openpgp_data(data, hinted=hinted)
    if found is not None and (found[0] or payload):
        return Encryption("openpgp", found[1])
    if payload or (named and found is None):
        return Encryption("openpgp", "binary")
    return None


def stronger(current: Security | None, seen: Security) -> Security:
    """Encrypted outranks signed: a signed-then-encrypted message is encrypted."""
    return "encrypted" if "encrypted" in (current, seen) else "signed"
