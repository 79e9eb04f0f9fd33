"""STARTTLS files: a good pair loads, every bad file is an error naming its key, reload swaps."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from daemon.smtp.tls import TlsError, TlsFiles, load_tls
from tests.certs import make_cert


def test_a_certificate_and_its_key_make_a_server_context(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    files = TlsFiles(cert, key)
    assert isinstance(files.context, ssl.SSLContext)
    assert files.context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert load_tls(None, None) is None


def _encrypted(key: Path, out: Path) -> Path:
    loaded = serialization.load_pem_private_key(key.read_bytes(), None)
    out.write_bytes(loaded.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.BestAvailableEncryption(b"pw")))
    return out


@pytest.mark.parametrize(("case", "named", "problem"), [
    ("missing cert", "smtp.tls_cert", "unreadable"),
    ("missing key", "smtp.tls_key", "unreadable"),
    ("cert is a key", "smtp.tls_cert", "not_pem"),
    ("key is a cert", "smtp.tls_key", "not_pem"),
    ("garbled cert", "smtp.tls_cert", "invalid"),
    ("garbled key", "smtp.tls_key", "invalid"),
    ("other key", "smtp.tls_key", "mismatch"),
    ("encrypted key", "smtp.tls_key", "encrypted"),
])
def test_each_bad_file_is_an_error_naming_its_key(tmp_path: Path, case: str, named: str,
                                                  problem: str) -> None:
    cert, key = make_cert(tmp_path)
    _, other_key = make_cert(tmp_path, "other")
    garbled = tmp_path / "garbled.pem"
    paths = {
        "missing cert": (tmp_path / "absent.crt", key),
        "missing key": (cert, tmp_path / "absent.key"),
        "cert is a key": (key, key),
        "key is a cert": (cert, cert),
        "garbled cert": (garbled, key),
        "garbled key": (cert, garbled),
        "other key": (cert, other_key),
        "encrypted key": (cert, _encrypted(key, tmp_path / "enc.key")),
    }
    if case == "garbled cert":
        garbled.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all!\n"
                           "-----END CERTIFICATE-----\n")
    else:
        garbled.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(TlsError) as err:
        TlsFiles(*paths[case])
    assert (err.value.key, err.value.problem) == (named, problem), err.value


def test_reload_reads_the_files_again_and_keeps_the_old_context_on_error(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    files = TlsFiles(cert, key)
    first = files.context
    make_cert(tmp_path)  # renewed in place
    files.reload()
    assert files.context is not first
    renewed = files.context
    key.write_text("")
    with pytest.raises(TlsError) as err:
        files.reload()
    assert err.value.key == "smtp.tls_key"
    assert files.context is renewed
