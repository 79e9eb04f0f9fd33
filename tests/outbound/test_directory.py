"""The directory of peers (SPEC §12) through the real daemon: `postroom directory add|list|remove`
and `GET /v1/directory/{address}` for local agents and registered external addresses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.harness import Daemon
from tests.pgpkeys import make_key


def test_an_external_address_registered_with_a_key_is_found_with_it(
        daemon: Daemon, alice: dict[str, Any], tmp_path: Path) -> None:
    key = make_key("peer@partner.test")
    key_file = tmp_path / "peer.asc"
    key_file.write_text(key.public)
    added = json.loads(daemon.cli("directory", "add", "Peer@Partner.test", "--pgp-key",
                                  str(key_file), "--json").stdout)
    assert added == {"address": "peer@partner.test", "local": False,
                     "fingerprint": key.fingerprint}
    with daemon.api(alice["api_key"]) as api:
        found = api.get("/v1/directory/peer@partner.test").json()
        assert found["local"] is False and found["fingerprint"] == key.fingerprint
        assert "BEGIN PGP PUBLIC KEY BLOCK" in found["openpgp_public_key"]
        listed = json.loads(daemon.cli("directory", "list", "--json").stdout)
        assert [p["address"] for p in listed] == ["peer@partner.test"]
        daemon.cli("directory", "remove", "peer@partner.test")
        assert api.get("/v1/directory/peer@partner.test").status_code == 404


def test_a_local_agent_is_local_and_an_unknown_address_is_404(
        daemon: Daemon, alice: dict[str, Any], bob: dict[str, Any]) -> None:
    with daemon.api(alice["api_key"]) as api:
        for address in ("bob@agents.test", "anyone@bob.test", "alice+tag@agents.test"):
            found = api.get(f"/v1/directory/{address}").json()
            assert found["local"] is True and found["openpgp_public_key"] is None, address
        r = api.get("/v1/directory/stranger@nowhere.test")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    with daemon.api("not-a-key") as api:
        assert api.get("/v1/directory/bob@agents.test").status_code == 401


def test_a_local_address_cannot_be_registered_as_external(daemon: Daemon,
                                                          bob: dict[str, Any]) -> None:
    done = daemon.cli("directory", "add", "bob@agents.test", check=False)
    assert done.returncode == 1
    assert daemon.cli("directory", "remove", "nobody@x.test", check=False).returncode == 1
