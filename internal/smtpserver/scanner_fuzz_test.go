package smtpserver

import (
	"bytes"
	"testing"
)

// scanAll runs content through a contentScanner in the pieces cuts makes (each byte of cuts
// is the length of the next piece, 0 meaning 1), with headers to add as submission adds
// them, and returns what reached the draft and the scanner.
func scanAll(content []byte, cuts []byte, limit int64, bdat bool) ([]byte, *contentScanner) {
	var out bytes.Buffer
	c := &contentScanner{w: &out, max: limit, inHeader: true, checkEOL: bdat,
		addHeaders: func(hasMessageID, hasDate bool) string {
			var add string
			if !hasMessageID {
				add += "Message-ID: <id@host>\r\n"
			}
			if !hasDate {
				add += "Date: now\r\n"
			}
			return add
		}}
	for i := 0; len(content) > 0; i++ {
		n := len(content)
		if len(cuts) > 0 {
			n = min(n, max(int(cuts[i%len(cuts)]), 1))
		}
		c.Write(content[:n])
		content = content[n:]
	}
	c.finish()
	return out.Bytes(), c
}

// FuzzContentScanner: however the client's data is split into writes, the scanner passes
// the same bytes to the draft (with the same headers added in the same place) and reaches
// the same verdict: Received count, Message-ID and Date seen, bare line endings, size (a
// message over the limit is refused, so what reached its draft does not matter).
func FuzzContentScanner(f *testing.F) {
	f.Add([]byte("Subject: x\r\nReceived: a\r\n\r\nbody\r\n"), []byte{1, 2, 3}, int64(1000), false)
	f.Add([]byte("Message-ID: <a@b>\r\nDate: d\r\n\r\n"), []byte{5}, int64(1000), true)
	f.Add([]byte("X: y\r\n\r\nbare\rcr\nlf\r\n"), []byte{7, 1}, int64(10), true)
	f.Add([]byte("no blank line\r\nreceived: x"), []byte{13}, int64(1000), false)
	f.Fuzz(func(t *testing.T, content, cuts []byte, limit int64, bdat bool) {
		if limit < 0 {
			limit = -limit
		}
		want, w := scanAll(content, nil, limit, bdat)
		got, g := scanAll(content, cuts, limit, bdat)
		// Past the size limit the message is refused and what reached the draft is dropped.
		if !w.over && !bytes.Equal(got, want) {
			t.Fatalf("content %q in pieces %v:\n got %q\nwant %q", content, cuts, got, want)
		}
		if g.received != w.received || g.hasMessageID != w.hasMessageID || g.hasDate != w.hasDate ||
			g.bareEOL != w.bareEOL || g.over != w.over || g.n != w.n {
			t.Fatalf("content %q in pieces %v: verdict %+v, whole %+v", content, cuts, *g, *w)
		}
	})
}
