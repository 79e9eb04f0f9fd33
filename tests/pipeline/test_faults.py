"""Faults during load, nothing lost (SPEC §4 durability): the object store killed, made
unwritable or full; the database locked past its timeout; the daemon killed with SIGKILL at
random moments. Relay-like senders keep delivering throughout and retry every 4xx; every
transaction must get 250 or 451 (never a 5xx, never a hang), and once the fault is gone every
250 must become `ready`, each distinct message exactly once, without restarting the daemon
(the kill test aside, which restarts it as systemd would).
"""

from __future__ import annotations

import contextlib
import random
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import figures
from tests.harness import Daemon, running_daemon, start_daemon, write_config
from tests.pgserver import PgServer, control_cluster
from tests.relay import Relay, check_exactly_once, make_load, port_of
from tests.s3server import MotoServer, start_moto_server

RCPT = "fault@agents.test"
# A message whose extraction meets the outage must wait it out, not spend its attempts on it:
# with one attempt, any transient failure counted as one would fail the message.
ONE_ATTEMPT = "max_attempts = 1"


def _until(predicate: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _count(relay: Relay, category: str = "faults survived") -> None:
    figures.add(category)
    figures.add("messages accepted under faults", relay.accepted())


def _finish(d: Daemon, key: str, relay: Relay) -> None:
    relay.join()
    relay.check_replies()
    with d.api(key) as api:
        lost, duplicated = check_exactly_once(api, relay.load)
    figures.add("messages lost", lost)
    figures.add("messages duplicated", duplicated)


def _during(relay: Relay, start_after: int, refusals: int, fault: Any, heal: Any
            ) -> dict[str, int]:
    """Inject `fault` once `start_after` messages are in, keep it until the senders have been
    refused (451) `refusals` times meanwhile, then `heal`; returns the reply counts seen."""
    _until(lambda: relay.accepted() >= start_after, 60,
           f"{start_after} messages accepted (so far {relay.codes()}: "
           f"{[s.replies[-2:] for s in relay.load if s.replies][:3]})")
    before = len(relay.transactions)
    fault()
    try:
        _until(lambda: sum(t.code == 451 for t in relay.transactions[before:]) >= refusals, 60,
               f"{refusals} transactions refused with 451 during the fault")
    finally:
        heal()
    seen = relay.transactions[before:]
    return {str(t.code): sum(1 for x in seen if x.code == t.code) for t in seen}


def _survive(d: Daemon, what: str, seed: int, fault: Any, heal: Any) -> Relay:
    """90 messages from relay-like senders; `fault` once 25 are in, `heal` once each sender
    has been refused about three times. Every reply 250 or 4xx, every 250 then ready exactly
    once."""
    key = d.add_agent("fault", RCPT)["api_key"]
    relay = Relay(make_load(RCPT, 90, random.Random(seed)), RCPT, lambda: d.smtp_port).start()
    seen = _during(relay, 25, 3 * relay.senders, fault, heal)
    _finish(d, key, relay)
    assert "451" in seen, seen
    print(f"\n{what}: {relay.codes()} over {relay.accepted()} messages")
    _count(relay)
    return relay


# The object store.

def test_s3_killed_mid_load_costs_451s_and_every_250_becomes_ready(
        s3_server: MotoServer, tmp_path: Path) -> None:
    # s3_server: the session's moto; asking for it puts the test credentials in the
    # environment, so no daemon ever looks further along the AWS chain. This test kills its own.
    recording = tmp_path / "moto-recording.jsonl"
    moto = start_moto_server(tmp_path / "moto", recording=recording)
    port = moto.port
    bucket = moto.new_bucket()
    section = (f'[storage]\nbackend = "s3"\nbucket = "{bucket}"\n'
               f'endpoint_url = "{moto.endpoint_url}"\nregion = "us-east-1"\n')
    servers = [moto]
    try:
        with running_daemon(tmp_path / "d", extra=section) as d:
            def kill() -> None:
                servers[-1].proc.send_signal(signal.SIGKILL)
                servers[-1].proc.wait(10)

            def restart() -> None:
                # The same port and the recording of every request the dead one took: the
                # bucket as it was when the process died (what a real S3 would have kept).
                servers.append(start_moto_server(tmp_path / "moto", port=port,
                                                 recording=recording, replay=True))

            _survive(d, "S3 killed mid-load", 91, kill, restart)
    finally:
        for s in servers:
            s.stop()


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` (the tests run as root, as CI does)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                   check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _remount(path: Path, mode: str, within: float = 10.0) -> None:
    """Remount `path` `ro` or `rw`. The kernel refuses `ro` (EBUSY) while any file on it is
    open for writing, which under load is most moments: try again until a gap comes."""
    deadline = time.monotonic() + within
    while True:
        done = subprocess.run(["mount", "-o", f"remount,{mode}", str(path)],
                              capture_output=True, text=True)
        if done.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"remount,{mode} of {path}: {done.stderr.strip()}")
        time.sleep(0.005)  # a retry, not a wait for a state the test could observe


def test_local_store_made_unwritable_mid_load_costs_451s_and_nothing_is_lost(
        fresh_root: Path) -> None:
    objects = fresh_root / "var" / "objects"
    with _tmpfs(objects, "256m"), running_daemon(fresh_root, pipeline=ONE_ATTEMPT) as d:
        # Read-only binds root as well (file modes do not: the tests run as root).
        _survive(d, "local store read-only mid-load", 92, lambda: _remount(objects, "ro"),
                 lambda: _remount(objects, "rw"))


def test_a_full_disk_mid_load_costs_451s_and_nothing_is_lost(fresh_root: Path) -> None:
    objects = fresh_root / "var" / "objects"
    with _tmpfs(objects, "48m"), running_daemon(fresh_root, pipeline=ONE_ATTEMPT) as d:
        filler = objects / "filler"

        def fill() -> None:
            # Everything the mount has left, in one file the daemon knows nothing of. Unbuffered
            # and inside the suppress: a buffered file's close would retry the failed flush.
            with contextlib.suppress(OSError), filler.open("wb", buffering=0) as f:
                while True:
                    f.write(b"\0" * (1 << 20))

        _survive(d, "disk full mid-load", 93, fill, filler.unlink)


# The database.

def test_sqlite_locked_past_its_timeout_mid_load_costs_451s_then_service(
        fresh_root: Path) -> None:
    with running_daemon(fresh_root, extra='[database]\nbusy_timeout = "0.5s"') as d:
        holder: list[sqlite3.Connection] = []

        def lock() -> None:
            db = sqlite3.connect(fresh_root / "var" / "postroom.db", timeout=10)
            db.execute("BEGIN EXCLUSIVE")  # every writer of the daemon waits, then gives up
            holder.append(db)

        def unlock() -> None:
            holder[0].rollback()
            holder[0].close()

        _survive(d, "SQLite locked mid-load", 94, lock, unlock)


@pytest.mark.serial  # stops the machine's PostgreSQL: no other test may use it meanwhile
def test_postgresql_stopped_mid_load_costs_451s_then_service_without_a_restart(
        pg: PgServer, tmp_path: Path) -> None:
    url = pg.new_database()
    with running_daemon(tmp_path, extra=f'[database]\nurl = "{url}"\n') as d:
        def start() -> None:
            control_cluster("start")
            pg.check()

        _survive(d, "PostgreSQL stopped mid-load", 95, lambda: control_cluster("stop"), start)


# The daemon itself.

def test_kill_9_at_random_moments_under_load_loses_and_duplicates_nothing(
        fresh_root: Path) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"kill -9 moments drawn with seed {seed}")  # shown with a failure, to replay it
    fresh_root.mkdir(parents=True)
    config = write_config(fresh_root)
    current: dict[str, Daemon] = {"daemon": start_daemon(fresh_root, config)}
    rounds = 4
    load = make_load(RCPT, 240, rng)
    # Random moments, spread over the load: the daemon dies once that many messages are in.
    moments = sorted(rng.sample(range(20, len(load) - 20), rounds))
    try:
        key = current["daemon"].add_agent("fault", RCPT)["api_key"]
        relay = Relay(load, RCPT, port_of(current), senders=8, retry_pause=0.1).start()
        for moment in moments:
            _until(lambda m=moment: relay.accepted() >= m, 120, f"{moment} messages in")
            victim = current.pop("daemon")
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait(10)
            victim.close_pipes()
            current["daemon"] = start_daemon(fresh_root, config)
        d = current["daemon"]
        _finish(d, key, relay)
        attempts = _attempts(fresh_root)
    finally:
        if "daemon" in current:
            assert current["daemon"].stop() == 0
    # A transaction the kill cut short (not one refused while the daemon was down): its 250, if
    # it was about to come, was lost, and the relay's retry must find the same message.
    cut = [t for t in relay.transactions if t.error in (
        "SMTPServerDisconnected", "ConnectionResetError", "BrokenPipeError")]
    print(f"\nkill -9 x{rounds} under load at {moments} (seed {seed}): {relay.codes()}; "
          f"{len(cut)} transactions cut short; "
          f"{sum(1 for a in attempts if a > 1)} messages extracted more than once")
    assert cut, "no kill landed during a transaction"
    figures.add("faults survived", rounds)
    figures.add("messages accepted under faults", relay.accepted())


def _attempts(root: Path) -> list[int]:
    with sqlite3.connect(root / "var" / "postroom.db") as db:
        return [int(r[0]) for r in db.execute("SELECT attempts FROM messages")]
