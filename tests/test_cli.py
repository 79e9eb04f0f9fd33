"""The command line against a live daemon: agents appear, rotate and vanish without a restart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from storage.db import head_revision
from tests.harness import Daemon, database_section, running_daemon, write_config
from tests.mail import plain


def test_agent_added_while_running_is_accepted_within_5_seconds(daemon: Daemon) -> None:
    assert daemon.rcpt_code("late@agents.test") == 550
    out = daemon.cli("agent", "add", "late", "--address", "late@agents.test", "--json")
    info = json.loads(out.stdout)
    assert set(info) == {"id", "name", "addresses", "api_key", "pgp_fingerprint"}
    assert info["pgp_fingerprint"] is None
    assert info["name"] == "late" and info["addresses"] == ["late@agents.test"]
    # An agent added while the daemon runs takes effect within 5 s: the poll fails after them.
    daemon.wait_for(lambda: daemon.rcpt_code("late@agents.test") == 250, 5.0, "RCPT accepted")


def test_agent_list_shows_agents_without_keys(daemon: Daemon, alice: dict[str, Any]) -> None:
    listed = json.loads(daemon.cli("agent", "list", "--json").stdout)
    mine = next(a for a in listed if a["name"] == "alice")
    assert mine["id"] == alice["id"] and mine["addresses"] == ["alice@agents.test"]
    assert "api_key" not in mine and alice["api_key"] not in json.dumps(listed)
    text = daemon.cli("agent", "list").stdout
    assert "alice@agents.test" in text


def test_rotate_key_invalidates_the_old_key(daemon: Daemon) -> None:
    dave = daemon.add_agent("dave", "dave@agents.test")
    rotated = json.loads(daemon.cli("agent", "rotate-key", "dave", "--json").stdout)
    assert rotated["api_key"] != dave["api_key"]
    old = httpx.get(f"{daemon.url}/v1/messages",
                    headers={"Authorization": f"Bearer {dave['api_key']}"})
    assert old.status_code == 401
    new = httpx.get(f"{daemon.url}/v1/messages",
                    headers={"Authorization": f"Bearer {rotated['api_key']}"})
    assert new.status_code == 200


def test_removed_agent_loses_its_addresses_and_key(daemon: Daemon) -> None:
    erin = daemon.add_agent("erin", "erin@agents.test")
    daemon.cli("agent", "remove", "erin")
    daemon.wait_for(lambda: daemon.rcpt_code("erin@agents.test") == 550, 5.0, "RCPT refused")
    r = httpx.get(f"{daemon.url}/v1/messages",
                  headers={"Authorization": f"Bearer {erin['api_key']}"})
    assert r.status_code == 401


def test_duplicate_agent_or_taken_address_is_refused(daemon: Daemon,
                                                     alice: dict[str, Any]) -> None:
    before = json.loads(daemon.cli("agent", "list", "--json").stdout)
    same_name = daemon.cli("agent", "add", "alice", "--address", "x@agents.test", check=False)
    assert same_name.returncode == 1, same_name  # refused (1), not a usage error (2)
    taken = daemon.cli("agent", "add", "other", "--address", "ALICE@agents.test", check=False)
    assert taken.returncode == 1, taken
    bad = daemon.cli("agent", "add", "bad", "--address", "not-an-address", check=False)
    assert bad.returncode == 1, bad
    assert json.loads(daemon.cli("agent", "list", "--json").stdout) == before  # nothing added
    assert daemon.rcpt_code("x@agents.test") == 550


def test_check_config_names_the_bad_key(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    d = Daemon(root=tmp_path, config_path=cfg, proc=None)  # type: ignore[arg-type]
    ok = d.cli("check-config", "--json")
    assert json.loads(ok.stdout)["ok"] is True
    cfg.write_text(cfg.read_text() + '\n[limits]\nmax_partz = 3\n')
    unknown = d.cli("check-config", check=False)
    assert unknown.returncode == 2 and "limits.max_partz" in unknown.stderr
    cfg.write_text(write_config(tmp_path).read_text().replace(
        'hostname = "mx.test.example"', 'hostname = "mx.test.example"\nmax_message_size = "lots"'))
    bad = d.cli("check-config", check=False)
    assert bad.returncode == 2 and "smtp.max_message_size" in bad.stderr


def test_serve_refuses_a_bad_config_naming_the_key(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, smtp='max_recipients = "many"')
    d = Daemon(root=tmp_path, config_path=cfg, proc=None)  # type: ignore[arg-type]
    out = d.cli("serve", check=False)
    assert out.returncode == 2 and "smtp.max_recipients" in out.stderr


def test_db_upgrade_is_idempotent(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, extra=database_section(upgraded=False))
    d = Daemon(root=tmp_path, config_path=cfg, proc=None)  # type: ignore[arg-type]
    head = head_revision()
    first = d.cli("db", "upgrade").stdout
    assert f"empty → {head}" in first
    assert f"{head} → {head}" in d.cli("db", "upgrade").stdout


def test_env_overrides_the_file(fresh_root: Path) -> None:
    env = {"POSTROOM_SMTP__MAX_RECIPIENTS": "1"}
    with running_daemon(fresh_root, env=env) as d:
        d.add_agent("a", "*@t.test")
        with d.smtp() as s:
            s.ehlo("c")
            s.mail("s@example.org")
            assert s.rcpt("1@t.test")[0] == 250
            assert s.rcpt("2@t.test")[0] == 452


def test_logs_are_json_events_without_content_or_keys(daemon: Daemon,
                                                      alice: dict[str, Any]) -> None:
    secret_text = "the-body-must-never-be-logged-7d1f"
    msg_id = daemon.send(plain("alice@agents.test", text=secret_text, subject="secret-subj-9x"),
                         ["alice@agents.test"])
    daemon.wait_message(alice["api_key"], msg_id)
    tx = daemon.wait_for(lambda: [e for e in daemon.events("smtp.transaction")
                                  if e.get("message_id") == msg_id], 10, "the transaction")[0]
    assert {"peer", "size", "result", "duration_ms", "timestamp", "level"} <= set(tx)
    assert tx["result"] == "250" and tx["size"] > 0
    # The API may answer `ready` a moment before the worker's log line reaches our pipe.
    states = daemon.wait_for(lambda: [e for e in daemon.events("message.state")
                                      if e["message_id"] == msg_id], 10, "message.state logged")
    assert states[-1]["status"] == "ready"
    everything = json.dumps(daemon.logs)
    for secret in (secret_text, "secret-subj-9x", alice["api_key"]):
        assert secret not in everything
    assert all(e.get("event") != "unparsed" for e in daemon.logs)


def test_settings_that_cannot_work_stop_serve_and_check_config(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, smtp="require_tls = true")  # TLS required, no certificate
    d = Daemon(root=tmp_path, config_path=cfg, proc=None)  # type: ignore[arg-type]
    for command in ("serve", "check-config"):
        out = d.cli(command, check=False)
        assert out.returncode == 2, out
        assert "smtp.require_tls" in out.stderr  # the key to change, by name
        assert "Traceback" not in out.stderr


def test_agent_names_cannot_look_like_ids(daemon: Daemon) -> None:
    out = daemon.cli("agent", "add", "agt_fake", "--address", "f@agents.test", check=False)
    assert out.returncode == 1, out
    assert daemon.rcpt_code("f@agents.test") == 550  # not created
    gina = daemon.add_agent("gina", "gina@agents.test")
    removed = json.loads(daemon.cli("agent", "remove", gina["id"], "--json").stdout)
    assert removed["name"] == "gina"
