#!/usr/bin/env python3
"""Submit one message with Python's smtplib, as a mail client does on 587 or 465.

usage: submit.py MODE HOST PORT USER PASSWORD FROM TO FILE

MODE is one of:
  starttls        SMTP, starttls(), login() (smtplib picks PLAIN), sendmail()
  starttls-login  the same, forcing the LOGIN mechanism (smtplib sends the user name as an
                  initial response)
  ssl             SMTP_SSL (implicit TLS from the first byte), login(), sendmail()
  cleartext       SMTP without STARTTLS: login() must raise SMTPNotSupportedError because
                  AUTH is not offered in clear text, and MAIL must then be refused with 530.

Prints what happened; exits 0 when the mode's expectation held, 1 otherwise.
"""
import smtplib
import ssl
import sys

mode, host, port, user, password, sender, rcpt, path = sys.argv[1:9]
with open(path, "rb") as f:
    data = f.read()

ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE


def send(s):
    refused = s.sendmail(sender, [rcpt], data)
    if refused:
        print("refused recipients:", refused)
        sys.exit(1)
    print("sent")


if mode == "ssl":
    with smtplib.SMTP_SSL(host, int(port), local_hostname="client.test", timeout=30, context=ctx) as s:
        s.login(user, password)
        send(s)
elif mode in ("starttls", "starttls-login"):
    with smtplib.SMTP(host, int(port), local_hostname="client.test", timeout=30) as s:
        s.ehlo()
        s.starttls(context=ctx)
        s.ehlo()
        if mode == "starttls-login":
            s.user, s.password = user, password
            code, resp = s.auth("LOGIN", s.auth_login)
            print("auth:", code, resp.decode())
        else:
            s.login(user, password)
        send(s)
elif mode == "cleartext":
    with smtplib.SMTP(host, int(port), local_hostname="client.test", timeout=30) as s:
        s.ehlo()
        print("auth offered:", s.has_extn("auth"))
        print("starttls offered:", s.has_extn("starttls"))
        try:
            s.login(user, password)
        except smtplib.SMTPNotSupportedError as e:
            print("login refused:", e)
        else:
            print("login succeeded in clear text")
            sys.exit(1)
        try:
            s.sendmail(sender, [rcpt], data)
        except smtplib.SMTPSenderRefused as e:
            print("mail refused:", e.smtp_code, e.smtp_error.decode())
        else:
            print("mail accepted without authentication")
            sys.exit(1)
else:
    print("unknown mode", mode)
    sys.exit(2)
