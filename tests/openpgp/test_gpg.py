"""daemon/openpgp's keyring, key checks, runner and Decryptor against the machine's gpg: keys
accepted and refused, encryption to one and several keys decrypted by the client's Decryptor,
signatures, time limits and bounded memory. Errors are told apart by type and reason code."""

from __future__ import annotations

import hashlib
import os
import re
import stat
import subprocess
import time
import tracemalloc
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon.openpgp.decrypt import Decryptor
from daemon.openpgp.errors import (
    DecryptionFailed,
    DecryptorClosed,
    GpgTimedOut,
    GpgUnavailable,
    KeyRefused,
    NoPrivateKey,
    NotAFingerprint,
    RecipientRefused,
    Refusal,
)
from daemon.openpgp.keyring import Keyring, Verification
from daemon.openpgp.runner import gpg_version
from storage.errors import TransientError
from tests.pgpkeys import TestKey, make_key

MiB = 1 << 20


def alice() -> TestKey:
    return make_key("Alice <alice@example.org>")


def bob() -> TestKey:
    return make_key("Bob <bob@example.org>")


def carol() -> TestKey:
    """Never imported into the daemon's keyring: the unknown signer."""
    return make_key("Carol <carol@example.org>")


def pat() -> TestKey:
    return make_key("Pat <pat@example.org>", passphrase="correct horse")


@pytest.fixture
def gpg(tmp_path: Path) -> Keyring:
    return Keyring(tmp_path / "gnupg", timeout=30)


@pytest.fixture
def keyring(gpg: Keyring) -> Keyring:
    """The daemon's keyring holding Alice's and Bob's public keys."""
    gpg.import_key(alice().public)
    gpg.import_key(bob().public)
    return gpg


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def _agent_socket(home: Path) -> Path:
    listed = subprocess.run(["gpgconf", "--homedir", str(home), "--list-dirs", "agent-socket"],
                            capture_output=True, check=True, timeout=10)
    return Path(listed.stdout.decode().strip())


