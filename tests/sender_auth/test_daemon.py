"""Sender authentication in the running daemon (SPEC §13): mail over SMTP from 127.0.0.1, the
test domains served by the loopback DNS server, the verdict on the message, in the list's
`?verdict=` and on message.received; DNS that never answers gives temperror, not a stuck
message; `auth.enabled = false` verifies nothing and still announces every message."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dnsserver import RunningDns, fq
from tests.harness import Daemon, process_tree, running_daemon
from tests.sender_auth.conftest import Keys
from tests.sender_auth.mail import message, sign

pytestmark = pytest.mark.e2e
AUTHSERV = "mx.postroom.test"


@pytest.fixture(scope="module")
def d(dns_server: RunningDns, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    extra = (f'[auth]\ndns_servers = ["{dns_server.address}"]\ndns_timeout = "300ms"\n'
             f'authserv_id = "{AUTHSERV}"\n')
    with running_daemon(tmp_path_factory.mktemp("auth"), extra=extra) as daemon:
        yield daemon


def _send(d: Daemon, raw: bytes, rcpt: str, mail_from: str = "bounce@example.test",
          helo: str = "mail.example.test") -> str:
    with d.smtp() as s:
        s.ehlo(helo)
        s.mail(mail_from)
        assert s.rcpt(rcpt)[0] == 250
        code, reply = s.data(raw)
    assert code == 250, reply
    return reply.decode().split()[-1]


def _agent(d: Daemon) -> tuple[str, str]:
    address = f"a{os.urandom(4).hex()}@agents.test"
    return address, str(d.add_agent(address.split("@")[0], address)["api_key"])


def _events(d: Daemon, key: str) -> list[dict[str, Any]]:
    with d.api(key) as api:
        return list(api.get("/v1/events").json()["events"])


def test_a_signed_message_from_an_aligned_domain_passes(d: Daemon, keys: Keys) -> None:
    rcpt, key = _agent(d)
    raw = sign(message(), keys.rsa, "rsa")
    message_id = _send(d, raw, rcpt)
    view = d.wait_message(key, message_id)
    auth = view["authentication"]
    assert auth["verdict"] == "pass" == view["verdict"]
    assert auth["spf"]["result"] == "pass" and auth["spf"]["domain"] == "example.test"
    assert [(s["result"], s["domain"], s["selector"]) for s in auth["dkim"]] == [
        ("pass", "example.test", "rsa")]
    assert auth["dmarc"] == {"result": "pass", "policy": "reject", "domain": "example.test"}
    assert auth["header"].startswith(f"{AUTHSERV}; spf=pass")
    received = [e for e in _events(d, key) if e["type"] == "message.received"]
    assert [(e["message_id"], e["verdict"]) for e in received] == [(message_id, "pass")]
    # The stored raw message is the one received (with our Received line only).
    with d.api(key) as api:
        link = api.post(f"/v1/messages/{message_id}/raw/download").json()["url"]
    stored = httpx.get(link).content
    assert stored.endswith(raw) and b"Authentication-Results" not in stored


def test_a_forged_from_fails_and_the_list_filters_on_the_verdict(d: Daemon, keys: Keys) -> None:
    rcpt, key = _agent(d)
    good = _send(d, sign(message(), keys.rsa, "rsa"), rcpt)
    # From the CEO's domain, but unsigned and through a server of another domain (whose SPF
    # does not list this client): nothing aligned passes, and example.test says p=reject.
    forged = _send(d, message(), rcpt, mail_from="x@soft.test")
    for m in (good, forged):
        d.wait_message(key, m)
    with d.api(key) as api:
        view = api.get(f"/v1/messages/{forged}").json()
        assert view["verdict"] == "fail"
        assert view["authentication"]["spf"] == {"result": "softfail", "domain": "soft.test",
                                                 "helo": view["authentication"]["spf"]["helo"]}
        assert view["authentication"]["dmarc"]["result"] == "fail"
        assert view["authentication"]["dmarc"]["policy"] == "reject"
        passed = api.get("/v1/messages", params={"verdict": "pass"}).json()["messages"]
        failed = api.get("/v1/messages", params={"verdict": "fail"}).json()["messages"]
        assert [m["id"] for m in passed] == [good]
        assert [m["id"] for m in failed] == [forged]
        assert api.get("/v1/messages", params={"verdict": "maybe"}).status_code == 422


def test_dns_that_never_answers_gives_temperror_not_a_stuck_message(
        d: Daemon, dns_server: RunningDns) -> None:
    rcpt, key = _agent(d)
    dns_server.zone.drop.update({fq("dead.test"), fq("_dmarc.dead.test")})
    message_id = _send(d, message(frm="ceo@dead.test"), rcpt, mail_from="x@dead.test")
    view = d.wait_message(key, message_id)
    assert view["status"] == "ready"
    assert view["authentication"]["spf"]["result"] == "temperror"
    assert view["verdict"] == "temperror"


def test_verification_off_still_announces_every_message(fresh_root: Any) -> None:
    with running_daemon(fresh_root, extra="[auth]\nenabled = false\n") as d:
        rcpt, key = _agent(d)
        message_id = _send(d, message(), rcpt)
        view = d.wait_message(key, message_id)
        assert (view["authentication"], view["verdict"]) == (None, None)
        received = [e for e in _events(d, key) if e["type"] == "message.received"]
        assert [(e["message_id"], e["verdict"]) for e in received] == [(message_id, None)]


def test_the_authentication_object_has_the_specs_fields(d: Daemon, keys: Keys) -> None:
    rcpt, key = _agent(d)
    message_id = _send(d, sign(message(), keys.ed, "ed"), rcpt)
    auth = d.wait_message(key, message_id)["authentication"]
    assert set(auth) == {"spf", "dkim", "dmarc", "arc", "verdict", "header"}
    assert {"result", "domain"} <= set(auth["spf"])
    assert all(set(s) >= {"result", "domain", "selector"} for s in auth["dkim"])
    assert set(auth["dmarc"]) == {"result", "policy", "domain"} and set(auth["arc"]) == {"result"}
    json.dumps(auth)  # plain JSON


def test_an_agent_accepting_authenticated_mail_sees_the_rest_only_on_request(
        d: Daemon, keys: Keys) -> None:
    rcpt, key = _agent(d)
    name = rcpt.split("@")[0]
    assert json.loads(d.cli("agent", "set", name, "--accept", "authenticated",
                            "--json").stdout)["accept"] == "authenticated"
    good = _send(d, sign(message(), keys.rsa, "rsa"), rcpt)
    forged = _send(d, message(), rcpt, mail_from="x@soft.test")
    # Mail from another agent of this postroom is authenticated by that agent's key.
    sender = d.add_agent(f"s{os.urandom(3).hex()}", f"s{os.urandom(3).hex()}@agents.test")
    with d.api(sender["api_key"]) as api:
        sent = api.post("/v1/messages", json={"to": [rcpt], "subject": "from a colleague",
                                              "text": "hi"})
        assert sent.status_code == 202, sent.text
    for m in (good, forged):
        d.wait_message(key, m)
    with d.api(key) as api:
        def listed(**params: str) -> list[str]:
            return [m["id"] for m in api.get("/v1/messages", params=params).json()["messages"]]

        local = d.wait_for(lambda: [m for m in listed() if m not in (good, forged)], 20,
                           "the colleague's message")
        assert listed() == [good, *local]
        assert listed(include="quarantined") == [good, forged, *local]
        view = api.get(f"/v1/messages/{local[0]}").json()
        assert view["verdict"] == "pass" and "auth=pass" in view["authentication"]["header"]
        # Quarantined mail is still there by id, and its events only on request.
        assert api.get(f"/v1/messages/{forged}").json()["verdict"] == "fail"
        shown = {e["message_id"] for e in api.get("/v1/events").json()["events"]}
        assert forged not in shown and good in shown
        every = {e["message_id"] for e in api.get(
            "/v1/events", params={"include": "quarantined", "limit": 500}).json()["events"]}
        assert {good, forged} <= every
    d.cli("agent", "set", name, "--accept", "all")
    with d.api(key) as api:
        assert forged in [m["id"] for m in api.get("/v1/messages").json()["messages"]]


def test_accept_in_config_toml_is_set_at_every_start_and_kept_without_it(
        fresh_root: Any) -> None:
    key = "pr_" + "c" * 40
    agent = '\n[[agents]]\nname = "cfg"\naddresses = ["cfg@agents.test"]\napi_key_env = "K"\n'

    def accept(d: Daemon) -> str:
        listed = json.loads(d.cli("agent", "list", "--json").stdout)
        return str(next(a["accept"] for a in listed if a["name"] == "cfg"))

    for declared, expected in (('accept = "authenticated"\n', "authenticated"),
                               ('accept = "all"\n', "all"), ("", "all")):
        with running_daemon(fresh_root, extra=agent + declared, env={"K": key}) as d:
            assert accept(d) == expected
            if not declared:  # without the key, the CLI's setting stays over restarts
                d.cli("agent", "set", "cfg", "--accept", "authenticated")
    with running_daemon(fresh_root, extra=agent, env={"K": key}) as d:
        assert accept(d) == "authenticated"


def test_mail_encrypted_at_rest_is_verified_while_its_plaintext_is_here(
        d: Daemon, keys: Keys) -> None:
    from tests.pgpkeys import make_key

    address = f"k{os.urandom(4).hex()}@agents.test"
    key_file = d.root / f"{address}.asc"
    key_file.write_text(make_key(f"K <{address}>").public)
    added = json.loads(d.cli("agent", "add", address.split("@")[0], "--address", address,
                             "--pgp-key", str(key_file), "--json").stdout)
    d.wait_for(lambda: d.rcpt_code(address) == 250, 5.0, f"RCPT of {address}")
    good = _send(d, sign(message(), keys.rsa, "rsa"), address)
    forged = _send(d, message(), address, mail_from="x@soft.test")
    key = str(added["api_key"])
    views = {m: d.wait_message(key, m) for m in (good, forged)}
    assert all(v["encryption"]["recipients"] for v in views.values())  # stored as ciphertext
    assert [views[m]["verdict"] for m in (good, forged)] == ["pass", "fail"]
    assert views[good]["authentication"]["dkim"][0]["result"] == "pass"
    received = {e["message_id"]: e["verdict"] for e in _events(d, key)
                if e["type"] == "message.received"}
    assert received == {good: "pass", forged: "fail"}


def _verifier_pids(d: Daemon) -> list[int]:
    def cmdline(pid: int) -> bytes:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return b""

    return [p for p in process_tree(d.proc.pid) if b"daemon.sender_auth.worker" in cmdline(p)]


def test_a_killed_verifier_costs_a_retry_and_the_next_one_verifies(
        d: Daemon, keys: Keys) -> None:
    rcpt, key = _agent(d)
    before = _verifier_pids(d)
    assert len(before) == 1  # one verifier process beside the daemon, at nice 10
    assert int(Path(f"/proc/{before[0]}/stat").read_text().rsplit(")", 1)[1].split()[16]) == 10
    os.kill(before[0], signal.SIGKILL)
    message_id = _send(d, sign(message(), keys.rsa, "rsa"), rcpt)
    view = d.wait_message(key, message_id, timeout=30)
    assert view["verdict"] == "pass" and view["status"] == "ready"
    after = _verifier_pids(d)
    assert len(after) == 1 and after != before
