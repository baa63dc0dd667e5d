#!/usr/bin/env python3
"""Send one message file with Python's smtplib, as a mail program would.

usage: send.py HOST PORT FROM TO FILE [--starttls] [--smtputf8]
Prints the server's final reply; exits 1 when the server refuses the message.
"""
import smtplib
import ssl
import sys

host, port, sender, rcpt, path = sys.argv[1:6]
flags = set(sys.argv[6:])
with open(path, "rb") as f:
    data = f.read()
opts = ["SMTPUTF8"] if "--smtputf8" in flags else []
if data and max(data) > 127:
    opts.append("BODY=8BITMIME")
with smtplib.SMTP(host, int(port), local_hostname="client.test", timeout=30) as s:
    s.ehlo()
    if "--starttls" in flags:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s.starttls(context=ctx)
        s.ehlo()
    try:
        refused = s.sendmail(sender, [rcpt], data, mail_options=opts)
    except smtplib.SMTPException as e:
        print("refused:", e)
        sys.exit(1)
    if refused:
        print("refused recipients:", refused)
        sys.exit(1)
print("sent")
