"""The sections of the configuration (SPEC §3), each a frozen model that refuses unknown keys."""

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from daemon.config.units import (
    Duration,
    PositiveDuration,
    PositiveSize,
    Size,
    _listen_list,
    parse_duration,
    parse_size,
)
from daemon.passwords import parse_hash


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SmtpConfig(_Section):
    listen: Annotated[list[str], BeforeValidator(_listen_list)] = ["127.0.0.1:2525"]
    protocol: Literal["smtp", "lmtp"] = "smtp"
    hostname: str = Field(default_factory=socket.getfqdn)
    max_message_size: PositiveSize = 50 * 1024**2
    max_recipients: int = Field(default=100, ge=1)
    trusted_networks: list[str] = ["127.0.0.0/8", "::1/128"]
    tls_cert: Path | None = None
    tls_key: Path | None = Field(default=None, validate_default=True)
    require_tls: bool = False
    auth_users: dict[str, str] | None = Field(default=None, repr=False)
    proxy_protocol: bool = False
    # Beyond SPEC §3: how long a connection may take to send its PROXY header.
    proxy_protocol_timeout: PositiveDuration = 5.0
    timeout: PositiveDuration = 300.0
    max_connections: int = Field(default=500, ge=1)
    # Beyond SPEC §3: how long SIGTERM lets transactions in DATA finish before 421 4.3.2.
    drain_timeout: PositiveDuration = 30.0
    # A message larger than this is spooled to a file while it arrives instead of held in memory.
    spool_threshold: Size = 256 * 1024

    @field_validator("trusted_networks")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for net in v:
            ipaddress.ip_network(net, strict=False)
        return v

    @field_validator("tls_key")
    @classmethod
    def _cert_and_key_together(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        if (v is None) != (info.data.get("tls_cert") is None) and "tls_cert" in info.data:
            raise PydanticCustomError(
                "tls_pair", "smtp.tls_cert and smtp.tls_key are set together (STARTTLS needs both)")
        return v

    @field_validator("require_tls")
    @classmethod
    def _tls_to_require(cls, v: bool, info: ValidationInfo) -> bool:
        if v and info.data.get("tls_key") is None:
            raise PydanticCustomError("tls_needed", "needs smtp.tls_cert and smtp.tls_key")
        return v

    @field_validator("auth_users")
    @classmethod
    def _password_hashes(cls, v: dict[str, str] | None, info: ValidationInfo
                         ) -> dict[str, str] | None:
        if v is None:
            return v
        if info.data.get("tls_key") is None:
            raise PydanticCustomError("tls_needed", "needs smtp.tls_cert and smtp.tls_key "
                                      "(AUTH is offered over TLS only)")
        if not v:
            raise PydanticCustomError("empty", "no users: remove the table or add one")
        for user, line in v.items():
            try:
                parse_hash(line)
            except ValueError as e:
                # The message never repeats the value: it may be a password pasted by mistake.
                raise PydanticCustomError("password_hash", "{user}: {reason}",
                                          {"user": user, "reason": str(e)}) from None
        return v


class HttpConfig(_Section):
    listen: Annotated[list[str], BeforeValidator(_listen_list)] = ["127.0.0.1:8025"]
    public_url: str = "http://127.0.0.1:8025"
    max_wait: Duration = 30.0
    max_body: Annotated[int, BeforeValidator(parse_size), Field(ge=1024)] = 64 * 1024


class DatabaseConfig(_Section):
    url: str = "sqlite+aiosqlite:///var/postroom.db"
    # How long a writer waits for SQLite's lock (or a pool connection) before we answer 451.
    busy_timeout: PositiveDuration = 5.0
    # PostgreSQL: connections each node keeps open; a writer waiting longer than busy_timeout
    # for one gets 451, never a hang.
    pool_size: int = Field(default=10, ge=2, le=500)

    @field_validator("url")
    @classmethod
    def _driver(cls, url: str) -> str:
        """SQLite through aiosqlite or PostgreSQL through asyncpg; a bare `postgresql://` (or
        `postgres://`) URL gets the asyncpg driver, `sqlite://` aiosqlite."""
        scheme, sep, rest = url.partition("://")
        if not sep:
            raise ValueError("expected a URL such as postgresql+asyncpg://user@host/db")
        driver = {"postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg",
                  "postgresql+asyncpg": "postgresql+asyncpg", "sqlite": "sqlite+aiosqlite",
                  "sqlite+aiosqlite": "sqlite+aiosqlite"}.get(scheme.lower())
        if driver is None:
            raise ValueError(f"unsupported database {scheme!r}: use postgresql+asyncpg://… "
                             "or sqlite+aiosqlite:///…")
        return f"{driver}://{rest}"


class StorageConfig(_Section):
    backend: Literal["local", "s3"] = "local"
    path: Path = Path("var/objects")
    # S3: objects live in `bucket` under `prefix`; credentials come from the AWS chain only.
    bucket: str | None = Field(default=None, validate_default=True,
                               pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]{1,254}$")
    endpoint_url: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(/\S*)?$")
    region: str | None = None
    prefix: str = Field(default="",
                        pattern=r"^([A-Za-z0-9_][A-Za-z0-9_.\-]*(/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*/?)?$")
    # Where bytes on their way to S3 wait on local disk (the local store spools under its root).
    spool_path: Path = Path("var/spool")
    presign_ttl: Annotated[float, BeforeValidator(parse_duration), Field(ge=1)] = 900.0
    signing_key: str | None = Field(default=None, min_length=32, repr=False)
    signing_key_file: Path = Path("var/signing.key")

    @field_validator("bucket")
    @classmethod
    def _s3_needs_a_bucket(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None and info.data.get("backend") == "s3":
            raise PydanticCustomError("missing", 'required when storage.backend = "s3"')
        return v

    @property
    def key_prefix(self) -> str:
        """`prefix` as prepended to every key: empty, or ending in exactly one "/"."""
        return self.prefix.rstrip("/") + "/" if self.prefix.strip("/") else ""


class LimitsConfig(_Section):
    max_attachment_size: PositiveSize = 40 * 1024**2
    max_parts: int = Field(default=1000, ge=1)
    max_depth: int = Field(default=32, ge=1)


class PipelineConfig(_Section):
    workers: int = Field(default=8, ge=1, le=256)
    extract_processes: int = Field(default=1, ge=0, le=64)
    queue_size: int = Field(default=10000, ge=1)
    lease: Annotated[float, BeforeValidator(parse_duration), Field(ge=1)] = 60.0
    sweep_interval: PositiveDuration = 5.0
    max_attempts: int = Field(default=5, ge=1)
    # Beyond SPEC §3: how long a message keeps waiting out an unavailable store or database
    # after its 250 before it is failed (Postfix's maximal_queue_lifetime is 5 days too).
    transient_retry_for: PositiveDuration = 5 * 86400.0
    # Beyond SPEC §3: while the oldest message still on its way to `ready` has been so for
    # longer, each MAIL reply waits for one message to finish (at most 3 × this, 30 s); 0: off.
    max_lag: Duration = 0.5
    dedupe_window: Duration = 7 * 86400.0
    directory_refresh: PositiveDuration = 2.0


class UploadsConfig(_Section):
    max_bytes: PositiveSize = 10 * 1024**2


class EncryptionConfig(_Section):
    at_rest: Literal["off", "when_key", "required"] = "when_key"
    gnupg_home: Path = Path("var/gnupg")
    # Beyond SPEC §3: the GnuPG binary (a name on PATH or a path) and how long one gpg run may
    # take before the delivery gets 451 or the job is retried.
    gpg: str = Field(default="gpg", min_length=1)
    gpg_timeout: PositiveDuration = 120.0


class RetentionConfig(_Section):
    days: int = Field(default=30, ge=0)
    # Beyond SPEC §3: how often each node purges (jittered between half and all of it).
    interval: PositiveDuration = 3600.0


class DkimSpec(_Section):
    domain: str = Field(min_length=1, max_length=253)
    selector: str = Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    key_file: Path
    algorithm: Literal["rsa-sha256", "ed25519-sha256"] = "rsa-sha256"


def _relay_url(value: object) -> object:
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(
            r"smtps?://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?/?", value):
        raise ValueError("expected smtp://host:port or smtps://host:port")
    return value


class OutboundConfig(_Section):
    """Sending (SPEC §12)."""

    relay: Annotated[str | None, BeforeValidator(_relay_url)] = None
    relay_tls: Literal["opportunistic", "required"] = "opportunistic"
    relay_username: str | None = None
    relay_password: str | None = Field(default=None, repr=False)
    # VERP: the envelope sender is bounces+<message id>@<domain>; None: bounces@ the agent's.
    bounce_address: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+$")
    max_age: PositiveDuration = 2 * 86400.0
    max_recipients: int = Field(default=100, ge=1, le=10000)
    rate_per_agent: int = Field(default=60, ge=1)  # messages a minute
    dkim: list[DkimSpec] = []
    # Beyond SPEC §3: the pause after a recipient's first failed attempt (doubled after each
    # next one, up to `retry_max`), delivery workers per node, and the relay's timeouts.
    retry_base: PositiveDuration = 60.0
    retry_max: PositiveDuration = 3600.0
    workers: int = Field(default=4, ge=1, le=64)
    timeout: PositiveDuration = 60.0
    poll_interval: PositiveDuration = 1.0

    @model_validator(mode="after")
    def _credentials_together(self) -> OutboundConfig:
        if (self.relay_username is None) != (self.relay_password is None):
            raise ValueError("relay_username and relay_password go together")
        return self


def _dns_server(value: object) -> object:
    """A resolver as `host` or `host:port` (`[v6]:port`), checked at start, not at first use."""
    if not isinstance(value, str):
        return value
    host, port = value, "53"
    if value.startswith("["):  # [v6]:port
        host, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ("53" if not rest else "x")
    elif value.count(":") == 1:
        host, port = value.split(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address with an optional :port") from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r}: the port must be 1..65535")
    return value


DnsServer = Annotated[str, BeforeValidator(_dns_server)]


class AuthConfig(_Section):
    """Sender authentication (SPEC §13)."""
    enabled: bool = True
    dns_servers: list[DnsServer] = []  # empty: the system's resolvers
    dns_timeout: PositiveDuration = 2.0
    trusted_authserv_ids: list[Annotated[str, Field(min_length=1, max_length=255)]] = []
    # Beyond SPEC §3: our Authentication-Results' authserv-id (default smtp.hostname);
    # verifications at once per node, the verifier's nice; DKIM signatures per message.
    authserv_id: str | None = Field(default=None, min_length=1, max_length=255,
                                    pattern=r"^[A-Za-z0-9.-]+$")
    concurrency: int = Field(default=8, ge=1, le=256)
    nice: int = Field(default=10, ge=0, le=19)
    max_signatures: int = Field(default=10, ge=1, le=100)
    max_message_size: PositiveSize = 4 * 1024**2  # larger: DKIM `policy` (the body unread)


class WebhooksConfig(_Section):
    """Webhooks (SPEC §14)."""
    timeout: PositiveDuration = 10.0
    disable_after: PositiveDuration = 5 * 86400.0
    allow_private_networks: bool = False
    # Beyond SPEC §3: the pauses before each retry, POSTs at once per node and per endpoint,
    # endpoints per agent, and how long the attempts log is kept.
    retries: Annotated[list[Duration], Field(max_length=20)] = [
        5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]
    concurrency: int = Field(default=64, ge=1, le=1024)
    per_endpoint: int = Field(default=4, ge=1, le=64)
    max_per_agent: int = Field(default=20, ge=1, le=1000)
    log_for: PositiveDuration = 7 * 86400.0


class ContentConfig(_Section):
    """What an agent reads (SPEC §15). Beyond SPEC §3: the largest attachment read at all, the
    address space of a reader's process, how far a zip container may unpack, how many
    readers run at once, how much text a message puts in the search index, and how long
    the index lets messages gather before it takes them in one transaction (a search on
    the node waits for none of that: it indexes what is queued first)."""
    max_text_chars: int = Field(default=1_000_000, ge=1)
    max_pages: int = Field(default=500, ge=1)
    timeout: PositiveDuration = 10.0
    max_file_size: PositiveSize = 50 * 1024 * 1024
    max_memory: Size = Field(default=1024**3, ge=256 * 1024**2)
    max_unpacked: PositiveSize = 200 * 1024 * 1024
    processes: int = Field(default=2, ge=1, le=64)
    index_chars: int = Field(default=100_000, ge=0, le=10_000_000)
    index_delay: Duration = Field(default=1.0, ge=0.0, le=60.0)


class LogConfig(_Section):
    format: Literal["console", "json"] | None = None
    level: Literal["debug", "info", "warning", "error"] = "info"


class AgentSpec(_Section):
    name: str = Field(min_length=1, max_length=200)
    addresses: list[str] = Field(min_length=1)
    api_key_env: str | None = None
    openpgp_public_key_file: Path | None = None
    accept: Literal["all", "authenticated"] | None = None  # SPEC §13; None: as the CLI set it


class Config(_Section):
    """Everything postroom reads from its configuration, validated."""

    smtp: SmtpConfig = SmtpConfig()
    http: HttpConfig = HttpConfig()
    database: DatabaseConfig = DatabaseConfig()
    storage: StorageConfig = StorageConfig()
    limits: LimitsConfig = LimitsConfig()
    pipeline: PipelineConfig = PipelineConfig()
    uploads: UploadsConfig = UploadsConfig()
    encryption: EncryptionConfig = EncryptionConfig()
    retention: RetentionConfig = RetentionConfig()
    outbound: OutboundConfig = OutboundConfig()
    auth: AuthConfig = AuthConfig()
    webhooks: WebhooksConfig = WebhooksConfig()
    content: ContentConfig = ContentConfig()
    log: LogConfig = LogConfig()
    agents: list[AgentSpec] = []
    base_dir: Path = Path(".")
    agent_keys: dict[str, str] = Field(default={}, repr=False)  # api_key_env name → its value

    @property
    def is_sqlite(self) -> bool:
        return self.database.url.startswith("sqlite")
