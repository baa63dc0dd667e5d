package interop

import (
	"bytes"
	"net"
	"os/exec"
	"testing"

	"yubin/internal/testenv"
)

// TestReadOverIMAPAndPOP3: a message delivered over SMTP to the whole system is read back by
// Python's imaplib and poplib over each of the four listeners, byte for byte as stored.
func TestReadOverIMAPAndPOP3(t *testing.T) {
	t.Parallel()
	py := testenv.NeedTool(t, "python3")
	y := testenv.Start(t)
	c := testenv.Dial(t, y.Addr)
	c.Cmd("EHLO client.test", 250)
	m := message("read me", dotBody...)
	if r := c.Send("sender@example.org", []string{"user@example.test"}, string(bytes.ReplaceAll(m, []byte("\r\n."), []byte("\r\n..")))+".\r\n"); r.Code != 250 {
		t.Fatalf("send: %s", r.Error())
	}
	stored := y.Messages("user@example.test", "INBOX")[0]
	for proto, addr := range map[string]string{"imap": y.IMAPAddr, "imaps": y.IMAPSAddr, "pop3": y.POP3Addr, "pop3s": y.POP3SAddr} {
		host, port, _ := net.SplitHostPort(addr)
		out, err := exec.Command(py, "testdata/read.py", proto, host, port, "user@example.test", "password123").Output()
		if err != nil {
			t.Errorf("%s: %v", proto, err)
			continue
		}
		if proto[:4] == "pop3" {
			// POP3 is dot-stuffed on the wire and poplib strips the stuffing; lines are the same.
			out = bytes.TrimSuffix(out, []byte("\r\n"))
			if !bytes.Equal(out, bytes.TrimSuffix(stored, []byte("\r\n"))) {
				t.Errorf("%s: read back differs:\n%q\nwant\n%q", proto, out, stored)
			}
			continue
		}
		if !bytes.Equal(out, stored) {
			t.Errorf("%s: read back differs:\n%q\nwant\n%q", proto, out, stored)
		}
	}
}
