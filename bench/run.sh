#!/usr/bin/env bash
# bench/run.sh - yubin and Debian's Postfix side by side under the same smtp-source loads,
# alternating (yubin, Postfix, yubin, Postfix...) so both see the same machine, and a table of
# medians and ratios at the end. Run as root on a quiet machine; loopback traffic only.
#
# Cases (as in the performance issue):
#   a  1 KiB messages, 20 parallel sessions, 5,000 messages, a new connection per message
#   b  100 KiB messages, 10 sessions, 1,000 messages
#   c  1 KiB messages, 1 session, 1,000 messages (latency)
# For each: accepted msgs/s (smtp-source's wall time), end-to-end msgs/s (until the last message
# is in the mailbox: yubin's INBOX, Postfix's Maildir; or, in relay mode, counted by an
# smtp-sink; timed by the last delivery's time stamp where there is one, see one()), CPU
# milliseconds per message of the whole server process tree (until end to end),
# peak memory (PSS of the tree). Then one pass per server counts fsync-family calls per
# message on case a: for yubin (one process) with perf's syscall tracepoints, which count in
# the kernel without stopping the process; for Postfix under strace -f, which follows the
# processes its master forks during the load. (strace stops the traced process at every
# system call; that slows yubin's threads unevenly and changes how many commits share an
# fsync: 0.6 to 0.7 per message under strace against 0.2 to 0.3 counted by perf, same build.
# Postfix's fsyncs per message are fixed by its design.)
#
# Case c also runs against bench/floor (FLOOR=1), a minimal SMTP responder that does nothing
# per message but the dialogue and one fdatasync of the bytes a yubin commit writes: the
# most a server with one fsync per acknowledged message could do on this machine today. It
# runs with the Go runtime setting yubin serve gives itself (GODEBUG=schedtrace, see
# cmd/yubin/sysmon_linux.go), so that it stays a bound for yubin.
#
# Environment: ROUNDS [3], CASES ["a b c"], SCALE [1] (multiplies message counts),
# MODE [mailbox] (mailbox or relay), FSYNC [1] (0 skips the strace pass), FLOOR [1],
# OUT [bench/results-MODE.md]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
CASES=${CASES:-a b c}
SCALE=${SCALE:-1}
MODE=${MODE:-mailbox}
FSYNC=${FSYNC:-1}
FLOOR=${FLOOR:-1}
OUT=${OUT:-bench/results-$MODE.md}
YB_PORT=25025
PF_PORT=24025
SINK_PORT=24026
FL_PORT=25027
[ "$(id -u)" = 0 ] || { echo "run.sh: run as root (it installs Postfix and strace)" >&2; exit 2; }

for tool in strace perf smtp-source; do
  if ! command -v "$tool" >/dev/null && [ ! -x "/usr/sbin/$tool" ]; then
    case $tool in
      strace) apt-get update -q >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -q strace >/dev/null ;;
      perf) apt-get update -q >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -q linux-perf >/dev/null ;;
    esac
  fi
done
PF_PORT=$PF_PORT PF_SINK_PORT=$SINK_PORT bash bench/postfix.sh start "$MODE"
# Postfix starts from an empty Maildir and sink counter, as yubin from a new data directory
# (what earlier runs left would also make every count slower: see delivered).
bash bench/postfix.sh purge
SRC=$(command -v smtp-source || echo /usr/sbin/smtp-source)

