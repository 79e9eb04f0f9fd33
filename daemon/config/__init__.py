"""The one typed configuration object, validated once at start (SPEC §3).

Loaded from TOML, overridden by `POSTROOM_<SECTION>__<KEY>` environment variables, with relative
paths resolved against the file's directory. Nothing else in the code reads the environment or the
file: the validated `Config` is passed down explicitly.
"""

from __future__ import annotations

from daemon.config.load import CONFIG_ENV, ENV_PREFIX, load_config
from daemon.config.sections import (
    AgentSpec,
    AuthConfig,
    Config,
    ContentConfig,
    DatabaseConfig,
    EncryptionConfig,
    OutboundConfig,
    WebhooksConfig,
)
from daemon.config.units import ConfigError, parse_duration, parse_listen, parse_size

__all__ = [
    "CONFIG_ENV", "ENV_PREFIX", "AgentSpec", "AuthConfig", "Config", "ConfigError",
    "ContentConfig", "DatabaseConfig", "EncryptionConfig", "OutboundConfig", "WebhooksConfig",
    "load_config", "parse_duration", "parse_listen", "parse_size",
]
