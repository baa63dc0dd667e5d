package imapserver

import (
	"strings"
	"testing"

	"yubin/internal/mailbox/mailtest"
)

func TestSmoke(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	for i := 1; i <= 3; i++ {
		ts.Deliver(ts.Account.ID, mailtest.Message(i, "hello"))
	}
	cl := ts.loginTLS(t)
	u := cl.ok("LIST \"\" \"*\"")
	t.Logf("%q", u)
	u = cl.ok("SELECT INBOX")
	t.Logf("%q", u)
	u = cl.ok("FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE)")
	t.Logf("%q", u)
	u = cl.ok("FETCH 2 (BODY[HEADER.FIELDS (Subject)] BODY[TEXT]<0.10>)")
	t.Logf("%q", u)
	u = cl.ok("UID SEARCH HEADER Message-ID msg2")
	t.Logf("%q", u)
	if !strings.Contains(strings.Join(u, "\n"), "SEARCH 2") {
		t.Error("search")
	}
}