WORK=$(mktemp -d /tmp/yubin-bench.XXXXXX)
YB_PID= FL_PID=
cleanup() {
  # "|| true": under set -e a failing last command of an && list would end the trap here
  # (wait reports the floor's death by SIGTERM as 143), leaving Postfix running.
  [ -n "$YB_PID" ] && kill "$YB_PID" 2>/dev/null && wait "$YB_PID" 2>/dev/null || true
  [ -n "$FL_PID" ] && kill "$FL_PID" 2>/dev/null && wait "$FL_PID" 2>/dev/null || true
  bash bench/postfix.sh stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

go build -o "$WORK/yubin" ./cmd/yubin
go build -o "$WORK/floor" ./bench/floor
cat >"$WORK/yubin.toml" <<CFG
hostname = "yubin-bench.localhost"
data_dir = "data"
[log]
level = "warn"
[smtp]
listen = ["127.0.0.1:$YB_PORT"]
max_connections_per_ip = 1000
[submission]
listen = []
listen_tls = []
socket = "none"
[imap]
listen = []
listen_tls = []
[pop3]
listen = []
listen_tls = []
CFG
if [ "$MODE" = relay ]; then
  # yubin forwards bench.test (an alias to a remote address) to the same smtp-sink that
  # Postfix relays to: accepted over TCP on the MX listener, queued, relayed over SMTP.
  cat >>"$WORK/yubin.toml" <<CFG
[relay.routes."*"]
host = "127.0.0.1:$SINK_PORT"
tls = "none"
CFG
fi
YB="$WORK/yubin"
export YUBIN_CONFIG="$WORK/yubin.toml"
"$YB" domain add bench.test >/dev/null
if [ "$MODE" = relay ]; then
  "$YB" alias add user@bench.test user@sink.test >/dev/null
else
  echo "bench-password-1" | "$YB" account add user@bench.test --password-stdin >/dev/null
fi
"$YB" serve --config "$WORK/yubin.toml" 2>"$WORK/yubin.log" &
YB_PID=$!
for _ in $(seq 100); do ss -Hltn "sport = :$YB_PORT" | grep -q . && break; sleep 0.1; done
if [ "$FLOOR" = 1 ]; then
  GODEBUG=schedtrace=2147483647 "$WORK/floor" -listen "127.0.0.1:$FL_PORT" -file "$WORK/floor.wal" 2>"$WORK/floor.log" &
  FL_PID=$!
  for _ in $(seq 100); do ss -Hltn "sport = :$FL_PORT" | grep -q . && break; sleep 0.1; done
fi

TCK=$(getconf CLK_TCK)
tree() { # pids of a process and its descendants
  ps -e -o pid=,ppid= | awk -v root="$1" '{ kids[$2] = kids[$2] " " $1 }
    END { q[1] = root; n = 1; i = 1
      while (i <= n) { p = q[i++]; print p; m = split(kids[p], k, " "); for (j = 1; j <= m; j++) q[++n] = k[j] } }'
}
ticks() { # utime+stime+cutime+cstime of a tree
  (cd /proc && cat $(tree "$1" | sed 's|$|/stat|') 2>/dev/null) | awk '{ sub(/^.*\) /, ""); t += $12 + $13 + $14 + $15 } END { print t + 0 }'
}
pss_kb() { (cd /proc && cat $(tree "$1" | sed 's|$|/smaps_rollup|') 2>/dev/null) | awk '/^Pss:/ { t += $2 } END { print t + 0 }'; }
root_pid() {
  case $1 in
    yubin) echo "$YB_PID" ;;
    floor) echo "$FL_PID" ;;
    *) cat "/var/spool/postfix-yubin-bench/pid/master.pid" | tr -dc 0-9 ;;
  esac
}
port_of() { case $1 in yubin) echo $YB_PORT ;; floor) echo $FL_PORT ;; *) echo $PF_PORT ;; esac; }
delivered() {
  if [ "$1" = floor ]; then echo 0  # keeps nothing: its end to end is its accepted
  elif [ "$1" = yubin ] && [ "$MODE" != relay ]; then "$YB" mail count user@bench.test 2>/dev/null || echo 0
  else bash bench/postfix.sh delivered; fi  # Postfix's Maildir, or the smtp-sink both relay to
}
now() { date +%s.%N; }

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
one() { # server case round
  local srv=$1 c=$2 r=$3 size sess msgs
  case $c in
    a) size=1024 sess=20 msgs=5000 ;;
    b) size=102400 sess=10 msgs=1000 ;;
    c) size=1024 sess=1 msgs=1000 ;;
  esac
  msgs=$(awk "BEGIN { printf \"%d\", $msgs * $SCALE + 0.5 }")
  local root d0 c0 t0 t1 t2 c1 acc peak=0 p d
  root=$(root_pid "$srv")
  # Each case starts from a quiet disk: what the previous case left dirty (100 MB of case b,
  # flushed by the kernel or by yubin's background checkpoint) is written out now instead of
  # during the next measurement, of either server.
  sync; sleep 1
  d0=$(delivered "$srv")
  c0=$(ticks "$root")
  : >"$WORK/flag"
  ( while [ -e "$WORK/flag" ]; do pss_kb "$root"; sleep 0.2; done ) >"$WORK/pss" &
  local sampler=$!
  t0=$(now)
  timeout 600 "$SRC" -4 -c -s "$sess" -m "$msgs" -l "$size" -f bench@bench.test -t user@bench.test "127.0.0.1:$(port_of "$srv")" >"$WORK/src.out" 2>&1 || true
  t1=$(now)
  acc=$(tr '\r' '\n' <"$WORK/src.out" | grep -E '^[0-9]+$' | tail -1); acc=${acc:-0}
  local end=$((SECONDS + 300))
  while :; do
    d=$(delivered "$srv")
    [ "$srv" = floor ] && d=$((d0 + acc))
    [ $((d - d0)) -ge "$acc" ] && break
    [ $SECONDS -ge $end ] && break
    sleep 0.01
  done
  t2=$(now)
  # The clock stops at the last delivery where it leaves a time stamp (the sink's log in relay
  # mode, Postfix's Maildir), not at the poll that saw it: a poll takes a few milliseconds and
  # more as the counts grow, which would weigh on the faster server's shorter run. yubin's
  # mailbox keeps the poll's time (it sees the message once its transaction is committed).
  local last
  if [ "$srv" != floor ] && { [ "$MODE" = relay ] || [ "$srv" = postfix ]; }; then
    last=$(bash bench/postfix.sh last 2>/dev/null || true)
    if [ -n "$last" ] && awk -v a="$last" -v b="$t0" -v c="$t2" 'BEGIN { exit !(a > b && a <= c) }'; then t2=$last; fi
  fi
  c1=$(ticks "$root")
  rm -f "$WORK/flag"; wait "$sampler" 2>/dev/null || true
  peak=$(sort -n "$WORK/pss" | tail -1)
  awk -v s="$srv" -v c="$c" -v r="$r" -v acc="$acc" -v d=$((d - d0)) -v t0="$t0" -v t1="$t1" -v t2="$t2" \
      -v ct=$((c1 - c0)) -v tck="$TCK" -v peak="${peak:-0}" 'BEGIN {
    printf "%s\t%s\t%s\t%d\t%d\t%.1f\t%.1f\t%.2f\t%.0f\n", s, c, r, acc, d, acc / (t1 - t0), d / (t2 - t0), 1000 * ct / tck / (acc > 0 ? acc : 1), peak / 1024
  }' | tee -a "$RESULTS"
}

