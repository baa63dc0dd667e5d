#!/usr/bin/env python3
"""Read the newest INBOX message with imaplib (STARTTLS or implicit TLS) or poplib and print it.

usage: read.py imap|imaps|pop3|pop3s HOST PORT USER PASSWORD
"""
import imaplib
import poplib
import ssl
import sys

proto, host, port, user, password = sys.argv[1:6]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
if proto.startswith("imap"):
    if proto == "imaps":
        m = imaplib.IMAP4_SSL(host, int(port), ssl_context=ctx)
    else:
        m = imaplib.IMAP4(host, int(port))
        m.starttls(ssl_context=ctx)
    m.login(user, password)
    typ, data = m.select("INBOX", readonly=True)
    n = int(data[0])
    typ, data = m.fetch(str(n), "(BODY.PEEK[])")
    sys.stdout.buffer.write(data[0][1])
    m.logout()
else:
    if proto == "pop3s":
        p = poplib.POP3_SSL(host, int(port), context=ctx)
    else:
        p = poplib.POP3(host, int(port))
        p.stls(context=ctx)
    p.user(user)
    p.pass_(password)
    count, _ = p.stat()
    resp, lines, octets = p.retr(count)
    sys.stdout.buffer.write(b"\r\n".join(lines) + b"\r\n")
    p.quit()
