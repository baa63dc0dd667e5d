"""dkimverify.py DNS_HOST DNS_PORT FILE

Verifies every DKIM-Signature of the message in FILE with dkimpy (Debian's python3-dkim), an
implementation independent of yubin's. The public keys are fetched over DNS from the server
at DNS_HOST:DNS_PORT (the test's fake DNS) with dnspython: UDP first, TCP when the answer is
truncated, never the machine's resolver.

Prints one line per signature, topmost first:
    sig N d=DOMAIN s=SELECTOR a=ALGORITHM pass|fail [reason]
and a line per key fetched:
    dns NAME TXT found|missing
Exit status: 0 when every signature passes, 1 when one fails or there is none, 2 on usage.
"""

import logging
import sys

import dkim
import dkim.util
import dns.flags
import dns.message
import dns.query
import dns.rdatatype


def make_dnsfunc(host, port):
    def dnsfunc(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode("ascii")
        q = dns.message.make_query(name, dns.rdatatype.TXT)
        r = dns.query.udp(q, host, port=port, timeout=timeout)
        if r.flags & dns.flags.TC:
            r = dns.query.tcp(q, host, port=port, timeout=timeout)
        for rrset in r.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                for rdata in rrset:
                    print("dns %s TXT found" % name)
                    return b"".join(rdata.strings)
        print("dns %s TXT missing" % name)
        return None

    return dnsfunc


class Collect(logging.Handler):
    """Keeps dkimpy's log messages: they say why a signature failed."""

    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with open(path, "rb") as f:
        msg = f.read()
    dnsfunc = make_dnsfunc(host, port)
    headers, _ = dkim.rfc822_parse(msg)
    sigs = [v for k, v in headers if k.lower() == b"dkim-signature"]
    if not sigs:
        print("no DKIM-Signature")
        return 1
    ok = True
    for i, value in enumerate(sigs):
        tags = dkim.util.parse_tag_value(b"".join(value.split()))
        desc = "sig %d d=%s s=%s a=%s" % (
            i,
            tags.get(b"d", b"").decode(),
            tags.get(b"s", b"").decode(),
            tags.get(b"a", b"").decode(),
        )
        log = Collect()
        logger = logging.getLogger("dkimverify.%d" % i)
        logger.addHandler(log)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        try:
            d = dkim.DKIM(msg, logger=logger)
            good = d.verify(idx=i, dnsfunc=dnsfunc)
            reason = "; ".join(log.lines[-2:])
        except Exception as e:  # a malformed signature or key is a failure too
            good, reason = False, "%s: %s" % (type(e).__name__, e)
        print("%s %s %s" % (desc, "pass" if good else "fail", "" if good else reason))
        ok = ok and good
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
