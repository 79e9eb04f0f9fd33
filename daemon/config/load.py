"""Reading the configuration: TOML, then `POSTROOM_<SECTION>__<KEY>` overrides, then paths
resolved against the file's directory, validated into one `Config`."""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import (
    ValidationError,
)

from daemon.config.sections import Config, DatabaseConfig
from daemon.config.units import ConfigError

ENV_PREFIX = "POSTROOM_"
CONFIG_ENV = "POSTROOM_CONFIG"


def _env_overrides(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """`POSTROOM_SMTP__MAX_MESSAGE_SIZE=10MB` → {"smtp": {"max_message_size": "10MB"}}."""
    out: dict[str, dict[str, Any]] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX):].lower().partition("__")
        value: Any = raw
        # Lists and tables (trusted_networks, listen) may be given as JSON.
        if raw[:1] in "[{":
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
        elif raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        out.setdefault(section, {})[key] = value
    return out


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    def fix(table: object, key: str, default: str | None = None) -> None:
        if isinstance(table, dict) and isinstance(value := table.get(key, default), str):
            p = Path(value).expanduser()
            table[key] = str(p if p.is_absolute() else base / p)

    for section, key, default in [
            ("storage", "path", "var/objects"), ("storage", "signing_key_file", "var/signing.key"),
            ("storage", "spool_path", "var/spool"), ("encryption", "gnupg_home", "var/gnupg"),
            ("smtp", "tls_cert", None), ("smtp", "tls_key", None)]:
        fix(data.setdefault(section, {}), key, default)
    db = data.setdefault("database", {})
    url = db.get("url", DatabaseConfig().url)
    m = re.match(r"(sqlite(?:\+\w+)?:///)(.*)", url)
    if m and m.group(2) and not m.group(2).startswith((":memory:", "/")):
        db["url"] = m.group(1) + str(base / m.group(2))
    for spec in (data.get("outbound") or {}).get("dkim") or []:
        fix(spec, "key_file")
    for agent in data.get("agents") or []:
        fix(agent, "openpgp_public_key_file")


def _format_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        lines.append(f"{key}: {e['msg']}")
    return "invalid configuration: " + "; ".join(lines)


def load_config(path: Path | None, env: Mapping[str, str] | None = None) -> Config:
    """Read, merge and validate; raises ConfigError naming the offending key."""
    env = dict(os.environ if env is None else env)
    if path is None and env.get(CONFIG_ENV):
        path = Path(env[CONFIG_ENV])
    data: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        path = path.expanduser().resolve()
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise ConfigError(f"config file not found: {path}") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from e
        base = path.parent
    for section, values in _env_overrides(env).items():
        target = data.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"{section}: cannot override a non-table with environment variables")
        target.update(values)
    for reserved in ("base_dir", "agent_keys"):
        if reserved in data:
            raise ConfigError(f"{reserved}: unknown key")
    _resolve_paths(data, base)
    # Keep only the variables agents name, so no other secret of the environment is carried.
    wanted = {a.get("api_key_env") for a in data.get("agents") or [] if isinstance(a, dict)}
    agent_keys = {k: env[k] for k in wanted if isinstance(k, str) and k in env}
    try:
        return Config.model_validate({**data, "base_dir": base, "agent_keys": agent_keys})
    except ValidationError as e:
        raise ConfigError(_format_error(e)) from e
