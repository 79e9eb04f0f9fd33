"""STARTTLS: the server's SSLContext, built from the `smtp.tls_cert` and `smtp.tls_key` PEM files.

Every error names the config key whose file is at fault, so `serve` can stop with it. The files
are read again by `TlsFiles.reload()` (SIGHUP after a renewal): connections accepted afterwards
get the new context, open ones keep theirs. Nothing here logs or returns key material.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Literal

_CERT_MARK = b"-----BEGIN CERTIFICATE-----"
_KEY_MARK = re.compile(rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")

CERT, KEY = "smtp.tls_cert", "smtp.tls_key"
# What is wrong with the file: it cannot be read, holds no PEM block of its kind, the block is
# not valid, the key is not the certificate's, the key is encrypted, or the files changed while
# they were read. Stable for callers and tests; the message says it in words.
TlsProblem = Literal["unreadable", "not_pem", "invalid", "mismatch", "encrypted", "changed"]


class TlsError(Exception):
    """A certificate or key file cannot be used. `key` is the config key at fault (both, joined
    by " / ", when the files changed while read); the message starts with it."""

    def __init__(self, key: str, problem: TlsProblem, detail: str) -> None:
        super().__init__(f"{key}: {detail}")
        self.key = key
        self.problem: TlsProblem = problem


def _read(key: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise TlsError(key, "unreadable", f"cannot read {path}: {e.strerror or e}") from None


def _no_passphrase() -> bytes:
    # Without this callback OpenSSL would prompt on the terminal for an encrypted key.
    raise TlsError(KEY, "encrypted",
                   "the key is encrypted; give postroom an unencrypted key file")


def load_server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A TLS ≥ 1.2 server context holding the certificate chain in `cert` and its key."""
    cert_pem, key_pem = _read(CERT, cert), _read(KEY, key)
    if _CERT_MARK not in cert_pem:
        raise TlsError(CERT, "not_pem", f"{cert} holds no PEM certificate")
    if not _KEY_MARK.search(key_pem):
        raise TlsError(KEY, "not_pem", f"{key} holds no PEM private key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        # Parsing the certificates alone first tells a bad certificate from a bad key.
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(
            cadata=cert_pem.decode("ascii", "replace"))
    except ssl.SSLError as e:
        raise TlsError(CERT, "invalid",
                       f"{cert} is not a valid PEM certificate ({e.reason or e})") from None
    try:
        context.load_cert_chain(cert, key, password=_no_passphrase)
    except ssl.SSLError as e:
        if e.reason == "KEY_VALUES_MISMATCH":
            raise TlsError(KEY, "mismatch",
                           f"{key} is not the key of the certificate in {CERT}") from None
        raise TlsError(KEY, "invalid",
                       f"{key} is not a usable private key ({e.reason or e})") from None
    except OSError as e:  # the files changed under us between the reads
        raise TlsError(f"{CERT} / {KEY}", "changed", f"{e.strerror or e}") from None
    return context


class TlsFiles:
    """The certificate and key paths and the context made from them; `reload()` re-reads."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert = cert
        self.key = key
        self.context = load_server_context(cert, key)

    def reload(self) -> None:
        """Read both files again; on TlsError the previous context stays in use."""
        self.context = load_server_context(self.cert, self.key)


def load_tls(cert: Path | None, key: Path | None) -> TlsFiles | None:
    """The configured certificate and key, or None when STARTTLS is not configured."""
    return TlsFiles(cert, key) if cert is not None and key is not None else None
