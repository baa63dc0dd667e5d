#!/usr/bin/env bash
# bench/imap.sh - yubin's IMAP server and Debian's Dovecot on the same 10,000 messages in the
# same run: SELECT, FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE ENVELOPE), UID SEARCH by a
# header, FETCH of 100 whole bodies; a table of medians and ratios (bench/imap/main.go).
# Run as root (it installs dovecot-imapd); Dovecot runs as its own loopback instance with a
# configuration under a temporary directory, never the system's.
# Environment: N [10000] messages, ROUNDS [5], OUT [bench/imap-results.md]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-10000}
ROUNDS=${ROUNDS:-5}
OUT=${OUT:-bench/imap-results.md}
if ! command -v dovecot >/dev/null && ! [ -x /usr/sbin/dovecot ]; then
  [ "$(id -u)" = 0 ] || { echo "imap.sh: dovecot-imapd is not installed; run as root" >&2; exit 2; }
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends dovecot-imapd >/dev/null
fi
go run ./bench/imap -n "$N" -rounds "$ROUNDS" -out "$OUT"
