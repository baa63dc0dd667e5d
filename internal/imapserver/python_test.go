package imapserver

import (
	"fmt"
	"net"
	"testing"

	"yubin/internal/mailbox/mailtest"
)

// TestPythonIMAP runs a mail client's whole session with Python's imaplib, over STARTTLS and
// over implicit TLS: login, LIST, SELECT, FETCH, SEARCH, STORE, MOVE, EXPUNGE, APPEND to
// Sent, CREATE/RENAME/DELETE, IDLE woken by an SMTP-style delivery within one second, and a
// second session that sees the first one's changes.
func TestPythonIMAP(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"starttls", "tls"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t)
			for i := 1; i <= 5; i++ {
				ts.Deliver(ts.Account.ID, mailtest.Message(i, fmt.Sprintf("hello %d", i)))
			}
			addr := ts.Plain
			if mode == "tls" {
				addr = ts.Implicit
			}
			host, port, _ := net.SplitHostPort(addr)
			mailtest.Script(t, "imap_scenario.py", func(line string) {
				if line == "IDLE-READY" {
					if err := ts.DeliverErr(ts.Account.ID, mailtest.Message(6, "delivered during IDLE")); err != nil {
						t.Error(err)
					}
				}
			}, mode, host, port, "user@example.test", mailtest.Password)
		})
	}
}
