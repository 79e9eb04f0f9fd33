"""Mail DKIM-signed by a real MTA: a private Postfix (tests/postfix.py) with OpenDKIM as its
milter signs what it relays to postroom, and postroom verifies the signature against the key
published on the loopback DNS server (issue 20: signed by dkimpy, and by Postfix with a DKIM
milter)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.capture import free_port
from tests.dnsserver import RunningDns
from tests.harness import Daemon, running_daemon
from tests.postfix import ensure_installed, private_postfix, smtp_relay
from tests.sender_auth.mail import message, rsa_key

pytestmark = pytest.mark.e2e
OPENDKIM = Path("/usr/sbin/opendkim")
SELECTOR = "pfx"
BODY = b"Hello,\r\n\r\nPlease wire the money today.\r\n\r\n-- \r\nThe CEO\r\n"


@contextlib.contextmanager
def opendkim(private_pem: bytes, port: int) -> Iterator[Path]:
    """OpenDKIM in the foreground, signing for example.test on 127.0.0.1:`port`."""
    root = Path(tempfile.mkdtemp(prefix="postroom-opendkim-"))
    (root / "key.pem").write_bytes(private_pem)
    (root / "key.pem").chmod(0o600)
    conf = root / "opendkim.conf"
    conf.write_text(f"""Mode s
Domain example.test
Selector {SELECTOR}
KeyFile {root / "key.pem"}
Socket inet:{port}@127.0.0.1
Canonicalization relaxed/relaxed
InternalHosts 127.0.0.0/8
Syslog no
LogWhy yes
RequireSafeKeys false
PidFile {root / "opendkim.pid"}
""")
    log = (root / "log").open("wb")
    proc = subprocess.Popen([str(OPENDKIM), "-f", "-x", str(conf)], stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), \
                    socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert proc.poll() is None and time.monotonic() < deadline, \
                (root / "log").read_text(errors="replace")
            time.sleep(0.05)
        yield root
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def d(dns_server: RunningDns, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    extra = f'[auth]\ndns_servers = ["{dns_server.address}"]\ndns_timeout = "300ms"\n'
    with running_daemon(tmp_path_factory.mktemp("milter"), extra=extra) as daemon:
        yield daemon


def test_mail_signed_by_postfix_with_opendkim_verifies(d: Daemon,
                                                       dns_server: RunningDns) -> None:
    reason = ensure_installed()
    if reason is not None:
        pytest.fail(f"the milter test needs Postfix and root: {reason}")
    if not OPENDKIM.exists():
        pytest.fail("opendkim is missing: scripts/install-postfix.sh installs it")
    key = rsa_key(2048)
    dns_server.zone.txt(f"{SELECTOR}._domainkey.example.test", key.record)
    address = f"m{os.urandom(4).hex()}@agents.test"
    api_key = str(d.add_agent(address.split("@")[0], address)["api_key"])
    milter = free_port()
    main_cf = (smtp_relay(d.smtp_port) + f"non_smtpd_milters = inet:127.0.0.1:{milter}\n"
               "milter_default_action = tempfail\nmilter_protocol = 6\n")
    with opendkim(key.private, milter) as dkim_root, private_postfix(main_cf) as postfix:
        # Lines under 998 characters: Postfix's SMTP client folds longer ones after the
        # milter signed them (smtp_line_length_limit), which breaks any body hash.
        postfix.sendmail(message(frm="ceo@example.test", body=BODY), [address],
                         sender="ceo@example.test")
        with d.api(api_key) as api:
            def arrived() -> list[str]:
                return [m["id"] for m in api.get("/v1/messages").json()["messages"]]
            try:
                ids = d.wait_for(arrived, 30, "the message signed and relayed by Postfix")
            except AssertionError as e:
                raise AssertionError(f"{e}\nPostfix:\n{postfix.log_tail()}\nOpenDKIM:\n"
                                     f"{(dkim_root / 'log').read_text(errors='replace')}"
                                     ) from None
    view = d.wait_message(api_key, ids[0])
    signatures = [(s["result"], s["domain"], s["selector"])
                  for s in view["authentication"]["dkim"]]
    assert signatures == [("pass", "example.test", SELECTOR)]
    assert view["authentication"]["dmarc"]["result"] == "pass" and view["verdict"] == "pass"
