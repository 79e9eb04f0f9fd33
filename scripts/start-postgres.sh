#!/usr/bin/env bash
# The PostgreSQL tests use the machine's server on 127.0.0.1:5432 (trust auth). When a Debian
# cluster is installed but down, start it; when none is installed, say so (the tests then skip,
# or fail under CI).
set -euo pipefail
if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    exit 0
fi
if [ -d /etc/postgresql ] && command -v pg_ctlcluster >/dev/null 2>&1; then
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    for _ in $(seq 1 60); do
        pg_isready -q -h 127.0.0.1 -p 5432 && exit 0
        sleep 0.5
    done
    echo "start-postgres: the cluster $version/main did not come up" >&2
    exit 1
fi
echo "start-postgres: no PostgreSQL cluster installed; the PostgreSQL tests need one" >&2
