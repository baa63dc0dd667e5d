#!/usr/bin/env python3
"""A mail client's session against yubin's IMAP server, with Python's imaplib.

usage: imap_scenario.py starttls|tls HOST PORT USER PASSWORD

The Go test has delivered five messages ("hello 1" .. "hello 5") into INBOX. When the script
prints IDLE-READY it waits in IDLE, and the test delivers one more message: the script must
see its EXISTS within one second. Every check raises on failure; the last line is OK.
"""
import imaplib
import re
import socket
import ssl
import sys
import time

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
        return imaplib.IMAP4_SSL(host, port, ssl_context=ctx)
    m = imaplib.IMAP4(host, port)
    caps = m.capabilities
    check("STARTTLS" in caps and "LOGINDISABLED" in caps, "STARTTLS and LOGINDISABLED before TLS: %s" % (caps,))
    try:
        m.login(user, password)
        raise SystemExit("FAILED: LOGIN accepted in clear text")
    except imaplib.IMAP4.error:
        pass
    m.starttls(ssl_context=ctx)
    check("LOGINDISABLED" not in m.capabilities and "STARTTLS" not in m.capabilities, "capabilities after STARTTLS: %s" % (m.capabilities,))
    return m


def ok(resp, what):
    typ, data = resp
    check(typ == "OK", "%s: %s %s" % (what, typ, data))
    return data


m = connect()
try:
    m.login(user, "wrong password")
    raise SystemExit("FAILED: wrong password accepted")
except imaplib.IMAP4.error as e:
    check("AUTHENTICATIONFAILED" in str(e), "wrong password: %s" % e)
ok(m.login(user, password), "login")
caps = ok(m.capability(), "capability")[0].decode().upper().split()
for cap in ("IMAP4REV2", "IMAP4REV1", "IDLE", "MOVE", "UIDPLUS", "SPECIAL-USE", "NAMESPACE", "LITERAL+", "STATUS=SIZE", "UNSELECT", "ENABLE"):
    check(cap in caps, "capability " + cap)
check(any(c.startswith("APPENDLIMIT=") for c in caps), "APPENDLIMIT")
for cap in ("CONDSTORE", "QRESYNC", "COMPRESS=DEFLATE", "ID"):
    check(cap not in caps, "no fake " + cap)

# LIST: the default mailboxes with their special-use attributes.
lst = b"\n".join(ok(m.list(), "list"))
for name, attr in ((b"Sent", b"\\Sent"), (b"Drafts", b"\\Drafts"), (b"Trash", b"\\Trash"), (b"Junk", b"\\Junk"), (b"Archive", b"\\Archive")):
    check(re.search(rb"\(([^)]*)" + re.escape(attr) + rb"[^)]*\) \"/\" \"?" + name, lst) is not None, "LIST %s %s" % (name, attr))
check(b"INBOX" in lst, "INBOX listed")

# SELECT and FETCH.
data = ok(m.select("INBOX"), "select")
check(data[0] == b"5", "5 messages in INBOX, got %s" % data)
data = ok(m.fetch("1:*", "(FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)"), "fetch 1:*")
envs = [d for d in data if isinstance(d, bytes)] + [d[0] for d in data if isinstance(d, tuple)]
check(len([e for e in envs if b"ENVELOPE" in e]) == 5, "five envelopes")
check(b'"hello 3"' in b"".join(envs), "subject in the envelope")
data = ok(m.fetch("2", "(BODY.PEEK[])"), "fetch body")
check(b"Body of message 2." in data[0][1], "whole body of message 2")
data = ok(m.fetch("2", "(BODY.PEEK[TEXT]<0.7>)"), "partial fetch")
check(data[0][1] == b"Body of", "partial range: %r" % (data[0][1],))
data = ok(m.fetch("2", "(FLAGS)"), "flags after peek")
check(b"\\Seen" not in data[0], "PEEK leaves \\Seen unset")
data = ok(m.fetch("2", "(BODY[HEADER.FIELDS (SUBJECT)])"), "header fields")
check(data[0][1].strip() == b"Subject: hello 2", "HEADER.FIELDS: %r" % (data[0][1],))
data = ok(m.fetch("2", "(FLAGS)"), "flags after fetch")
check(b"\\Seen" in data[0], "BODY[] sets \\Seen in standard case: %r" % (data[0],))
data = ok(m.fetch("1", "(BODYSTRUCTURE)"), "bodystructure")
check(b'("text" "plain"' in data[0].lower() or b'"text" "plain"' in data[0], "BODYSTRUCTURE %r" % (data[0],))

