"""AUTH password hashes: the line format, checking, refusing bad lines, and the hash command."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from daemon.passwords import AuthUsers, hash_password, parse_hash

LINE = re.compile(r"scrypt\$n=16384,r=8,p=1\$[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=")


def test_a_hash_line_describes_itself_and_salts_every_time() -> None:
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert LINE.fullmatch(first), first
    assert first != second  # a fresh salt each time
    assert "correct horse" not in first


def test_only_the_right_user_and_password_pass() -> None:
    users = AuthUsers({"relay": hash_password("s3cret"), "ünï": hash_password("pässwörd")})
    assert users.check(b"relay", b"s3cret") == "relay"
    assert users.check("ünï".encode(), "pässwörd".encode()) == "ünï"
    assert users.check(b"relay", b"s3cret ") is None
    assert users.check(b"relay", b"") is None
    assert users.check(b"Relay", b"s3cret") is None
    assert users.check(b"nobody", b"s3cret") is None
    assert users.check(b"\xff", b"s3cret") is None


def test_other_scrypt_parameters_are_honoured() -> None:
    line = hash_password("pw", n=1024, r=4, p=2)
    assert line.startswith("scrypt$n=1024,r=4,p=2$")
    assert AuthUsers({"u": line}).check(b"u", b"pw") == "u"


@pytest.mark.parametrize("line", [
    "s3cret",  # a password pasted where its hash belongs
    "bcrypt$2b$12$abcdefghijklmnopqrstuv",
    "scrypt$n=16384,r=8,p=1$c2FsdHNhbHQ=",
    "scrypt$n=16383,r=8,p=1$c2FsdHNhbHQ=$" + "A" * 43 + "=",  # n not a power of two
    "scrypt$n=1048576,r=64,p=1$c2FsdHNhbHQ=$" + "A" * 43 + "=",  # 8 GiB
    "scrypt$n=16384,r=8,p=99$c2FsdHNhbHQ=$" + "A" * 43 + "=",
    "scrypt$n=16384,r=8,p=1$c2FsdA=$" + "A" * 43 + "=",  # bad padding
    "scrypt$n=16384,r=8,p=1$c2E=$" + "A" * 43 + "=",  # salt too short
])
def test_lines_that_are_not_usable_hashes_are_refused(line: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_hash(line)
    assert line not in str(err.value)


def test_the_hash_command_reads_stdin_and_prints_a_line_that_verifies() -> None:
    done = subprocess.run([sys.executable, "-m", "daemon.passwords", "hash"],
                          input="tr0ub4dor &3\n", capture_output=True, text=True, timeout=60,
                          check=True)
    line = done.stdout.strip()
    assert LINE.fullmatch(line), done.stdout
    assert "tr0ub4dor" not in done.stdout + done.stderr
    assert AuthUsers({"relay": line}).check(b"relay", b"tr0ub4dor &3") == "relay"


def test_the_hash_command_refuses_an_empty_password() -> None:
    done = subprocess.run([sys.executable, "-m", "daemon.passwords", "hash"], input="\n",
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and not done.stdout, done
