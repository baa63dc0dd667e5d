#!/usr/bin/env bash
# bench/postfix.sh - a private Postfix instance for side-by-side benchmarks.
#
# It runs Debian's Postfix with its own configuration, queue and mail directories, bound to a
# loopback port, so it never touches the machine's own mail setup (/etc/postfix, port 25).
#
#   bench/postfix.sh start MODE   (re)configure and start; MODE is "mailbox" (deliver into a
#                                 Maildir with virtual(8)) or "relay" (relay to an smtp-sink)
#   bench/postfix.sh stop
#   bench/postfix.sh delivered    messages delivered so far (Maildir files, or sink count)
#   bench/postfix.sh last         when the last of them was delivered (seconds since the epoch,
#                                 with nanoseconds): the change time of the newest Maildir
#                                 file (its rename into new/), or of the sink's log, which
#                                 smtp-sink writes after every message
#   bench/postfix.sh queued       messages still in the queue
#   bench/postfix.sh purge        empty the queue, the Maildir and the sink counter
#   bench/postfix.sh pids         the instance's process ids (master and children)
# Environment: PF_PORT [24025], PF_SINK_PORT [24026], PF_DOMAIN [bench.test].
set -euo pipefail

PF_PORT=${PF_PORT:-24025}
PF_SINK_PORT=${PF_SINK_PORT:-24026}
PF_DOMAIN=${PF_DOMAIN:-bench.test}
NAME=postfix-yubin-bench
CONF=/etc/$NAME
SPOOL=/var/spool/$NAME
DATA=/var/lib/$NAME
MAILDIR=/var/mail/$NAME
LOG=/var/log/$NAME.log
SINK_PID=/run/$NAME-sink.pid
SINK_OUT=/var/log/$NAME-sink.log
VUSER=yubinbench

