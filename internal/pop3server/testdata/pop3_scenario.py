#!/usr/bin/env python3
"""A POP3 client's session against yubin with Python's poplib.

usage: pop3_scenario.py starttls|tls HOST PORT USER PASSWORD

The Go test has delivered three messages; one body line starts with a dot.
"""
import poplib
import ssl
import sys

mode, host, port, user, password = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE


def check(cond, what):
    if not cond:
        raise SystemExit("FAILED: " + what)
    print("ok:", what)


def connect():
    if mode == "tls":
        return poplib.POP3_SSL(host, port, context=ctx)
    p = poplib.POP3(host, port)
    caps = p.capa()
    check("STLS" in caps and "USER" not in caps, "STLS offered, USER not before TLS: %s" % (caps,))
    try:
        p.user(user)
        raise SystemExit("FAILED: USER accepted in clear text")
    except poplib.error_proto:
        pass
    p.stls(context=ctx)
    return p


p = connect()
check("USER" in p.capa() and "UIDL" in p.capa(), "capabilities after TLS")
p.user(user)
try:
    p.pass_("wrong")
    raise SystemExit("FAILED: wrong password accepted")
except poplib.error_proto as e:
    check(b"[AUTH]" in e.args[0], "wrong password: %s" % e)
p = connect()
p.user(user)
p.pass_(password)
count, size = p.stat()
check(count == 3 and size > 0, "STAT %d %d" % (count, size))
resp, listing, _ = p.list()
check(len(listing) == 3, "LIST %r" % (listing,))
resp, uidls, _ = p.uidl()
check(len(set(u.split()[1] for u in uidls)) == 3, "UIDL unique %r" % (uidls,))
resp, lines, octets = p.retr(2)
check(b"Subject: pop 2" in lines and b".starts with a dot" in lines, "RETR 2 (dot-unstuffed): %r" % (lines,))
resp, lines, _ = p.top(1, 0)
check(b"Subject: pop 1" in lines and not any(l.startswith(b"Body") for l in lines), "TOP 1 0: %r" % (lines,))
# A second session is refused while this one holds the maildrop.
q = connect()
q.user(user)
try:
    q.pass_(password)
    raise SystemExit("FAILED: second session got the maildrop")
except poplib.error_proto as e:
    check(b"[IN-USE]" in e.args[0], "second session: %s" % e)
q.quit()
p.dele(1)
p.rset()
p.dele(1)
p.dele(3)
check(p.stat()[0] == 1, "deleted messages are hidden")
p.quit()
p = connect()
p.user(user)
p.pass_(password)
check(p.stat()[0] == 1, "deletions applied at QUIT")
resp, lines, _ = p.retr(1)
check(b"Subject: pop 2" in lines, "message 2 is left")
p.quit()
print("OK")
