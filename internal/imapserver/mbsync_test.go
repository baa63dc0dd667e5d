package imapserver

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"yubin/internal/mailbox/mailtest"
	"yubin/internal/store"
	"yubin/internal/testenv/tool"
)

// TestMbsync syncs a 1,000-message account to a local Maildir with mbsync (isync), changes
// flags and deletes messages on both sides, adds one locally, syncs again, and compares both
// ends message by message (Message-ID -> flags); over STARTTLS and implicit TLS.
func TestMbsync(t *testing.T) {
	t.Parallel()
	mbsync := tool.Need(t, "mbsync")
	const n = 1000
	for _, mode := range []string{"STARTTLS", "IMAPS"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t)
			deliverMany(t, ts, n)
			dir := t.TempDir()
			addr := ts.Plain
			if mode == "IMAPS" {
				addr = ts.Implicit
			}
			rc := writeMbsyncrc(t, dir, addr, mode, ts.CertPEM)
			run := func() {
				t.Helper()
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
				defer cancel()
				out, err := exec.CommandContext(ctx, mbsync, "-c", rc, "-a").CombinedOutput()
				if err != nil {
					t.Fatalf("mbsync: %v\n%s", err, out)
				}
			}
			run()
			local := readMaildir(t, filepath.Join(dir, "mail", "INBOX"))
			if len(local) != n {
				t.Fatalf("first sync: %d local messages, want %d", len(local), n)
			}
			compare(t, ts, local)

			// Server side: flag 100, mark 100 seen, expunge 50 (as another IMAP client would).
			ctx := context.Background()
			inbox, _ := ts.Store.GetMailbox(ctx, ts.Account.ID, "INBOX")
			ts.Store.StoreFlags(ctx, inbox.ID, seq(1, 100), store.FlagsAdd, []string{`\Flagged`})
			ts.Store.StoreFlags(ctx, inbox.ID, seq(101, 200), store.FlagsAdd, []string{`\Seen`, "$Label1"})
			ts.Store.StoreFlags(ctx, inbox.ID, seq(201, 250), store.FlagsAdd, []string{`\Deleted`})
			ts.Store.Expunge(ctx, inbox.ID, nil)
			// Local side: mark 50 replied and seen, delete 50, add one new message.
			files := localFiles(t, filepath.Join(dir, "mail", "INBOX"))
			for i := 300; i < 350; i++ {
				f := files[fmt.Sprintf("<msg%d@example.net>", i)]
				base, flags, _ := strings.Cut(f, ":2,")
				if err := os.Rename(f, base+":2,"+sortFlags(flags+"RS")); err != nil {
					t.Fatal(err)
				}
			}
			for i := 400; i < 450; i++ {
				os.Remove(files[fmt.Sprintf("<msg%d@example.net>", i)])
			}
			newMsg := "From: user@example.test\r\nSubject: written offline\r\nMessage-ID: <local1@example.net>\r\n\r\nhello\r\n"
			if err := os.WriteFile(filepath.Join(dir, "mail", "INBOX", "new", fmt.Sprintf("%d.local1.host", time.Now().Unix())), []byte(newMsg), 0o600); err != nil {
				t.Fatal(err)
			}
			run()
			local = readMaildir(t, filepath.Join(dir, "mail", "INBOX"))
			if want := n - 50 - 50 + 1; len(local) != want {
				t.Errorf("second sync: %d local messages, want %d", len(local), want)
			}
			got := compare(t, ts, local)
			for id, want := range map[string]string{
				"<msg1@example.net>":   "F",
				"<msg150@example.net>": "S",
				"<msg320@example.net>": "RS",
				"<local1@example.net>": "",
			} {
				if f, ok := got[id]; !ok || f != want {
					t.Errorf("%s: flags %q (present %v), want %q", id, f, ok, want)
				}
			}
			for _, id := range []string{"<msg220@example.net>", "<msg420@example.net>"} {
				if _, ok := got[id]; ok {
					t.Errorf("%s should be deleted on both sides", id)
				}
			}
		})
	}
}