echo "# server case round accepted delivered accepted/s e2e/s cpu_ms/msg peak_pss_mb"
for r in $(seq "$ROUNDS"); do
  for c in $CASES; do
    one yubin "$c" "$r"
    one postfix "$c" "$r"
    if [ "$c" = c ] && [ "$FLOOR" = 1 ]; then one floor "$c" "$r"; fi
  done
done

# fsyncs per message: one counting pass per server on case a (1,000 messages); see the top.
SYNCS="fsync fdatasync syncfs sync_file_range msync"
fsyncs() { # server -> prints fsync-family calls per message
  local srv=$1 root pids args=() d0 d n st
  root=$(root_pid "$srv")
  pids=$(tree "$root")
  if [ "$srv" = yubin ]; then
    perf stat -x, -o "$WORK/sync.$srv" -p "$(echo $pids | tr ' ' ,)" \
      -e "$(for c in $SYNCS; do printf 'syscalls:sys_enter_%s,' "$c"; done | sed 's/,$//')" 2>/dev/null &
  else
    for p in $pids; do args+=(-p "$p"); done
    strace -f -c -e trace="$(echo $SYNCS | tr ' ' ,)" -o "$WORK/sync.$srv" "${args[@]}" 2>/dev/null &
  fi
  st=$!
  sleep 1
  d0=$(delivered "$srv")
  timeout 600 "$SRC" -4 -c -s 20 -m 1000 -l 1024 -f bench@bench.test -t user@bench.test "127.0.0.1:$(port_of "$srv")" >/dev/null 2>&1 || true
  local end=$((SECONDS + 300))
  while d=$(delivered "$srv"); [ $((d - d0)) -lt 1000 ] && [ $SECONDS -lt $end ]; do sleep 0.1; done
  sleep 1
  kill -INT "$st"; wait "$st" 2>/dev/null || true
  if [ "$srv" = yubin ]; then
    n=$(awk -F, '$3 ~ /^syscalls:sys_enter_/ { t += $1 } END { print t + 0 }' "$WORK/sync.$srv")
  else
    n=$(awk '$NF ~ /^(fsync|fdatasync|syncfs|sync_file_range|msync)$/ { t += $4 } END { print t + 0 }' "$WORK/sync.$srv")
  fi
  awk -v n="$n" -v d=$((d - d0)) 'BEGIN { printf "%.2f", n / (d > 0 ? d : 1) }'
}