# SEARCH by flags, header, body, size and date.
check(ok(m.search(None, "SEEN"), "search seen")[0] == b"2", "SEARCH SEEN")
check(ok(m.search(None, "UNSEEN"), "search unseen")[0] == b"1 3 4 5", "SEARCH UNSEEN")
check(ok(m.search(None, "SUBJECT", '"hello 4"'), "search subject")[0] == b"4", "SEARCH SUBJECT")
check(ok(m.search(None, "HEADER", "Message-ID", "msg5@"), "search header")[0] == b"5", "SEARCH HEADER")
check(ok(m.search(None, "BODY", '"message 3."'), "search body")[0] == b"3", "SEARCH BODY")
check(ok(m.search(None, "TEXT", '"hello 1"'), "search text")[0] == b"1", "SEARCH TEXT")
check(ok(m.search(None, "LARGER", "10", "SMALLER", "100000"), "search size")[0] == b"1 2 3 4 5", "SEARCH LARGER SMALLER")
check(ok(m.search(None, "SINCE", "1-Jan-2000"), "search since")[0] == b"1 2 3 4 5", "SEARCH SINCE")
check(ok(m.search(None, "SENTBEFORE", "1-Jan-2000"), "search sentbefore")[0] == b"", "SEARCH SENTBEFORE")
check(ok(m.search(None, "OR", "SUBJECT", '"hello 1"', "NOT", "UNSEEN"), "search or")[0] == b"1 2", "SEARCH OR NOT")
check(ok(m.uid("SEARCH", None, "HEADER", "X-Seq", "3"), "uid search")[0] == b"3", "UID SEARCH")

# STORE flags; a second session sees the change on its next command.
other = connect()
ok(other.login(user, password), "second login")
ok(other.select("INBOX"), "second select")
data = ok(m.store("1", "+FLAGS", "(\\Flagged $Label)"), "store")
check(b"\\Flagged" in data[0] and b"$Label" in data[0], "STORE answers the new flags: %r" % (data[0],))
typ, data = other.noop()
other_updates = other.untagged_responses.get("FETCH", [])
check(any(b"\\Flagged" in u for u in other_updates), "other session sees FETCH FLAGS: %r" % (other_updates,))

# MOVE to Archive; EXPUNGE of a deleted message; both seen by the other session.
data = ok(m.uid("MOVE", "1", "Archive"), "move")
check(m.untagged_responses.pop("EXPUNGE", None) == [b"1"], "MOVE answers EXPUNGE 1")
check(ok(m.status("Archive", "(MESSAGES)"), "status")[0].endswith(b"(MESSAGES 1)"), "Archive has the moved message")
ok(m.store("1", "+FLAGS", "(\\Deleted)"), "flag deleted")
data = ok(m.expunge(), "expunge")
check(data == [b"1"], "EXPUNGE 1 (message 2 after the move): %r" % (data,))
data = ok(m.select("INBOX"), "reselect")
check(data[0] == b"3", "3 messages left")
other.untagged_responses.clear()
ok(other.noop(), "noop")
check(other.untagged_responses.get("EXPUNGE", []) == [b"2", b"1"], "other session sees two EXPUNGEs, highest first: %r" % (other.untagged_responses,))

# APPEND to Sent.
msg = b"From: user@example.test\r\nTo: friend@example.net\r\nSubject: sent by imaplib\r\n\r\nHi there.\r\n"
typ, data = m.append("Sent", "(\\Seen)", imaplib.Time2Internaldate(time.time()), msg)
check(typ == "OK" and b"APPENDUID" in data[0], "APPEND with APPENDUID: %r" % (data,))
ok(m.select("Sent"), "select Sent")
data = ok(m.fetch("1", "(FLAGS BODY.PEEK[])"), "fetch appended")
check(data[0][1] == msg and b"\\Seen" in data[0][0], "appended message and flags: %r" % (data,))
ok(m.create("Projects/2026"), "create")
check(b"Projects/2026" in b"".join(ok(m.list('""', "Projects/*"), "list pattern")), "created mailbox listed")
ok(m.rename("Projects", "Work"), "rename")
check(b"Work/2026" in b"".join(ok(m.list('""', "*"), "list after rename")), "child renamed")
ok(m.delete("Work/2026"), "delete")

# IDLE: a delivery shows up within one second.
ok(m.select("INBOX"), "select INBOX for IDLE")
tag = m._new_tag()
m.send(tag + b" IDLE\r\n")
cont = m.readline()
check(cont.startswith(b"+"), "IDLE continuation: %r" % (cont,))
m.sock.settimeout(1.0)
print("IDLE-READY", flush=True)
start = time.time()
line = m.readline()
check(line.strip().endswith(b"EXISTS"), "EXISTS in IDLE after %.3fs: %r" % (time.time() - start, line))
m.sock.settimeout(10)
m.send(b"DONE\r\n")
while True:
    line = m.readline()
    if line.startswith(tag):
        check(b"OK" in line, "IDLE completed")
        break
# The other session sees the new message on its next command.
other.untagged_responses.clear()
ok(other.noop(), "noop after delivery")
check(other.untagged_responses.get("EXISTS") == [b"4"], "other session: EXISTS 4: %r" % (other.untagged_responses,))

other.logout()
m.logout()
print("OK")
