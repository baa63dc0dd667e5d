package imapserver

import (
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

// FuzzParseStructure: every part's offsets lie inside the message and in order, children
// inside their parent, whatever the input.
func FuzzParseStructure(f *testing.F) {
	f.Add(multipartMsg)
	f.Add("Subject: x\r\n\r\nbody")
	f.Add("Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n\r\n--a--")
	f.Add("Subject: x\r\n\r\nline 1\r\nline 2\n\r\n\r\nno end")
	f.Add("Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nbody\r\n")
	f.Add("Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n\r\none\r\n--a--\r\nepilogue\r\nmore\r\n")
	// Longer than the buffer of a scanner over a message in memory (memScanBufSize): a header
	// line, a part's line, a plain body.
	f.Add("Subject: " + strings.Repeat("s", 10000) + "\r\nFrom: a@b\r\n\r\nbody\r\n")
	f.Add("Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: text/plain\r\n\r\n" +
		strings.Repeat("x", 9000) + "\r\nshort\r\n--a\r\n\r\n" + strings.Repeat("line\r\n", 2000) + "--a--\r\n")
	f.Add("Subject: big\r\n\r\n" + strings.Repeat("1XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX\r\n", 2500) + "no end")
	f.Fuzz(func(t *testing.T, msg string) {
		root, err := parseStructure(strings.NewReader(msg))
		if err != nil {
			t.Fatal(err)
		}
		var check func(p *part, lo, hi int64)
		check = func(p *part, lo, hi int64) {
			if !(lo <= p.HdrStart && p.HdrStart <= p.BodyStart && p.BodyStart <= p.BodyEnd && p.BodyEnd <= hi) {
				t.Fatalf("part %+v outside [%d, %d]", p, lo, hi)
			}
			for _, c := range p.Children {
				check(c, p.BodyStart, p.BodyEnd)
			}
			if p.Message != nil {
				check(p.Message, p.BodyStart, p.BodyEnd)
			}
		}
		check(root, 0, int64(len(msg)))

		// Bodies skipped a buffer at a time give the tree that skipping them line by line
		// gives, whatever the reads return.
		for _, r := range []io.Reader{strings.NewReader(msg), iotest.OneByteReader(strings.NewReader(msg))} {
			sc := newLineScanner(r, 0)
			sc.perLine = true
			want, _ := sc.parsePart(nil, 0, "")
			got, err := parseStructure(iotest.HalfReader(strings.NewReader(msg)))
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Fatalf("bulk skip: %+v, %v; line by line: %+v", got, err, want)
			}
		}
		// A message in memory (the store's cache) is read through a small buffer and its last
		// body counted in place: the same tree again.
		want, err := parseStructure(strings.NewReader(msg))
		if err != nil {
			t.Fatal(err)
		}
		got, err := parseScanner(newMemScanner([]byte(msg)))
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("in memory: %+v, %v; from a reader: %+v", got, err, want)
		}
	})
}

// FuzzLiteralAt: a literal announcement is recognized exactly when the line ends with
// "{N}" or "{N+}", and the size round-trips.
func FuzzLiteralAt(f *testing.F) {
	f.Add("a LOGIN {5}\r\n", int64(5), true)
	f.Add("a APPEND INBOX {12+}\r\n", int64(12), false)
	f.Fuzz(func(t *testing.T, prefix string, n int64, sync bool) {
		if n < 0 || strings.ContainsAny(prefix, "\r\n") {
			return
		}
		plus := "+"
		if sync {
			plus = ""
		}
		line := fmt.Sprintf("%s{%d%s}\r\n", prefix, n, plus)
		got, nonSync, ok := literalAt([]byte(line))
		if !ok || got != n || nonSync == sync {
			t.Fatalf("literalAt(%q) = %d %v %v", line, got, nonSync, ok)
		}
		if _, _, ok := literalAt([]byte(prefix + "\r\n")); ok && !strings.HasSuffix(prefix, "}") {
			t.Fatalf("literal found in %q", prefix)
		}
	})
}
