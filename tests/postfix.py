"""A private Postfix instance for the tests: its own config, queue and data directories under a
temp dir, mail submitted with its `sendmail` (or, as a smarthost, over SMTP on one loopback
port the test names), relayed to one next hop.

It must never touch the system's Postfix (/etc/postfix, /var/spool/postfix) nor listen anywhere
else: its master.cf has an `inet` service only when `listen` is given, on 127.0.0.1 alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

POSTFIX = Path("/usr/sbin/postfix")
SENDMAIL = Path("/usr/sbin/sendmail")
POSTQUEUE = Path("/usr/sbin/postqueue")
MASTER = Path("/usr/lib/postfix/sbin/master")
INSTALL_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "install-postfix.sh"
HOSTNAME = "postfix.test.example"

# Only what relaying from sendmail needs; chroot off (the column after `unpriv`), since a chroot
# would need copies of /etc files inside the temp queue directory.
MASTER_CF = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
flush     unix  n       -       n       1000?   0       flush
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
smtp      unix  -       -       n       -       -       smtp
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
myhostname = {hostname}
myorigin = $myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = loopback-only
inet_protocols = ipv4
biff = no
smtp_tls_security_level = none
lmtp_tls_security_level = none
smtp_dns_support_level = disabled
# A deferred message is retried within seconds, not minutes. Not 1s: a deferred file whose time
# stamp is at most a second ahead is due at once, and the queue manager may then find the
# delivery agent still holding its lock ("skipped, still being delivered"), which costs 60 s.
queue_run_delay = 1s
minimal_backoff_time = 2s
maximal_backoff_time = 4s
{transport}
"""


def smtp_relay(port: int) -> str:
    """main.cf lines that relay every message to 127.0.0.1:port over SMTP."""
    return f"relayhost = [127.0.0.1]:{port}\n"


def lmtp_relay(port: int) -> str:
    """main.cf lines that hand every message to an LMTP server on 127.0.0.1:port."""
    return f"relayhost =\ndefault_transport = lmtp:inet:127.0.0.1:{port}\n"


def ensure_installed() -> str | None:
    """Install Postfix when it is missing (as root); then why no private instance can run here,
    or None when one can."""
    if os.geteuid() != 0:
        # master(8) must start as root; `postfix start` refuses anyone else.
        return "a private Postfix instance needs root (the postfix command is root-only)"
    if not (POSTFIX.exists() and SENDMAIL.exists() and POSTQUEUE.exists()):
        subprocess.run(["bash", str(INSTALL_SCRIPT)], check=True, timeout=600)
    return None


def master_pids() -> set[int]:
    """Every live Postfix master process on the machine, of any instance."""
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.readlink(proc / "exe") == str(MASTER) and not _zombie(proc):
                pids.add(int(proc.name))
    return pids


def port_25_listens() -> bool:
    """Whether anything accepts a TCP connection on 127.0.0.1:25."""
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", 25)) == 0


def listening_ports(pids: list[int]) -> list[int]:
    """The TCP ports (IPv4 or IPv6) on which any of these processes holds a listening socket."""
    inodes = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                fields = row.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _zombie(proc: Path) -> bool:
    stat = (proc / "stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


@dataclass
class PostfixInstance:
    """One private Postfix instance; `config_dir` is what every command gets with -c or -C."""

    root: Path

    @property
    def config_dir(self) -> Path:
        return self.root / "etc"

    def postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(POSTFIX), "-c", str(self.config_dir), *args],
                              capture_output=True, text=True, timeout=60)

    def sendmail(self, message: bytes, recipients: list[str] | None = None,
                 sender: str = "sender@example.org") -> None:
        """Submit like a local program does; no recipients means `-t` (read the headers)."""
        args = [str(SENDMAIL), "-C", str(self.config_dir), "-i", "-f", sender]
        args += ["--", *recipients] if recipients else ["-t"]
        done = subprocess.run(args, input=message, capture_output=True, timeout=60)
        assert done.returncode == 0, (done.returncode, done.stderr, self.log_tail())

    def queue(self) -> list[dict[str, Any]]:
        """The queue as `postqueue -j` shows it: one JSON object per message."""
        done = subprocess.run([str(POSTQUEUE), "-c", str(self.config_dir), "-j"],
                              capture_output=True, text=True, timeout=60, check=True)
        return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]

    def flush(self) -> None:
        """`postqueue -f`: retry every deferred message now."""
        subprocess.run([str(POSTQUEUE), "-c", str(self.config_dir), "-f"],
                       capture_output=True, timeout=60, check=True)

    def processes(self) -> list[int]:
        """Live processes of this instance: the ones whose environment names its config."""
        mine = f"MAIL_CONFIG={self.config_dir}".encode()
        pids = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if mine in (proc / "environ").read_bytes().split(b"\0") and not _zombie(proc):
                    pids.append(int(proc.name))
        return pids

    def log_tail(self, lines: int = 40) -> str:
        path = self.root / "maillog"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        """`postfix stop`, then wait until no process of this instance is left."""
        if (self.root / "queue" / "pid" / "master.pid").exists():
            self.postfix("stop")
        deadline = time.monotonic() + timeout
        while (left := self.processes()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not left, f"processes of the private Postfix outlived its stop: {left}"


@contextlib.contextmanager
def private_postfix(transport: str, listen: int | None = None) -> Iterator[PostfixInstance]:
    """Start a Postfix instance that relays as `transport` (main.cf lines) says, taking mail
    over SMTP on 127.0.0.1:`listen` too when given (from loopback clients only); stop and
    remove it afterwards."""
    # Not under pytest's tmp_path: its parents are 0700 root, and the instance's daemons, which
    # run as the `postfix` user, open files in data_directory by absolute path.
    root = Path(tempfile.mkdtemp(prefix="postroom-postfix-"))
    root.chmod(0o711)
    instance = PostfixInstance(root)
    try:
        instance.config_dir.mkdir()
        (root / "queue").mkdir()  # `postfix start` makes its subdirectories and data_directory
        smtpd = "" if listen is None else \
            f"127.0.0.1:{listen} inet  n       -       n       -       -       smtpd\n"
        (instance.config_dir / "master.cf").write_text(smtpd + MASTER_CF)
        if listen is not None:
            transport += ("mynetworks = 127.0.0.0/8\n"
                          "smtpd_relay_restrictions = permit_mynetworks, reject\n")
        (instance.config_dir / "main.cf").write_text(
            MAIN_CF.format(root=root, hostname=HOSTNAME, transport=transport))
        # Postfix waits up to two seconds for a config file that was changed within the last
        # second or two to settle; ours are complete, so they may look old.
        an_hour_ago = time.time() - 3600
        for cf in ("main.cf", "master.cf"):
            os.utime(instance.config_dir / cf, (an_hour_ago, an_hour_ago))
        started = instance.postfix("start")
        assert started.returncode == 0, (started.stderr, instance.log_tail())
        yield instance
    finally:
        try:
            instance.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)
