package dsn

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message"

	"yubin/internal/smtp"
)

// FuzzBuild: whatever the remote server said, whatever the addresses and the original message
// hold, the report is well-formed: CRLF lines of at most 998 octets, three MIME parts that an
// independent parser finds, and the original returned unchanged under RET=FULL.
func FuzzBuild(f *testing.F) {
	f.Add("550 5.1.1 no such user", "bob@remote.example", "rfc822;bob+2B1@remote.example", "Subject: x\r\n\r\nbody\r\n")
	f.Add("421\nline two", "太郎@例え.jp", "utf-8;\\x{592A}", "From: 花子\r\n\r\n")
	f.Add("", "", "", "")
	f.Fuzz(func(t *testing.T, replyText, rcpt, orcpt, orig string) {
		orig = strings.ReplaceAll(strings.ReplaceAll(orig, "\r", ""), "\n", "\r\n")
		r := &Report{
			Hostname: "mail.example.org", To: "ana@example.org", MessageID: "r@x", Date: time.Unix(0, 0),
			Ret: "FULL", Original: strings.NewReader(orig), OriginalSize: int64(len(orig)),
			Recipients: []Recipient{{Address: rcpt, ORCPT: orcpt, Action: Failed, RemoteMTA: "mx",
				Reply: smtp.NewReply(550, "5.0.0", replyText)}},
		}
		m, err := r.Build()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasSuffix(m.Data, []byte("\r\n")) {
			t.Fatal("no final CRLF")
		}
		for _, l := range strings.Split(string(m.Data), "\r\n") {
			if len(l) > 998 || strings.ContainsAny(l, "\r\n") {
				t.Fatalf("bad line %q", l)
			}
		}
		e, err := message.Read(bytes.NewReader(m.Data))
		if err != nil {
			t.Fatal(err)
		}
		mr := e.MultipartReader()
		var parts [][]byte
		for {
			p, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(p.Body)
			parts = append(parts, b)
		}
		if len(parts) != 3 {
			t.Fatalf("%d parts", len(parts))
		}
		want := orig
		if want != "" && !strings.HasSuffix(want, "\r\n") {
			want += "\r\n"
		}
		if string(parts[2]) != want {
			t.Fatalf("original changed: %q -> %q", orig, parts[2])
		}
	})
}