FS_Y=n/a FS_P=n/a
if [ "$FSYNC" = 1 ]; then FS_Y=$(fsyncs yubin); FS_P=$(fsyncs postfix); fi

median() { sort -n | awk '{ a[NR] = $1 } END { if (NR == 0) print 0; else print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }
col() { awk -F'\t' -v s="$1" -v c="$2" -v k="$3" '$1 == s && $2 == c { print $k }' "$RESULTS" | median; }
{
  echo "Measured $(date -u +%F) on $(nproc) cores ($(uname -m)), mode=$MODE, $ROUNDS rounds, scale $SCALE; medians."
  echo
  echo "| case | yubin accepted/s | Postfix accepted/s | yubin e2e/s | Postfix e2e/s | e2e ratio | yubin CPU ms/msg | Postfix CPU ms/msg | yubin peak MB | Postfix peak MB |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  for c in $CASES; do
    ya=$(col yubin "$c" 6); pa=$(col postfix "$c" 6); ye=$(col yubin "$c" 7); pe=$(col postfix "$c" 7)
    yc=$(col yubin "$c" 8); pc=$(col postfix "$c" 8); ym=$(col yubin "$c" 9); pm=$(col postfix "$c" 9)
    ratio=$(awk -v y="$ye" -v p="$pe" 'BEGIN { printf "%.1fx", (p > 0 ? y / p : 0) }')
    echo "| $c | $ya | $pa | $ye | $pe | $ratio | $yc | $pc | $ym | $pm |"
  done
  echo
  # The ratio of each round's pair (run back to back) shows how much the machine moved
  # during the run; the table's ratio is that of the medians.
  printf 'e2e ratio round by round:'
  for c in $CASES; do
    awk -F'\t' -v c="$c" '$2 == c && $1 == "yubin" { y[$3] = $7 } $2 == c && $1 == "postfix" { p[$3] = $7 }
      END { printf " %s", c; sep = " "; for (r = 1; r in y; r++) { printf "%s%.2fx", sep, (p[r] > 0 ? y[r] / p[r] : 0); sep = ", " } }' "$RESULTS"
    [ "$c" = "$(echo $CASES | awk '{ print $NF }')" ] && echo || printf ';'
  done
  echo
  echo "fsync-family calls per message (case a, 20 sessions, 1,000 messages; yubin counted by perf, Postfix by strace -f -c): yubin $FS_Y, Postfix $FS_P"
  if [ "$FLOOR" = 1 ] && grep -q "^floor" "$RESULTS"; then
    fl=$(col floor c 6); ye=$(col yubin c 7); pe=$(col postfix c 7)
    echo
    awk -v f="$fl" -v y="$ye" -v p="$pe" 'BEGIN {
      printf "Case c floor (bench/floor: the dialogue and one fdatasync of the same WAL bytes, nothing else): %.1f msgs/s, %.1fx Postfix; yubin reaches %.0f%% of it.\n", f, (p > 0 ? f / p : 0), (f > 0 ? 100 * y / f : 0)
    }'
  fi
} | tee "$OUT"
