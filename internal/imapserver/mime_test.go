package imapserver

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

const multipartMsg = "From: a@example.test\r\n" +
	"Subject: hi\r\n" +
	"Content-Type: multipart/mixed; boundary=\"XX\"\r\n" +
	"\r\n" +
	"preamble\r\n" +
	"--XX\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"\r\n" +
	"hello\r\n" +
	"world\r\n" +
	"--XX\r\n" +
	"Content-Type: message/rfc822\r\n" +
	"\r\n" +
	"Subject: inner\r\n" +
	"\r\n" +
	"inner body\r\n" +
	"--XX\r\n" +
	"Content-Type: multipart/alternative; boundary=YY\r\n" +
	"\r\n" +
	"--YY\r\n" +
	"\r\n" +
	"plain\r\n" +
	"--YY\r\n" +
	"Content-Type: text/html\r\n" +
	"\r\n" +
	"<p>html</p>\r\n" +
	"\r\n" +
	"--YY--\r\n" +
	"--XX--\r\n" +
	"epilogue\r\n"

func section(msg string, p *part, which string) string {
	switch which {
	case "mime":
		return msg[p.HdrStart:p.BodyStart]
	default:
		return msg[p.BodyStart:p.BodyEnd]
	}
}

func TestParseStructure(t *testing.T) {
	t.Parallel()
	root, err := parseStructure(strings.NewReader(multipartMsg))
	if err != nil {
		t.Fatal(err)
	}
	if root.Type != "multipart" || root.Subtype != "mixed" || len(root.Children) != 3 {
		t.Fatalf("root %+v", root)
	}
	if got := section(multipartMsg, root, ""); !strings.HasPrefix(got, "preamble\r\n") || !strings.HasSuffix(got, "epilogue\r\n") {
		t.Errorf("TEXT %q", got)
	}
	for _, tc := range []struct {
		path  []int
		which string
		want  string
		lines int64
	}{
		{[]int{1}, "", "hello\r\nworld", 2},
		{[]int{1}, "mime", "Content-Type: text/plain; charset=utf-8\r\n\r\n", 2},
		{[]int{2}, "", "Subject: inner\r\n\r\ninner body", 3},
		{[]int{2, 1}, "", "inner body", 0},
		{[]int{3, 1}, "", "plain", 1},
		{[]int{3, 2}, "", "<p>html</p>\r\n", 1},
	} {
		p := root.find(tc.path)
		if p == nil {
			t.Errorf("%v: not found", tc.path)
			continue
		}
		if got := section(multipartMsg, p, tc.which); got != tc.want {
			t.Errorf("%v %s = %q, want %q", tc.path, tc.which, got, tc.want)
		}
		if tc.which == "" && tc.lines != 0 && p.Lines != tc.lines {
			t.Errorf("%v lines %d, want %d", tc.path, p.Lines, tc.lines)
		}
	}
	if root.find([]int{4}) != nil || root.find([]int{1, 2}) != nil {
		t.Error("found a part that does not exist")
	}
	if p := root.find([]int{3, 1}); p.Type != "text" || p.Subtype != "plain" {
		t.Errorf("default type %s/%s", p.Type, p.Subtype)
	}
	back, err := decodeStructure(encodeStructure(root))
	if err != nil || back.find([]int{2}).Message == nil {
		t.Errorf("round trip: %v", err)
	}
}

func TestParseSinglePart(t *testing.T) {
	t.Parallel()
	msg := "Subject: x\r\n\r\nline1\r\nline2"
	root, err := parseStructure(strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	if got := section(msg, root, ""); got != "line1\r\nline2" || root.Lines != 2 {
		t.Errorf("body %q lines %d", got, root.Lines)
	}
	if p := root.find([]int{1}); p != root {
		t.Error("part 1 of a single-part message is the message body")
	}
	// No header at all.
	root, _ = parseStructure(strings.NewReader("\r\nbody\r\n"))
	if root.BodyStart != 2 || root.Lines != 1 {
		t.Errorf("headerless %+v", root)
	}
}

func TestHeaderFilter(t *testing.T) {
	t.Parallel()
	h := parseHeaderFields([]byte("From: a\r\nSubject: one\r\n two\r\nTo: b\r\n"))
	if got := string(h.filter([]string{"subject"}, true)); got != "Subject: one\r\n two\r\n\r\n" {
		t.Errorf("FIELDS %q", got)
	}
	if got := string(h.filter([]string{"subject"}, false)); got != "From: a\r\nTo: b\r\n\r\n" {
		t.Errorf("FIELDS.NOT %q", got)
	}
	if h.get("SUBJECT") != "one two" {
		t.Errorf("get %q", h.get("SUBJECT"))
	}
}

// The line break before a delimiter belongs to the delimiter (RFC 2046 5.1.1), which the
// scanner knows from the line before it. That line is a slice of the read buffer, and the
// read of the delimiter line may move the buffer: the part's end was then wrong by a CRLF,
// depending on how the reads fell (a body of 64 KiB or more in a real message; any message
// read a byte at a time).
func TestStructureIndependentOfReads(t *testing.T) {
	msg := "Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n\r\nbody\r\n--a\r\n\r\n--a--\r\n"
	want, err := parseStructure(strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	if c := want.Children[1]; c.BodyStart != c.BodyEnd || c.HdrStart != int64(strings.LastIndex(msg, "--a\r\n")+5) {
		t.Fatalf("second part %+v: want an empty header and body right after its delimiter", c)
	}
	got, err := parseStructure(iotest.OneByteReader(strings.NewReader(msg)))
	if err != nil || !reflect.DeepEqual(got, want) {
		g, _ := json.Marshal(got)
		w, _ := json.Marshal(want)
		t.Fatalf("read a byte at a time: %s, %v\nwant %s", g, err, w)
	}
}
