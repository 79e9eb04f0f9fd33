#!/usr/bin/env bash
# Debian packages the test suite drives as a user would: swaks, curl and jq for the README tour,
# systemd-analyze (package systemd) for the unit file's checks, gpg and gpgconf (package gnupg)
# for OpenPGP, which the daemon itself needs too.
# Installs only what is missing; needs root (CI and the dev machines run as root).
set -euo pipefail
need=()
for tool in swaks curl jq; do
    command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
{ command -v gpg && command -v gpgconf; } >/dev/null 2>&1 || need+=(gnupg)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-test-deps: missing ${need[*]}; run as root or: sudo apt-get install ${need[*]}" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# Postfix (tests/smtp/test_postfix.py relays through private instances of it; the system's own
# never starts and nothing listens on port 25).
bash "$(dirname "$0")/install-postfix.sh"