func seq(a, b uint32) []uint32 {
	var s []uint32
	for i := a; i <= b; i++ {
		s = append(s, i)
	}
	return s
}

// deliverMany commits n messages one after the other, so that message i has UID i.
func deliverMany(t *testing.T, ts *testServer, n int) {
	t.Helper()
	for i := 1; i <= n; i++ {
		ts.Deliver(ts.Account.ID, mailtest.Message(i, fmt.Sprintf("message %d", i)))
	}
}

func writeMbsyncrc(t *testing.T, dir, addr, sslType string, cert []byte) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	certFile := filepath.Join(dir, "cert.pem")
	os.WriteFile(certFile, cert, 0o600)
	os.MkdirAll(filepath.Join(dir, "mail"), 0o700)
	rc := fmt.Sprintf(`IMAPAccount yubin
Host %s
Port %s
User user@example.test
Pass "%s"
SSLType %s
CertificateFile %s
PipelineDepth 50

IMAPStore remote
Account yubin

MaildirStore local
Path %s/
Inbox %s/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns *
Create Both
Expunge Both
SyncState *
CopyArrivalDate yes
`, host, port, mailtest.Password, sslType, certFile, filepath.Join(dir, "mail"), filepath.Join(dir, "mail"))
	p := filepath.Join(dir, "mbsyncrc")
	if err := os.WriteFile(p, []byte(rc), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// localFiles maps Message-ID to the file holding it in a Maildir (cur/ and new/).
func localFiles(t *testing.T, maildir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, sub := range []string{"cur", "new"} {
		ents, _ := os.ReadDir(filepath.Join(maildir, sub))
		for _, e := range ents {
			p := filepath.Join(maildir, sub, e.Name())
			out[messageID(t, p)] = p
		}
	}
	return out
}

// readMaildir maps Message-ID to IMAP-style flag letters from the file names (RFC-less
// Maildir convention: D F P R S T).
func readMaildir(t *testing.T, maildir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for id, p := range localFiles(t, maildir) {
		_, flags, _ := strings.Cut(filepath.Base(p), ":2,")
		out[id] = sortFlags(strings.ReplaceAll(flags, "P", ""))
	}
	return out
}

func messageID(t *testing.T, path string) string {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return messageIDFrom(f)
}

func messageIDFrom(r io.Reader) string {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		l := sc.Text()
		if l == "" {
			break
		}
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(k, "Message-ID") {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func sortFlags(f string) string {
	b := []byte(f)
	slices.Sort(b)
	return string(slices.Compact(b))
}

var letters = map[string]string{`\Draft`: "D", `\Flagged`: "F", `\Answered`: "R", `\Seen`: "S", `\Deleted`: "T"}

// compare checks that the server's INBOX holds exactly the local messages with the same
// flags, and returns the server's view.
func compare(t *testing.T, ts *testServer, local map[string]string) map[string]string {
	t.Helper()
	ctx := context.Background()
	msgs, err := ts.Store.ListMessages(ctx, ts.Account.ID, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	server := map[string]string{}
	for _, m := range msgs {
		r, _, err := ts.Store.OpenMessage(ctx, m.MessageID)
		if err != nil {
			t.Fatal(err)
		}
		id := messageIDFrom(r)
		r.Close()
		var f string
		for _, fl := range m.Flags {
			f += letters[fl]
		}
		server[id] = sortFlags(f)
	}
	if !maps.Equal(server, local) {
		var diff []string
		for id, f := range server {
			if lf, ok := local[id]; !ok || lf != f {
				diff = append(diff, fmt.Sprintf("%s server %q local %q (%v)", id, f, lf, ok))
			}
		}
		for id := range local {
			if _, ok := server[id]; !ok {
				diff = append(diff, id+" only local")
			}
		}
		slices.Sort(diff)
		if len(diff) > 10 {
			diff = diff[:10]
		}
		t.Errorf("server (%d) and Maildir (%d) differ: %s", len(server), len(local), strings.Join(diff, "; "))
	}
	return server
}