die() { echo "postfix.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (it installs and runs a Postfix instance)"

install() {
  if [ -x /usr/sbin/postfix ] && [ -x /usr/sbin/smtp-source ] && [ -x /usr/sbin/smtp-sink ]; then return; fi
  # "No configuration" keeps the package from setting up a system MTA on port 25.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends postfix >/dev/null
}

master_pid() {
  local f=$SPOOL/pid/master.pid p
  [ -r "$f" ] || return 1
  p=$(tr -dc 0-9 <"$f")
  [ -n "$p" ] && kill -0 "$p" 2>/dev/null && echo "$p"
}

configure() {
  local mode=$1
  id "$VUSER" >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$VUSER"
  local uid gid
  uid=$(id -u "$VUSER"); gid=$(id -g "$VUSER")
  mkdir -p "$CONF" "$SPOOL" "$DATA" "$MAILDIR"
  chown "$VUSER:$VUSER" "$MAILDIR"; chown postfix:postfix "$DATA"
  {
    echo "# written by yubin bench/postfix.sh ($mode); loopback only"
    echo "compatibility_level = 3.6"
    echo "queue_directory = $SPOOL"
    echo "data_directory = $DATA"
    echo "myhostname = $NAME.localhost"
    echo "mydestination ="
    echo "inet_interfaces = 127.0.0.1"
    echo "inet_protocols = ipv4"
    echo "mynetworks = 127.0.0.0/8"
    echo "alias_maps ="
    echo "alias_database ="
    echo "local_recipient_maps ="
    echo "smtpd_tls_security_level = none"
    echo "smtp_tls_security_level = none"
    echo "smtp_dns_support_level = disabled"
    echo "message_size_limit = 52428800"
    echo "maillog_file = $LOG"
    echo "virtual_mailbox_base = $MAILDIR"
    echo "virtual_mailbox_maps = static:box/"
    echo "virtual_uid_maps = static:$uid"
    echo "virtual_gid_maps = static:$gid"
    echo "virtual_minimum_uid = 100"
    echo "virtual_mailbox_limit = 0"
    echo "smtpd_recipient_restrictions = permit_mynetworks, reject"
    if [ "$mode" = relay ]; then
      echo "virtual_mailbox_domains ="
      echo "relay_domains = $PF_DOMAIN"
      echo "relay_transport = relay:[127.0.0.1]:$PF_SINK_PORT"
    else
      echo "virtual_mailbox_domains = $PF_DOMAIN"
      echo "relay_domains ="
    fi
  } >"$CONF/main.cf"
  cat >"$CONF/master.cf" <<MASTER
127.0.0.1:$PF_PORT inet n - n - - smtpd
pickup    unix  n - n 60   1 pickup
cleanup   unix  n - n -    0 cleanup
qmgr      unix  n - n 300  1 qmgr
rewrite   unix  - - n -    - trivial-rewrite
bounce    unix  - - n -    0 bounce
defer     unix  - - n -    0 bounce
trace     unix  - - n -    0 bounce
verify    unix  - - n -    1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -    - proxymap
smtp      unix  - - n -    - smtp
relay     unix  - - n -    - smtp
showq     unix  n - n -    - showq
error     unix  - - n -    - error
retry     unix  - - n -    - error
discard   unix  - - n -    - discard
virtual   unix  - n n -    - virtual
anvil     unix  - - n -    1 anvil
scache    unix  - - n -    1 scache
postlog   unix-dgram n - n - 1 postlogd
MASTER
  echo "$mode" >"$CONF/mode"
}

sink_start() {
  sink_stop
  : >"$SINK_OUT"
  setsid smtp-sink -c -u nobody "127.0.0.1:$PF_SINK_PORT" 256 >>"$SINK_OUT" 2>&1 </dev/null &
  echo $! >"$SINK_PID"
  sleep 0.3
  kill -0 "$(cat "$SINK_PID")" 2>/dev/null || die "smtp-sink did not start: $(cat "$SINK_OUT")"
}
sink_stop() {
  if [ -f "$SINK_PID" ]; then kill "$(cat "$SINK_PID")" 2>/dev/null || true; rm -f "$SINK_PID"; fi
}
# The counter smtp-sink rewrites (with a CR) after every message: the log's end has the latest,
# and reading only the end keeps a poll as cheap at the 70,000th message as at the first.
sink_count() { tail -c 4096 "$SINK_OUT" 2>/dev/null | tr '\r' '\n' | grep -o 'mesg=[0-9]*' | tail -1 | cut -d= -f2 || true; }

queued() {
  local n=0 d
  for d in maildrop incoming active deferred; do
    [ -d "$SPOOL/$d" ] && n=$((n + $(find "$SPOOL/$d" -type f | wc -l)))
  done
  echo "$n"
}

case "${1:-}" in
  start)
    mode=${2:-mailbox}
    install
    configure "$mode"
    if [ "$mode" = relay ]; then sink_start; fi
    postfix -c "$CONF" check >/dev/null 2>&1 || postfix -c "$CONF" check
    if master_pid >/dev/null; then postfix -c "$CONF" reload >/dev/null 2>&1; else postfix -c "$CONF" start >/dev/null 2>&1; fi
    for _ in $(seq 100); do ss -Hltn "sport = :$PF_PORT" | grep -q . && break; sleep 0.1; done
    ss -Hltn "sport = :$PF_PORT" | grep -q . || die "not listening on 127.0.0.1:$PF_PORT (see $LOG)"
    ;;
  stop) if master_pid >/dev/null; then postfix -c "$CONF" stop >/dev/null 2>&1 || true; fi; sink_stop ;;
  delivered)
    if [ "$(cat "$CONF/mode" 2>/dev/null)" = relay ]; then c=$(sink_count); echo "${c:-0}"
    else find "$MAILDIR" -path '*/new/*' -type f 2>/dev/null | wc -l; fi ;;
  last)
    if [ "$(cat "$CONF/mode" 2>/dev/null)" = relay ]; then stat -c %.9Z "$SINK_OUT"
    else find "$MAILDIR" -path '*/new/*' -type f -printf '%C@\n' 2>/dev/null | sort -n | tail -1; fi ;;
  queued) queued ;;
  purge)
    if master_pid >/dev/null; then postsuper -c "$CONF" -d ALL >/dev/null 2>&1 || true; fi
    rm -rf "${MAILDIR:?}"/*; [ -f "$SINK_OUT" ] && : >"$SINK_OUT"; true ;;
  pids) p=$(master_pid) || exit 1; echo "$p"; pgrep -P "$p" || true ;;
  *) die "usage: postfix.sh start [mailbox|relay] | stop | delivered | last | queued | purge | pids" ;;
esac
