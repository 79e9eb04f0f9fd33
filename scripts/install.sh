#!/usr/bin/env bash
# Install postroom as a systemd service: the `postroom` user, a venv in /opt/postroom, the config
# in /etc/postroom (paths pointed at /var/lib/postroom), and the unit. Run as root from a
# checkout. DESTDIR=/some/dir stages the files there instead (no user, no systemctl): tests use it.
#   sudo scripts/install.sh            # then: systemctl enable --now postroom
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${DESTDIR:-}"
staging=${dest:+yes}
python="${PYTHON:-python3}"

if [ -z "$staging" ]; then
    [ "$(id -u)" -eq 0 ] || { echo "install.sh: run as root (or set DESTDIR to stage)" >&2; exit 1; }
    getent group postroom >/dev/null || groupadd --system postroom
    getent passwd postroom >/dev/null || useradd --system --gid postroom --no-create-home \
        --home-dir /var/lib/postroom --shell /usr/sbin/nologin postroom
fi

install -d -m 0755 "$dest/opt/postroom" "$dest/etc/systemd/system"
install -d -m 0750 "$dest/etc/postroom" "$dest/var/lib/postroom"
if [ -z "${SKIP_VENV:-}" ]; then
    "$python" -m venv "$dest/opt/postroom/.venv"
    "$dest/opt/postroom/.venv/bin/pip" install -q ".[fast]"
fi

config="$dest/etc/postroom/config.toml"
if [ ! -e "$config" ]; then  # never overwrite an operator's config
    sed -e 's#^url = "sqlite+aiosqlite:///var/postroom.db"#url = "sqlite+aiosqlite:////var/lib/postroom/postroom.db"#' \
        -e 's#^path = "var/objects"#path = "/var/lib/postroom/objects"#' \
        -e 's#^presign_ttl = "15m"#presign_ttl = "15m"\nsigning_key_file = "/var/lib/postroom/signing.key"#' \
        -e '/^# The demo agent/,$d' \
        config.toml > "$config"
    printf '# Written by scripts/install.sh: state lives in /var/lib/postroom. Add agents with\n# `postroom agent add NAME --address ADDR` (no demo agent: its key would reach the journal).\n' >> "$config"
    chmod 0640 "$config"
fi
install -m 0644 systemd/postroom.service "$dest/etc/systemd/system/postroom.service"

if [ -z "$staging" ]; then
    chown root:postroom /etc/postroom /etc/postroom/config.toml
    chown postroom:postroom /var/lib/postroom
    if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
    echo "installed; start with: systemctl enable --now postroom"
fi