def _gone(pid: int, within: float = 5.0) -> bool:
    """True once `pid` no longer runs (a zombie nobody reaped counts as gone)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.02)
    return False


def _wait_for_file(path: Path, within: float = 5.0) -> str:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.02)
    raise AssertionError(f"{path} never written")


# -- the home ---------------------------------------------------------------------------------


def test_home_is_created_with_its_parents_and_private(tmp_path: Path) -> None:
    home = tmp_path / "state" / "deep" / "gnupg"
    Keyring(home)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


def test_an_existing_open_home_is_made_private(tmp_path: Path) -> None:
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    Keyring(home)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


def test_gpg_version_names_the_machine_gpg() -> None:
    assert re.fullmatch(r"2\.\d+\.\d+", gpg_version("/usr/bin/gpg"))


# -- public keys ------------------------------------------------------------------------------


def test_inspect_describes_the_key_without_importing_it(gpg: Keyring) -> None:
    key = alice()
    info = gpg.inspect_public_key(key.public)
    assert info.fingerprint == key.fingerprint
    assert info.user_ids == ("Alice <alice@example.org>",)
    assert info.algorithm == "ed25519"
    assert info.created.tzinfo is not None
    assert abs((datetime.now(UTC) - info.created).total_seconds()) < 3600
    assert info.expires is None
    assert info.encryption_subkeys == key.subkey_fingerprints
    assert gpg.inspect_public_key(key.public.encode()) == info
    assert gpg.fingerprints() == set()


def test_inspect_names_an_rsa_key_by_its_size(gpg: Keyring) -> None:
    key = make_key("Rita <rita@example.org>", algo="rsa2048")
    info = gpg.inspect_public_key(key.public)
    assert info.algorithm == "rsa2048"
    assert info.encryption_subkeys == key.subkey_fingerprints


def _two_keys_in_one_block(tmp_path: Path) -> str:
    home = tmp_path / "two"
    home.mkdir(mode=0o700)
    run = ["gpg", "--homedir", str(home), "--batch", "--no-autostart"]
    for key in (alice(), bob()):
        subprocess.run([*run, "--import"], input=key.public.encode(), capture_output=True,
                       check=True, timeout=30)
    exported = subprocess.run([*run, "--armor", "--export"], capture_output=True, check=True,
                              timeout=30)
    return exported.stdout.decode()


REFUSALS: dict[str, tuple[Callable[[Path], str | bytes], Refusal]] = {
    "plain text": (lambda _: "hello, this is my key", "not_a_key"),
    "an encrypted message": (lambda _: alice().encrypt_to_self(b"hi"), "not_a_key"),
    "garbage in public armor": (
        lambda _: "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nbm90IGEga2V5\n"
                  "-----END PGP PUBLIC KEY BLOCK-----\n", "not_a_key"),
    "binary key": (lambda _: alice().gpg("--export", alice().fingerprint), "binary"),
    "over 1 MiB": (lambda _: alice().public + "\n" * MiB, "too_large"),
    "two armored blocks": (lambda _: alice().public + bob().public, "several_keys"),
    "two keys in one block": (_two_keys_in_one_block, "several_keys"),
    "private key": (lambda _: alice().private, "private"),
    "private key labelled public": (
        lambda _: alice().private.replace("PRIVATE KEY BLOCK", "PUBLIC KEY BLOCK"), "private"),
    "sign-only key": (lambda _: make_key("Sid <sid@example.org>", sign_only=True).public,
                      "cannot_encrypt"),
    "expired key": (lambda _: make_key("Ed <ed@example.org>", expired=True).public,
                    "expired"),
    "revoked key": (lambda _: make_key("Rev <rev@example.org>", revoked=True).public,
                    "revoked"),
}


@pytest.mark.parametrize("method", ["inspect_public_key", "import_key"])
@pytest.mark.parametrize("case", list(REFUSALS))
def test_keys_that_cannot_be_an_agents_key_are_refused(
        gpg: Keyring, tmp_path: Path, case: str, method: str) -> None:
    build, reason = REFUSALS[case]
    with pytest.raises(KeyRefused) as refused:
        getattr(gpg, method)(build(tmp_path))
    assert refused.value.reason == reason
    assert "\n" not in str(refused.value)  # one line, for the command line
    assert gpg.fingerprints() == set()


def test_importing_a_key_twice_changes_nothing(gpg: Keyring) -> None:
    key = alice()
    assert gpg.import_key(key.public) == key.fingerprint
    assert gpg.import_key(key.public.encode()) == key.fingerprint
    assert gpg.fingerprints() == {key.fingerprint}


def test_the_daemons_keyring_starts_no_agent(keyring: Keyring, tmp_path: Path) -> None:
    keyring.encrypt_bytes(b"body", [alice().fingerprint])
    keyring.verify_detached(b"x", alice().sign_detached(b"x"))
    keyring.verify_clearsigned(bob().clearsign(b"x\n"))
    assert not _agent_socket(tmp_path / "gnupg").exists()


# -- encryption and decryption ----------------------------------------------------------------


def test_bytes_encrypted_to_a_key_decrypt_with_its_armored_private_key(keyring: Keyring) -> None:
    message = keyring.encrypt_bytes(b"the body\r\n", [alice().fingerprint])
    assert message.startswith(b"-----BEGIN PGP MESSAGE-----")
    with Decryptor(alice().private) as decryptor:
        assert decryptor.decrypt_bytes(message) == b"the body\r\n"
    with Decryptor(alice().private.encode()) as decryptor:
        assert decryptor.decrypt_bytes(message) == b"the body\r\n"


def test_a_file_for_two_keys_is_one_message_each_key_decrypts(
        keyring: Keyring, tmp_path: Path) -> None:
    src = tmp_path / "attachment.pdf"
    src.write_bytes(os.urandom(100_000))
    dest = tmp_path / "attachment.pdf.asc"
    keyring.encrypt_file(src, dest, [alice().fingerprint, bob().fingerprint])
    assert dest.read_bytes().startswith(b"-----BEGIN PGP MESSAGE-----")
    assert dest.read_bytes().count(b"-----BEGIN PGP MESSAGE-----") == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    bob_file = tmp_path / "bob.asc"
    bob_file.write_text(bob().private)
    for key in (alice().private, bob_file):
        out = tmp_path / "out"
        with Decryptor(key) as decryptor:
            decryptor.decrypt_file(dest, out)
        assert out.read_bytes() == src.read_bytes()
    # A third key it was not encrypted to cannot read it.
    with Decryptor(carol().private) as decryptor, pytest.raises(DecryptionFailed) as failed:
        decryptor.decrypt_file(dest, tmp_path / "carol")
    assert failed.value.reason == "not_for_this_key"
    assert not (tmp_path / "carol").exists()


def _snapshot(home: Path) -> dict[str, str]:
    return {str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(home.rglob("*")) if p.is_file() and not p.is_socket()}


def test_a_gnupg_home_is_used_without_being_changed(keyring: Keyring) -> None:
    key = alice()
    key.sign_detached(b"start its agent, so that the home has live sockets")
    before = _snapshot(key.home)
    message = keyring.encrypt_bytes(b"from a keyring", [key.fingerprint])
    with Decryptor(key.home) as decryptor:
        assert decryptor.decrypt_bytes(message) == b"from a keyring"
    assert _snapshot(key.home) == before


def test_a_passphrase_protected_key_needs_its_passphrase(gpg: Keyring) -> None:
    key = pat()
    gpg.import_key(key.public)
    message = gpg.encrypt_bytes(b"protected", [key.fingerprint])
    with Decryptor(key.private, "correct horse") as decryptor:
        assert decryptor.decrypt_bytes(message) == b"protected"
    with Decryptor(key.private, "wrong") as decryptor, pytest.raises(DecryptionFailed) as wrong:
        decryptor.decrypt_bytes(message)
    assert wrong.value.reason == "wrong_passphrase"
    with Decryptor(key.private) as decryptor, pytest.raises(DecryptionFailed) as missing:
        decryptor.decrypt_bytes(message)
    assert missing.value.reason == "passphrase_needed"


def test_a_signed_message_decrypts_though_its_signer_is_unknown(tmp_path: Path) -> None:
    recipient = tmp_path / "bob.asc"
    recipient.write_text(bob().public)
    message = carol().gpg("--trust-model", "always", "--armor", "--sign", "--encrypt",
                          "--recipient-file", str(recipient), input=b"signed and sealed")
    with Decryptor(bob().private) as decryptor:
        assert decryptor.decrypt_bytes(message) == b"signed and sealed"


def test_what_cannot_be_decrypted_is_named_without_its_content() -> None:
    with Decryptor(alice().private) as decryptor:
        with pytest.raises(DecryptionFailed) as raised:
            decryptor.decrypt_bytes(b"TOP-SECRET-WORD in plain text")
        assert raised.value.reason == "not_encrypted"
        assert "TOP-SECRET" not in str(raised.value)
        with pytest.raises(DecryptionFailed) as raised:
            decryptor.decrypt_bytes(bob().encrypt_to_self(b"for bob"))
        assert raised.value.reason == "not_for_this_key"


def test_a_decryptor_needs_a_private_key(tmp_path: Path) -> None:
    with pytest.raises(NoPrivateKey):
        Decryptor(alice().public)
    public_file = tmp_path / "public.asc"
    public_file.write_text(alice().public)
    with pytest.raises(NoPrivateKey):
        Decryptor(public_file)
    empty_home = tmp_path / "empty"
    empty_home.mkdir(mode=0o700)
    with pytest.raises(NoPrivateKey):
        Decryptor(empty_home)


def test_a_closed_decryptor_leaves_no_home_and_no_agent(keyring: Keyring) -> None:
    message = keyring.encrypt_bytes(b"x", [alice().fingerprint])
    with Decryptor(alice().private) as decryptor:
        decryptor.decrypt_bytes(message)
        home = decryptor._home
        socket = _agent_socket(home)
        assert socket.exists()
    assert not socket.exists()
    assert not home.exists()
    with pytest.raises(DecryptorClosed):
        decryptor.decrypt_bytes(message)


def test_a_recipient_outside_the_keyring_fails_and_writes_nothing(
        keyring: Keyring, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"x" * 200_000)
    dest = tmp_path / "dest.asc"
    dest.write_bytes(b"old")
    with pytest.raises(RecipientRefused) as refused:
        keyring.encrypt_file(src, dest, [alice().fingerprint, carol().fingerprint])
    assert (refused.value.reason, refused.value.recipient) == (
        "not_in_keyring", carol().fingerprint)
    assert dest.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest.asc", "gnupg", "src"]
    with pytest.raises(RecipientRefused) as refused:
        keyring.encrypt_bytes(b"y" * 200_000, [carol().fingerprint])
    assert refused.value.reason == "not_in_keyring"
    with pytest.raises(NotAFingerprint):
        keyring.encrypt_bytes(b"y", ["alice@example.org"])


def test_recipients_may_be_spelled_in_lower_case_with_spaces(keyring: Keyring) -> None:
    fingerprint = alice().fingerprint.lower()
    spaced = " ".join(fingerprint[i:i + 4] for i in range(0, 40, 4))
    message = keyring.encrypt_bytes(b"z", [spaced])
    assert alice().decrypt(message) == b"z"


def test_concurrent_encryptions_do_not_mix(keyring: Keyring) -> None:
    def encrypt(n: int) -> bytes:
        return keyring.encrypt_bytes(f"body {n}".encode(), [bob().fingerprint])

    with ThreadPoolExecutor(8) as pool:
        messages = list(pool.map(encrypt, range(16)))
    assert [bob().decrypt(m) for m in messages] == [f"body {n}".encode() for n in range(16)]


def _peak_rss_reset() -> bool:
    """Reset this process's peak RSS (VmHWM), where Linux lets us."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _proc_status_kib(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {name} in /proc/self/status")


