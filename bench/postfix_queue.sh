#!/usr/bin/env bash
# From shared/bench/postfix_queue.sh (the peer issue 24 names), kept here so `make bench` runs
# from a clone alone. bench/targets.py starts and stops it as the `postfix-queue` target.
# A private Postfix instance with its real, durable queue (fsync before 250) and a discard
# transport: the best durable peer to measure postroom against, side by side with smtp-sink.
#   postfix_queue.sh start DIR PORT   # set up DIR (config, queue, data), start, print the port
#   postfix_queue.sh stop DIR
# Needs Debian's postfix package ("No configuration"; bench/setup.sh
# installs it) and root. Touches nothing outside DIR; the system's Postfix is left alone.
set -euo pipefail
cmd=${1:?start|stop}; dir=$(realpath -m "${2:?DIR}")
case "$cmd" in
stop) postfix -c "$dir/etc" stop >/dev/null 2>&1 || true; exit 0 ;;
start) port=${3:?PORT} ;;
*) echo "usage: $0 start DIR PORT | stop DIR" >&2; exit 2 ;;
esac
mkdir -p "$dir/etc" "$dir/queue"
chmod 711 "$dir"
# Postfix's daemons run as `postfix` and open files in DIR by path: every parent must let them pass.
if ! su -s /bin/sh postfix -c "test -x '$dir'" 2>/dev/null; then
  echo "postfix_queue: user postfix cannot reach $dir (a parent folder is 0700?); use a folder like /tmp/postfix-queue" >&2
  exit 1
fi
cat >"$dir/etc/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
maillog_file = $dir/maillog
maillog_file_prefixes = $dir
myhostname = postfix-queue.bench.test
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
relay_domains = bench.test
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
inet_interfaces = loopback-only
inet_protocols = ipv4
default_transport = discard:bench
relay_transport = discard:bench
message_size_limit = 0
default_process_limit = 100
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
biff = no
CF
# chroot off (the column after `unpriv`): a chroot would need copies of /etc files.
cat >"$dir/etc/master.cf" <<CF
$port     inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
flush     unix  n       -       n       1000?   0       flush
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
CF
old=$(( $(date +%s) - 3600 )); touch -d "@$old" "$dir/etc/main.cf" "$dir/etc/master.cf"
postfix -c "$dir/etc" start >/dev/null || { tail -20 "$dir/maillog" >&2 2>/dev/null; exit 1; }
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && { echo "$port"; exit 0; }
  sleep 0.1
done
echo "postfix_queue: not listening on $port; see $dir/maillog" >&2; exit 1
