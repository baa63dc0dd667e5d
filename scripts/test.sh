#!/usr/bin/env bash
# scripts/test.sh - the whole test suite, as the README and CI run it.
# It installs (idempotently, with apt-get when run as root) the real programs the tests drive,
# then runs go vet and every Go test. Under CI=true no test may skip for a missing tool.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages used by tests: SMTP clients (swaks with Net::SSLeay for its TLS, msmtp,
# Python's smtplib), openssl for
# TLS version checks, Postfix as a peer MTA, python3-dkim (with dnspython, nacl for Ed25519)
# as an independent DKIM verifier, mbsync (isync) as an IMAP client.
pkgs=(swaks libnet-ssleay-perl python3 openssl msmtp postfix python3-dkim python3-dnspython python3-nacl isync)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ]; then
    echo "installing: ${missing[*]}"
    # Postfix is a test peer only: "No configuration" keeps the package from setting up a
    # system MTA on port 25 (tests run their own loopback instances).
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "missing Debian packages: ${missing[*]} (apt-get install them; tests that need them skip outside CI)" >&2
  fi
fi

gofmt_out=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$gofmt_out" ]; then echo "gofmt needed: $gofmt_out" >&2; exit 1; fi
go vet ./...
# The race detector on the concurrent core (protocol, sessions, store), plain runs elsewhere.
go test -count=1 -timeout 20m ./...
go test -count=1 -race -timeout 20m ./internal/smtp/ ./internal/smtpserver/ ./internal/store/ ./internal/intake/ \
  ./internal/queue/ ./internal/imapserver/ ./internal/pop3server/ ./internal/mailbox/... \
  ./internal/outbound/ ./internal/directory/ ./internal/gopool/ ./internal/netutil/ ./test/interop/
