package imapserver

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The ENVELOPE served from the cache is byte for byte the one served while parsing the
// message, and SEARCH HEADER (SQL candidates, then the exact check) finds what a scan of
// every header with headerMatch finds, before and after the cache is filled.
func TestCachedEnvelopeAndHeaderSearch(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	for i, h := range trickyHeaders {
		ts.Deliver(ts.Account.ID, h+"\r\nbody "+strconv.Itoa(i)+"\r\n")
	}
	cl := ts.loginTLS(t)
	cl.ok("SELECT INBOX")

	searches := []struct{ key, value string }{
		{"Subject", "ärger"}, {"Subject", "ÄRGER MIT"}, {"subject", "upper case"}, {"SUBJECT", "across three"}, {"Subject", "across  three"},
		{"From", "jürgen"}, {"From", "EXAMPLE.COM"}, {"Message-ID", "folded@ example"}, {"Subject", "σίσυφος"},
		{"Subject", "😀"}, {"Cc", "team:"}, {"X-Weird", "=?utf-8?b?"}, {"Subject", ""}, {"Date", "zone"},
		{"From", "nobody-has-this"}, {"Subject", "ß"},
	}
	want := make([]string, len(searches))
	for i, sc := range searches {
		var uids []string
		for j, h := range trickyHeaders {
			if headerMatch(parseHeaderFields([]byte(h)), sc.key, sc.value) {
				uids = append(uids, strconv.Itoa(j+1))
			}
		}
		want[i] = strings.Join(uids, " ")
		t.Logf("HEADER %s %q: %s", sc.key, sc.value, want[i])
	}
	search := func(when string) {
		t.Helper()
		for i, sc := range searches {
			u := cl.ok("UID SEARCH CHARSET UTF-8 HEADER %s {%d+}\r\n%s", sc.key, len(sc.value), sc.value)
			got := strings.TrimSpace(strings.TrimPrefix(joined(u), "* SEARCH"))
			if got != want[i] {
				t.Errorf("%s: HEADER %s %q = %q, want %q", when, sc.key, sc.value, got, want[i])
			}
		}
	}
	search("uncached")
	first := cl.ok("FETCH 1:* (ENVELOPE)")
	second := cl.ok("FETCH 1:* (ENVELOPE)")
	if len(first) != len(trickyHeaders) || !slices.Equal(first, second) {
		t.Errorf("cached ENVELOPE differs:\n%s\n---\n%s", joined(first), joined(second))
	}
	search("cached")

	// A message appended later is found before it is parsed.
	ts.Deliver(ts.Account.ID, "Subject: late =?utf-8?q?=C3=84RGER?=\r\n\r\nx\r\n")
	cl.ok("NOOP")
	u := cl.ok("UID SEARCH CHARSET UTF-8 HEADER Subject {6+}\r\n%s", "ärger")
	if got, w := strings.TrimSpace(strings.TrimPrefix(joined(u), "* SEARCH")), want[0]+" "+fmt.Sprint(len(trickyHeaders)+1); got != w {
		t.Errorf("after delivery: %q, want %q", got, w)
	}
}

// A FETCH ENVELOPE caches a message without its MIME structure; BODYSTRUCTURE, sections and
// SEARCH BODY then parse it fully, and give what they give for a message never fetched.
func TestStructureAfterHeaderOnlyCache(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	ts.Deliver(ts.Account.ID, multipartMsg)
	ts.Deliver(ts.Account.ID, multipartMsg)
	cl := ts.loginTLS(t)
	cl.ok("SELECT INBOX")
	cl.ok("FETCH 1 (ENVELOPE)")
	for _, items := range []string{"BODYSTRUCTURE", "BODY.PEEK[2]", "BODY.PEEK[3.2.MIME]", "BODY.PEEK[1.HEADER.FIELDS (CONTENT-TYPE)]"} {
		u := cl.ok("FETCH 1:2 (%s)", items)
		if len(u) != 2 || strings.TrimPrefix(u[0], "* 1 ") != strings.TrimPrefix(u[1], "* 2 ") {
			t.Errorf("%s: %q", items, u)
		}
	}
	ts.Deliver(ts.Account.ID, multipartMsg)
	cl.ok("NOOP")
	cl.ok("FETCH 3 (ENVELOPE)")
	if u := cl.ok("UID SEARCH BODY html"); joined(u) != "* SEARCH 1 2 3" {
		t.Errorf("SEARCH BODY after ENVELOPE: %q", u)
	}
	cl.ok("FETCH 2 (ENVELOPE)")
	u := cl.ok("FETCH 1:3 (BODYSTRUCTURE)")
	if len(u) != 3 || strings.TrimPrefix(u[0], "* 1 ") != strings.TrimPrefix(u[2], "* 3 ") || !strings.Contains(u[0], `"alternative"`) {
		t.Errorf("BODYSTRUCTURE once cached: %q", u)
	}
}

