"""Configuration: sizes, durations, env overrides, path resolution, errors that name the key.

A refusal is asserted by its type and the keys its validation error records (`loc`), never by
the wording of its message."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError

from daemon.config import (
    ConfigError,
    load_config,
    parse_duration,
    parse_listen,
    parse_size,
)
from daemon.passwords import hash_password


@pytest.mark.parametrize(("text", "expected"), [
    ("10MB", 10_000_000), ("50MiB", 50 * 1024**2), ("1kB", 1000), ("2KiB", 2048),
    (1234, 1234), ("0", 0), ("1.5MiB", int(1.5 * 1024**2)),
])
def test_sizes_accept_units_and_integers(text: object, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["lots", "-1", "10XB", True, -5, ""])
def test_bad_sizes_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_size(bad)


@pytest.mark.parametrize(("text", "expected"), [
    ("15m", 900.0), ("30s", 30.0), ("250ms", 0.25), ("2h", 7200.0), (5, 5.0), ("1d", 86400.0),
])
def test_durations(text: object, expected: float) -> None:
    assert parse_duration(text) == expected


def test_listen_parses_ipv4_and_ipv6() -> None:
    assert parse_listen("127.0.0.1:2525") == ("127.0.0.1", 2525)
    assert parse_listen("[::1]:25") == ("::1", 25)
    with pytest.raises(ValueError):
        parse_listen("::1:25")
    with pytest.raises(ValueError):
        parse_listen("host:99999")


def test_defaults_without_a_file_match_the_spec() -> None:
    c = load_config(None, env={})
    assert c.smtp.listen == ["127.0.0.1:2525"]
    assert c.smtp.max_message_size == 50 * 1024**2
    assert c.smtp.max_recipients == 100
    assert c.smtp.trusted_networks == ["127.0.0.0/8", "::1/128"]
    assert c.smtp.timeout == 300.0 and c.smtp.max_connections == 500
    assert c.http.listen == ["127.0.0.1:8025"]
    assert c.storage.presign_ttl == 900.0
    assert c.limits.max_attachment_size == 40 * 1024**2
    assert (c.limits.max_parts, c.limits.max_depth) == (1000, 32)
    assert c.uploads.max_bytes == 10 * 1024**2
    assert c.retention.days == 30
    assert (c.auth.enabled, c.auth.dns_servers, c.auth.dns_timeout,
            c.auth.trusted_authserv_ids) == (True, [], 2.0, [])


def test_relative_paths_resolve_against_the_files_folder(tmp_path: Path) -> None:
    cfg = tmp_path / "conf" / "postroom.toml"
    cfg.parent.mkdir()
    cfg.write_text('[storage]\npath = "data/objects"\n[database]\n'
                   'url = "sqlite+aiosqlite:///state/p.db"\n')
    c = load_config(cfg, env={})
    assert c.storage.path == tmp_path / "conf" / "data" / "objects"
    assert c.database.url == f"sqlite+aiosqlite:///{tmp_path}/conf/state/p.db"
    assert c.storage.signing_key_file == tmp_path / "conf" / "var" / "signing.key"


def test_environment_overrides_file_values(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[smtp]\nmax_recipients = 5\n')
    env = {"POSTROOM_SMTP__MAX_RECIPIENTS": "7",
           "POSTROOM_SMTP__TRUSTED_NETWORKS": '["10.0.0.0/8"]',
           "POSTROOM_SMTP__PROXY_PROTOCOL": "true", "UNRELATED": "x"}
    c = load_config(cfg, env=env)
    assert c.smtp.max_recipients == 7
    assert c.smtp.trusted_networks == ["10.0.0.0/8"]
    assert c.smtp.proxy_protocol is True


def test_config_env_variable_names_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[smtp]\nmax_recipients = 9\n')
    assert load_config(None, env={"POSTROOM_CONFIG": str(cfg)}).smtp.max_recipients == 9


def test_dns_servers_take_an_address_and_an_optional_port(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[auth]\ndns_servers = ["127.0.0.1:5353", "::1", "[::1]:53", "9.9.9.9"]\n'
                   'dns_timeout = "500ms"\ntrusted_authserv_ids = ["mx.example.org"]\n')
    c = load_config(cfg, env={})
    assert c.auth.dns_servers == ["127.0.0.1:5353", "::1", "[::1]:53", "9.9.9.9"]
    assert (c.auth.dns_timeout, c.auth.trusted_authserv_ids) == (0.5, ["mx.example.org"])


@pytest.mark.parametrize(("toml", "key"), [
    ('[smtp]\nmax_recipientz = 5\n', "smtp.max_recipientz"),
    ('[smtpp]\nx = 1\n', "smtpp"),
    ('[smtp]\nmax_message_size = "huge"\n', "smtp.max_message_size"),
    ('[smtp]\ntrusted_networks = ["not-a-net"]\n', "smtp.trusted_networks"),
    ('[smtp]\nlisten = "nowhere"\n', "smtp.listen"),
    ('[smtp]\nprotocol = "uucp"\n', "smtp.protocol"),
    ('[storage]\npresign_ttl = "soon"\n', "storage.presign_ttl"),
    ('[limits]\nmax_parts = 0\n', "limits.max_parts"),
    ('[[agents]]\nname = "x"\n', "agents.0.addresses"),
    ('[auth]\nnice = 20\n', "auth.nice"),
    ('[[agents]]\nname = "x"\naddresses = ["x@y.test"]\naccept = "some"\n', "agents.0.accept"),
    ('[smtp]\ntimeout = 0\n', "smtp.timeout"),
    ('[smtp]\nmax_message_size = 0\n', "smtp.max_message_size"),
    ('[pipeline]\nlease = "0s"\n', "pipeline.lease"),
    ('[pipeline]\nsweep_interval = 0\n', "pipeline.sweep_interval"),
    ('[storage]\nsigning_key = "short"\n', "storage.signing_key"),
    ('[http]\nmax_body = 10\n', "http.max_body"),
    ('[database]\nurl = "mysql://db/x"\n', "database.url"),
    ('[database]\nurl = "postgresql"\n', "database.url"),
    ('[database]\npool_size = 1\n', "database.pool_size"),
    ('[auth]\ndns_servers = ["resolver.example"]\n', "auth.dns_servers.0"),
    ('[auth]\ndns_servers = ["127.0.0.1:99999"]\n', "auth.dns_servers.0"),
    ('[auth]\ndns_timeout = 0\n', "auth.dns_timeout"),
    ('[auth]\nauthserv_id = "a b"\n', "auth.authserv_id"),
])
def test_errors_name_the_offending_key(tmp_path: Path, toml: str, key: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_config(cfg, env={})
    assert _refused_keys(err.value) == {key}


def _refused_keys(error: ConfigError) -> set[str]:
    """The dotted keys the validation behind `error` found wrong."""
    cause = error.__cause__
    assert isinstance(cause, ValidationError), repr(cause)
    return {".".join(str(part) for part in e["loc"]) for e in cause.errors()}


def test_not_toml_and_missing_file_are_clear_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[smtp\n")
    with pytest.raises(ConfigError) as err:
        load_config(cfg, env={})
    assert isinstance(err.value.__cause__, tomllib.TOMLDecodeError)
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "absent.toml", env={})
    assert isinstance(err.value.__cause__, FileNotFoundError)


def test_only_the_named_agent_key_variables_are_kept(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[[agents]]\nname = "a"\naddresses = ["a@x.test"]\napi_key_env = "A_KEY"\n')
    c = load_config(cfg, env={"A_KEY": "pr_secret", "AWS_SECRET_ACCESS_KEY": "nope"})
    assert c.agent_keys == {"A_KEY": "pr_secret"}
    assert "pr_secret" not in repr(c)


def test_the_smtp_settings_are_all_honoured(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"""[smtp]
protocol = "lmtp"
tls_cert = "c.pem"
tls_key = "k.pem"
require_tls = true
proxy_protocol = true
proxy_protocol_timeout = "2s"
[smtp.auth_users]
relay = "{hash_password('pw', n=1024)}"
""")
    c = load_config(cfg, env={})
    assert (c.smtp.tls_cert, c.smtp.tls_key) == (tmp_path / "c.pem", tmp_path / "k.pem")
    assert c.smtp.proxy_protocol_timeout == 2.0 and c.smtp.auth_users is not None
    assert "scrypt" not in repr(c)


@pytest.mark.parametrize(("toml", "named"), [
    ('tls_cert = "c.pem"', "smtp.tls_key"),
    ('tls_key = "k.pem"', "smtp.tls_key"),  # the pair is checked as one, at tls_key
    ("require_tls = true", "smtp.require_tls"),
    ('[smtp.auth_users]\nrelay = "RIGHT"', "smtp.auth_users"),  # without TLS
    ('tls_cert = "c"\ntls_key = "k"\n[smtp.auth_users]\nrelay = "hunter2"', "smtp.auth_users"),
    ('tls_cert = "c"\ntls_key = "k"\nauth_users = {}', "smtp.auth_users"),
    ('proxy_protocol_timeout = "0s"', "smtp.proxy_protocol_timeout"),
])
def test_tls_auth_and_proxy_settings_that_cannot_work_are_refused(
        tmp_path: Path, toml: str, named: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[smtp]\n" + toml.replace("RIGHT", hash_password("pw", n=1024)) + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(cfg, env={})
    assert _refused_keys(err.value) == {named}
    assert "hunter2" not in str(err.value)  # a password pasted in place of its hash is not shown


def test_s3_needs_a_bucket_and_takes_a_clean_prefix(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[storage]\nbackend = "s3"\n')
    with pytest.raises(ConfigError) as err:
        load_config(cfg, env={})
    assert _refused_keys(err.value) == {"storage.bucket"}
    for prefix, key_prefix in [("", ""), ("mail", "mail/"), ("a/b/", "a/b/")]:
        cfg.write_text(f'[storage]\nbackend = "s3"\nbucket = "b1"\nprefix = "{prefix}"\n')
        c = load_config(cfg, env={})
        assert c.storage.key_prefix == key_prefix
        assert c.storage.spool_path == tmp_path / "var" / "spool"
    for prefix in ("../x", "/abs", "a//b", "a b"):
        cfg.write_text(f'[storage]\nbackend = "s3"\nbucket = "b1"\nprefix = "{prefix}"\n')
        with pytest.raises(ConfigError) as err:
            load_config(cfg, env={})
        assert _refused_keys(err.value) == {"storage.prefix"}


def test_the_shipped_config_loads_and_lets_webhooks_reach_local_agents() -> None:
    shipped = Path(__file__).resolve().parents[1] / "config.toml"
    assert load_config(shipped, env={}).webhooks.allow_private_networks


def test_webhook_settings_take_durations_and_bounds(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[webhooks]\ntimeout = "3s"\ndisable_after = "1h"\nretries = ["1s", "2m"]\n')
    w = load_config(cfg, env={}).webhooks
    assert (w.timeout, w.disable_after, w.retries, w.allow_private_networks) == (
        3.0, 3600.0, [1.0, 120.0], False)
    assert load_config(None, env={}).webhooks.retries == [
        5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]  # SPEC §14's schedule
    for bad, key in [('timeout = "0s"', "webhooks.timeout"), ("per_endpoint = 0",
                     "webhooks.per_endpoint"), ('retries = ["soon"]', "webhooks.retries.0")]:
        cfg.write_text(f"[webhooks]\n{bad}\n")
        with pytest.raises(ConfigError) as err:
            load_config(cfg, env={})
        assert _refused_keys(err.value) == {key}


def test_database_urls_get_their_async_driver(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    for given, meant in (
            ("postgresql://postroom@db:5432/mail", "postgresql+asyncpg://postroom@db:5432/mail"),
            ("postgres://db/mail", "postgresql+asyncpg://db/mail"),
            ("postgresql+asyncpg://db/mail", "postgresql+asyncpg://db/mail"),
            ("sqlite:////srv/p.db", "sqlite+aiosqlite:////srv/p.db")):
        cfg.write_text(f'[database]\nurl = "{given}"\npool_size = 20\n')
        c = load_config(cfg, env={})
        assert c.database.url == meant
        assert c.database.pool_size == 20
        assert c.is_sqlite == meant.startswith("sqlite")


def test_content_settings_take_sizes_durations_and_bounds(tmp_path: Path) -> None:
    c = load_config(None, env={}).content  # SPEC §15's defaults, and postroom's own
    assert (c.max_text_chars, c.max_pages, c.timeout) == (1_000_000, 500, 10.0)
    assert (c.max_file_size, c.max_memory, c.max_unpacked) == (50 * 1024**2, 1024**3,
                                                               200 * 1024**2)
    assert (c.processes, c.index_chars) == (2, 100_000)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[content]\nmax_text_chars = 5000\nmax_pages = 3\ntimeout = "250ms"\n'
                   'max_file_size = "1MiB"\nmax_memory = "512MiB"\nprocesses = 1\n')
    c = load_config(cfg, env={}).content
    assert (c.max_text_chars, c.max_pages, c.timeout, c.max_file_size, c.max_memory,
            c.processes) == (5000, 3, 0.25, 1024**2, 512 * 1024**2, 1)
    for bad, key in [("max_text_chars = 0", "content.max_text_chars"),
                     ("max_pages = 0", "content.max_pages"),
                     ('timeout = "0s"', "content.timeout"),
                     ('max_memory = "64MiB"', "content.max_memory"),  # below 256 MiB
                     ("processes = 0", "content.processes"),
                     ("max_textchars = 1", "content.max_textchars")]:
        cfg.write_text(f"[content]\n{bad}\n")
        with pytest.raises(ConfigError) as err:
            load_config(cfg, env={})
        assert _refused_keys(err.value) == {key}
