#!/usr/bin/env bash
# What bench/run_smtp_bench.py needs beyond the project's venv (Debian, as root):
# Postfix only for its test sink `smtp-sink` — installed with debconf "No configuration" so the
# Postfix MTA is never configured, and stopped if anything started it — plus psutil and py-spy.
# Run from the repository root:  bash bench/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v smtp-sink >/dev/null && [ ! -x /usr/sbin/smtp-sink ]; then
    apt-get update
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y postfix
fi
if [ -f /var/spool/postfix/pid/master.pid ] \
        && kill -0 "$(cat /var/spool/postfix/pid/master.pid)" 2>/dev/null; then
    postfix stop || true
fi

VENV=${VENV:-.venv}
"$VENV/bin/python" -m pip install -q psutil py-spy httpx uvloop

# postroom itself runs from a venv of its own with what a deployment installs (the project and
# its `fast` extra), not from the test venv: test tools such as schemathesis bring rich, which
# structlog then imports, and a benchmark of memory must not count them.
POSTROOM_VENV=${POSTROOM_VENV:-.venv-bench}
if [ ! -x "$POSTROOM_VENV/bin/python" ] || [ pyproject.toml -nt "$POSTROOM_VENV/.installed" ]; then
    python3 -m venv "$POSTROOM_VENV"
    "$POSTROOM_VENV/bin/python" -m pip install -q --upgrade pip
    "$POSTROOM_VENV/bin/python" -m pip install -q '.[fast]'
    touch "$POSTROOM_VENV/.installed"
fi
echo "bench setup done: smtp-sink at $(command -v smtp-sink || echo /usr/sbin/smtp-sink)"