// Envelopes and sizes served from memory come with the current flags, and equal what the
// store's cache and a fresh parse give.
func TestEnvelopeMemoryCache(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	for i, h := range trickyHeaders[:4] {
		ts.Deliver(ts.Account.ID, h+"\r\nbody "+strconv.Itoa(i)+"\r\n")
	}
	a := ts.loginTLS(t)
	a.ok("SELECT INBOX")
	first := a.ok("FETCH 1:* (FLAGS RFC822.SIZE ENVELOPE)")
	ts.Srv.envs.mu.Lock()
	n := len(ts.Srv.envs.m)
	ts.Srv.envs.mu.Unlock()
	if n != 4 {
		t.Fatalf("%d envelopes in memory, want 4", n)
	}
	a.ok("STORE 2 +FLAGS (\\Flagged)")
	b := ts.loginTLS(t)
	b.ok("SELECT INBOX")
	second := b.ok("FETCH 1:* (FLAGS RFC822.SIZE ENVELOPE)")
	if len(second) != 4 || !strings.Contains(second[1], `\Flagged`) {
		t.Fatalf("flags not current: %q", second)
	}
	second[1] = strings.Replace(second[1], `FLAGS (\Flagged)`, "FLAGS ()", 1)
	if !slices.Equal(first, second) {
		t.Errorf("from memory:\n%s\nfirst:\n%s", joined(second), joined(first))
	}
	// Without the memory cache, from the store's.
	ts.Srv.envs.mu.Lock()
	clear(ts.Srv.envs.m)
	ts.Srv.envs.mu.Unlock()
	third := b.ok("FETCH 1:* (FLAGS RFC822.SIZE ENVELOPE)")
	third[1] = strings.Replace(third[1], `FLAGS (\Flagged)`, "FLAGS ()", 1)
	if !slices.Equal(first, third) {
		t.Errorf("from the store's cache:\n%s\nfirst:\n%s", joined(third), joined(first))
	}
}

func TestEnvCacheBound(t *testing.T) {
	t.Parallel()
	var c envCache
	for i := range envCacheMax + 10 {
		c.put(strconv.Itoa(i), memEnvelope{size: int64(i)})
	}
	if len(c.m) > envCacheMax || len(c.m) < envCacheMax/2 {
		t.Errorf("%d entries", len(c.m))
	}
	if e, ok := c.m[strconv.Itoa(envCacheMax+9)]; !ok || e.size != envCacheMax+9 {
		t.Error("last entry missing")
	}
}

// A message that cannot be read fails the FETCH with NO, including while the next chunk is
// being loaded, and the session goes on.
func TestFetchEnvelopesUnreadable(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	fill(ts, fetchChunk+10)
	inbox, _ := ts.Store.GetMailbox(context.Background(), ts.Account.ID, "INBOX")
	infos, _ := ts.Store.MessagesByUID(context.Background(), inbox.ID, []uint32{5})
	r, _, err := ts.Store.OpenMessage(context.Background(), infos[0].MessageID)
	if err != nil {
		t.Fatal(err)
	}
	f, ok := r.(*os.File)
	if !ok {
		t.Skip("message not stored as a file")
	}
	r.Close()
	if err := os.Remove(f.Name()); err != nil {
		t.Fatal(err)
	}
	cl := ts.loginTLS(t)
	cl.ok("SELECT INBOX")
	if _, st := cl.cmd("FETCH 1:* (ENVELOPE)"); !strings.HasPrefix(st, "NO") {
		t.Errorf("FETCH with an unreadable message: %s", st)
	}
	if u := cl.ok("FETCH 6:* (ENVELOPE)"); len(u) != fetchChunk+5 {
		t.Errorf("FETCH of the others: %d responses", len(u))
	}
}
