#!/usr/bin/env bash
# Debian's Postfix for tests/smtp/test_postfix.py, which runs private instances of its own (own
# config, queue and data directories, no listener on port 25) in front of postroom, and OpenDKIM,
# which tests/sender_auth/test_milter.py runs privately as such a Postfix's signing milter.
# Installs only when missing, non-interactively ("No configuration": no /etc/postfix/main.cf),
# and never leaves the system's Postfix running: a policy-rc.d that refuses every service start
# is in place while the package installs, and a master the install started anyway is stopped.
# Needs root (CI and the dev machines run as root).
set -euo pipefail

have_postfix() {
    [ -x /usr/sbin/postfix ] && [ -x /usr/sbin/sendmail ] && [ -x /usr/sbin/postqueue ]
}
# OpenDKIM too: tests/sender_auth/test_milter.py signs through it as Postfix's milter.
have_opendkim() { [ -x /usr/sbin/opendkim ]; }
have_postfix && have_opendkim && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "install-postfix: Postfix or OpenDKIM is missing; run as root: sudo bash $0" >&2
    exit 1
fi

# The pid of the default instance's master when one runs, else nothing.
default_master() {
    local file=/var/spool/postfix/pid/master.pid pid
    [ -r "$file" ] || return 1
    pid=$(tr -dc 0-9 <"$file")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}
running_before=$(default_master || true)

# invoke-rc.d and deb-systemd-invoke ask policy-rc.d; 101 means "action forbidden". A policy the
# machine has already (Docker images ship one) is put back as it was afterwards.
policy=/usr/sbin/policy-rc.d
saved="$policy.install-postfix-saved"
# A run that was killed may have left its own policy in place, or the machine's aside.
grep -qs 'scripts/install-postfix.sh' "$policy" && rm -f "$policy"
[ -e "$saved" ] && mv -f "$saved" "$policy"
had_policy=""
if [ -e "$policy" ]; then
    had_policy=1
    mv "$policy" "$saved"
fi
restore_policy() {
    if [ -n "$had_policy" ]; then mv -f "$saved" "$policy"; else rm -f "$policy"; fi
}
trap restore_policy EXIT
trap 'exit 130' INT TERM HUP
printf '#!/bin/sh\n# scripts/install-postfix.sh: no service starts while Postfix installs\nexit 101\n' \
    >"$policy"
chmod 755 "$policy"

echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# No recommends: the tests use no SASL (so no libsasl2-modules) and no TLS certificates.
apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=120 postfix opendkim \
    >/dev/null

if [ -z "$running_before" ] && pid=$(default_master); then
    echo "install-postfix: the install started the system Postfix (pid $pid); stopping it" >&2
    postfix stop >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
fi
have_postfix || { echo "install-postfix: postfix installed but its commands are missing" >&2; exit 1; }
have_opendkim || { echo "install-postfix: opendkim installed but its command is missing" >&2; exit 1; }
