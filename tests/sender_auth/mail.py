"""Test material for sender authentication: keys (made once per session), messages, signing.

RSA keys come from `cryptography` (PKCS#1 PEM, as dkimpy signs with; the DNS `p=` is the DER
SubjectPublicKeyInfo), ed25519 keys from PyNaCl (dkimpy wants the base64 seed).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass

import dkim
import nacl.encoding
import nacl.signing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from daemon.sender_auth import Authentication

Check = Callable[..., Authentication]  # the `check` fixture: verify() with the test envelope
SIGNED = [b"from", b"to", b"subject", b"date", b"message-id"]
BODY = (b"Hello,\r\n\r\nPlease wire the money today.\r\n"
        + b"Lorem ipsum dolor sit amet. " * 40 + b"\r\n")


@dataclass(frozen=True)
class Key:
    """A signing key and the TXT record that publishes it."""

    private: bytes
    record: str
    algorithm: bytes


def rsa_key(bits: int = 1024) -> Key:
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = private.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    der = private.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    return Key(pem, f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}", b"rsa-sha256")


def ed25519_key() -> Key:
    signing = nacl.signing.SigningKey.generate()
    public = signing.verify_key.encode(encoder=nacl.encoding.Base64Encoder).decode()
    return Key(signing.encode(encoder=nacl.encoding.Base64Encoder),
               f"v=DKIM1; k=ed25519; p={public}", b"ed25519-sha256")


def message(frm: str = "ceo@example.test", body: bytes = BODY, subject: str = "payment",
            extra: bytes = b"") -> bytes:
    return extra + (
        f"From: CEO <{frm}>\r\nTo: agent@postroom.test\r\nSubject: {subject}\r\n"
        f"Date: Mon, 01 Jun 2026 10:00:00 +0000\r\nMessage-ID: <1@example.test>\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n").encode() + body


def sign(raw: bytes, key: Key, selector: str, domain: str = "example.test", *,
         canonicalize: tuple[bytes, bytes] = (b"relaxed", b"relaxed"),
         length: bool = False) -> bytes:
    """`raw` with a DKIM-Signature by `key` added on top."""
    header = dkim.sign(raw, selector.encode(), domain.encode(), key.private,
                       signature_algorithm=key.algorithm, include_headers=SIGNED,
                       canonicalize=canonicalize, length=length)
    return bytes(header) + raw


def arc_seal(raw: bytes, key: Key, selector: str, domain: str) -> bytes:
    """`raw` (which must carry an Authentication-Results of `domain`) with an ARC set on top."""
    headers = dkim.arc_sign(raw, selector.encode(), domain.encode(), key.private,
                            domain.encode())
    assert len(headers) == 3, headers
    return b"".join(headers) + raw