def test_a_40_mib_file_round_trips_file_to_file_in_bounded_memory(
        keyring: Keyring, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    with src.open("wb") as file:
        for _ in range(40):
            file.write(os.urandom(MiB))
    encrypted, decrypted = tmp_path / "big.bin.asc", tmp_path / "big.out"

    baseline = _proc_status_kib("VmRSS" if _peak_rss_reset() else "VmHWM")
    tracemalloc.start()
    try:
        keyring.encrypt_file(src, encrypted, [alice().fingerprint])
        with Decryptor(alice().private) as decryptor:
            decryptor.decrypt_file(encrypted, decrypted)
        _, traced_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rss_growth = (_proc_status_kib("VmHWM") - baseline) * 1024

    assert traced_peak < 1 * MiB, traced_peak
    assert rss_growth < 8 * MiB, rss_growth
    assert encrypted.stat().st_size > 40 * MiB
    assert _sha256(decrypted) == _sha256(src)


# -- signatures -------------------------------------------------------------------------------


def test_a_detached_signature_by_a_key_in_the_keyring_is_valid(keyring: Keyring) -> None:
    content = b"Content-Type: text/plain\r\n\r\nsigned\r\n"
    for signature in (alice().sign_detached(content), alice().sign_detached(content,
                                                                             armor=False)):
        assert keyring.verify_detached(content, signature) == Verification(
            "valid", alice().fingerprint)


def test_a_signature_over_other_content_is_bad(keyring: Keyring) -> None:
    signature = alice().sign_detached(b"what was signed")
    assert keyring.verify_detached(b"what was sent", signature) == Verification(
        "bad", alice().fingerprint)


@pytest.mark.parametrize("signature", [b"", b"not a signature", b"\x89\x01\x02garbage",
                                       b"-----BEGIN PGP SIGNATURE-----\n\nAAAA\n"
                                       b"-----END PGP SIGNATURE-----\n"])
def test_a_malformed_signature_is_bad(keyring: Keyring, signature: bytes) -> None:
    assert keyring.verify_detached(b"content", signature).status == "bad"


def test_a_signer_outside_the_keyring_is_unknown(keyring: Keyring) -> None:
    signature = carol().sign_detached(b"content")
    assert keyring.verify_detached(b"content", signature) == Verification(
        "unknown_key", carol().fingerprint)


def test_a_good_signature_by_a_key_not_expected_is_unknown(keyring: Keyring) -> None:
    signature = alice().sign_detached(b"content")
    assert keyring.verify_detached(b"content", signature, [bob().fingerprint]) == (
        Verification("unknown_key", alice().fingerprint))
    assert keyring.verify_detached(b"content", signature,
                                   [bob().fingerprint, alice().fingerprint.lower()]) == (
        Verification("valid", alice().fingerprint))


def test_a_signature_by_a_subkey_matches_its_primary_or_the_subkey(gpg: Keyring) -> None:
    key = make_key("Sam <sam@example.org>", signing_subkey=True)
    gpg.import_key(key.public)
    signature = key.sign_detached(b"content")
    signing_subkey = key.subkey_fingerprints[-1]
    for expected in (None, [key.fingerprint], [signing_subkey]):
        assert gpg.verify_detached(b"content", signature, expected) == Verification(
            "valid", key.fingerprint)
    assert gpg.verify_detached(b"content", signature, [key.subkey_fingerprints[0]]) == (
        Verification("unknown_key", key.fingerprint))


def test_clearsigned_messages_are_checked(keyring: Keyring) -> None:
    text = b"Hello,\n- a dashed line\n-----BEGIN PGP SIGNED MESSAGE----- lookalike\nBye\n"
    signed = alice().clearsign(text)
    assert keyring.verify_clearsigned(signed) == Verification("valid", alice().fingerprint)
    assert keyring.verify_clearsigned(signed, [bob().fingerprint]).status == "unknown_key"
    tampered = signed.replace(b"Bye", b"Bye!")
    assert keyring.verify_clearsigned(tampered).status == "bad"
    assert keyring.verify_clearsigned(carol().clearsign(text)) == Verification(
        "unknown_key", carol().fingerprint)
    assert keyring.verify_clearsigned(b"no signature here").status == "bad"


def test_text_outside_the_clearsigned_block_makes_it_bad(keyring: Keyring) -> None:
    signed = alice().clearsign(b"the signed part\n")
    assert keyring.verify_clearsigned(b"Pay 1000 to Mallory.\n\n" + signed).status == "bad"
    assert keyring.verify_clearsigned(signed + b"\nP.S. unsigned\n").status == "bad"
    assert keyring.verify_clearsigned(b"\n" + signed + b"\n\n").status == "valid"


# -- gpg missing, failing or hanging ----------------------------------------------------------


def test_a_missing_gpg_is_unavailable(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-gpg")
    with pytest.raises(GpgUnavailable):
        gpg_version(missing)
    with pytest.raises(GpgUnavailable):
        Keyring(tmp_path / "gnupg", binary=missing)
    with pytest.raises(GpgUnavailable):
        Decryptor(alice().private, binary=missing)
    assert issubclass(GpgUnavailable, TransientError)


def test_a_program_that_is_not_gpg_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(GpgUnavailable):
        gpg_version("/bin/false")
    with pytest.raises(GpgUnavailable):
        Keyring(tmp_path / "gnupg", binary="/bin/echo")


def _hanging_gpg(tmp_path: Path, *, answers_start_up: bool) -> tuple[Path, Path]:
    """A fake gpg that sleeps, leaving the sleeper's pid in a file; with `answers_start_up`,
    the real gpg answers the start-up questions (--version, --list-config) first."""
    pidfile = tmp_path / "sleeper.pid"
    script = tmp_path / "gpg"
    start_up = ('case " $* " in *" --version "*|*" --list-config "*) exec /usr/bin/gpg "$@";; '
                "esac\n") if answers_start_up else ""
    script.write_text(f"#!/bin/sh\n{start_up}sleep 120 &\necho $! > {pidfile}\nwait\n")
    script.chmod(0o755)
    return script, pidfile


# The fake gpg sleeps for two minutes: a run that was not cut short would end in another error
# (not GnuPG's answer), and its sleeper would still be running.


def test_a_gpg_that_hangs_at_once_is_killed_in_time(tmp_path: Path) -> None:
    script, pidfile = _hanging_gpg(tmp_path, answers_start_up=False)
    for attempt in (lambda: gpg_version(str(script), timeout=0.5),
                    lambda: Keyring(tmp_path / "gnupg", binary=str(script), timeout=0.5)):
        pidfile.unlink(missing_ok=True)
        with pytest.raises(GpgTimedOut):
            attempt()
        assert _gone(int(_wait_for_file(pidfile)))


def test_a_gpg_that_hangs_mid_work_is_killed_and_leaves_no_file(tmp_path: Path) -> None:
    script, pidfile = _hanging_gpg(tmp_path, answers_start_up=True)
    gpg = Keyring(tmp_path / "gnupg", binary=str(script), timeout=0.5)
    src = tmp_path / "src"
    src.write_bytes(b"data")
    with pytest.raises(GpgTimedOut):
        gpg.encrypt_file(src, tmp_path / "dest.asc", [alice().fingerprint])
    assert _gone(int(_wait_for_file(pidfile)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gnupg", "gpg", "sleeper.pid", "src"]
    pidfile.unlink()
    with pytest.raises(GpgTimedOut):
        gpg.verify_detached(b"content", alice().sign_detached(b"content"))
    assert _gone(int(_wait_for_file(pidfile)))
