package imapserver

import (
	"bytes"
	"net/mail"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
)

// trickyHeaders are header blocks that exercise what ENVELOPE and header SEARCH must get right:
// folding, RFC 2047 words in several charsets and encodings, groups, odd zones, missing
// fields, repeated fields and case.
var trickyHeaders = []string{
	"From: Sender <sender@example.net>\r\nTo: a@example.test, \"B, Person\" <b@example.test>\r\nSubject: plain\r\nDate: Mon, 01 Jan 2024 10:00:00 +0000\r\nMessage-ID: <id1@example.net>\r\n",
	"From: =?utf-8?q?J=C3=BCrgen_M=C3=BCller?= <jm@example.de>\r\nSubject: =?iso-8859-1?q?=C4rger_mit_=DCmlauten?=\r\n =?utf-8?b?w6TDtsO8?=\r\nDate: Tue, 2 Jan 2024 23:59:59 -0930 (weird zone)\r\nMessage-Id: <folded@\r\n example.net>\r\n",
	"Subject: folded\r\n\tacross\r\n  three lines\r\nTo: undisclosed-recipients:;\r\nCc: Team: x@example.org, y@example.org;, z@example.org\r\n",
	"From: no-angle@example.com\r\nReply-To: r1@example.com, r2@example.com\r\nSender: s@example.com\r\nBcc: hidden@example.com\r\nIn-Reply-To: <a@x> <b@y>\r\nReferences: <a@x>\r\nDate: not a date\r\n",
	"SUBJECT: UPPER CASE NAME\r\nfrom: lower <lower@EXAMPLE.COM>\r\nX-Weird: =?utf-8?b?invalid base64?=\r\nX-Broken: =?unknown-charset?q?abc?=\r\n",
	"Subject: =?UTF-8?B?8J+YgCBlbW9qaSDDnA==?=\r\nDate: Sun, 31 Dec 2023 12:00:00 +1400\r\nMessage-ID: <x@y>\r\n",
	"No colon line\r\nSubject: after garbage\r\n",
	"",
	"Subject: bare LF\nFrom: lf@example.com\n folded-lf\n",
	"Subject: \xff\xfe invalid utf-8 \xc3\r\nFrom: \"\xe9t\xe9\" <e@example.com>\r\n",
	"Subject: İstanbul ǅ ß Σίσυφος\r\n",
}

func sameEnvelope(a, b *imap.Envelope) bool {
	if !a.Date.Equal(b.Date) || a.Date.IsZero() != b.Date.IsZero() {
		return false
	}
	_, oa := a.Date.Zone()
	_, ob := b.Date.Zone()
	if oa != ob || a.Date.Format(time.RFC1123Z) != b.Date.Format(time.RFC1123Z) {
		return false
	}
	x, y := *a, *b
	x.Date, y.Date = time.Time{}, time.Time{}
	return reflect.DeepEqual(x, y)
}

// A cached envelope decodes to exactly the envelope parsed from the header.
func TestEnvelopeCache(t *testing.T) {
	t.Parallel()
	for _, h := range trickyHeaders {
		fresh := envelope(parseHeaderFields([]byte(h)))
		got, err := decodeEnvelope(encodeEnvelope(fresh), zones{})
		if err != nil {
			t.Fatalf("%q: %v", h, err)
		}
		if !sameEnvelope(got, fresh) {
			t.Errorf("%q:\n cached %+v\n fresh  %+v", h, got, fresh)
		}
	}
	for _, bad := range [][]byte{nil, {0}, {envelopeVersion}, {envelopeVersion, 1, 0x80}, append(encodeEnvelope(&imap.Envelope{Subject: "x"}), 0)} {
		if _, err := decodeEnvelope(bad, zones{}); err == nil {
			t.Errorf("decodeEnvelope(%q) accepted", bad)
		}
	}
}

// searchText holds every (key, value) that headerMatch finds, so the SQL prefilter never
// drops a match.
func TestSearchTextSuperset(t *testing.T) {
	t.Parallel()
	needles := []string{"example", "EXAMPLE.COM", "jürgen", "JÜRGEN MÜLLER", "ärger", "ÄRGER MIT", "äöü", "ÄÖÜ",
		"across", "across three", "folded@ example", "<id1@example.net>", "emoji ü", "😀", "istanbul", "i̇stanbul",
		"σίσυφος", "ΣΊΣΥΦΟΣ", "ss", "ß", "invalid", "\ufffd", "=?utf-8?", "lower", "team:", "not a date", "x@y", " "}
	for _, h := range trickyHeaders {
		fields := parseHeaderFields([]byte(h))
		text := searchText(fields)
		for _, n := range needles {
			for _, key := range []string{"", "Subject", "From", "Message-ID", "Cc", "X-Weird"} {
				if headerMatch(fields, key, n) && !bytes.Contains(text, []byte(strings.ToLower(n))) {
					t.Errorf("header %q: %s contains %q, search text %q does not", h, key, n, text)
				}
			}
		}
	}
}

// FuzzEnvelopeCache: for any header, the cached envelope equals the parsed one, and the
// search text contains every needle headerMatch finds.
func FuzzEnvelopeCache(f *testing.F) {
	for _, h := range trickyHeaders {
		f.Add([]byte(h), "example")
	}
	f.Fuzz(func(t *testing.T, hdr []byte, needle string) {
		fields := parseHeaderFields(hdr)
		fresh := envelope(fields)
		got, err := decodeEnvelope(encodeEnvelope(fresh), zones{})
		if err != nil {
			t.Fatal(err)
		}
		if !sameEnvelope(got, fresh) {
			t.Fatalf("cached %+v, fresh %+v", got, fresh)
		}
		if needle == "" || strings.ContainsAny(needle, "\r\n") {
			return
		}
		for _, f := range fields {
			if headerMatch(fields, f.name, needle) && !bytes.Contains(searchText(fields), []byte(strings.ToLower(needle))) {
				t.Fatalf("%s contains %q, search text %q does not", f.name, needle, searchText(fields))
			}
		}
	})
}

type readerAt struct{ *bytes.Reader }

func (readerAt) Close() error { return nil }

// Reading only the header gives the same header bytes as the full parse.
func TestHeaderOnlyParse(t *testing.T) {
	t.Parallel()
	msgs := []string{multipartMsg, "Subject: no body", "Subject: lf\n\nbody\n", "\r\nbody only\r\n", "",
		"Subject: " + strings.Repeat("x", 20000) + "\r\n\r\nlong header line",
		"Subject: a\r\n folded\r\nX: " + strings.Repeat("y", 9000) + "\r\n \r\n\r\nblank-ish continuation"}
	for _, h := range trickyHeaders {
		msgs = append(msgs, h+"\r\nbody\r\n")
	}
	for _, msg := range msgs {
		for _, size := range []int64{0, int64(len(msg))} {
			full, err := parseReader(readerAt{bytes.NewReader([]byte(msg))}, "m", size, true)
			if err != nil {
				t.Fatal(err)
			}
			head, err := parseReader(readerAt{bytes.NewReader([]byte(msg))}, "m", size, false)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(full.header, head.header) || head.root != nil {
				t.Errorf("%.40q (size %d): header-only %q, full %q", msg, size, head.header, full.header)
			}
			if sm := head.storeMeta(); len(sm.Structure) != 0 {
				t.Errorf("header-only parse cached a structure %q", sm.Structure)
			}
		}
	}
}

var dateSamples = []string{
	"Mon, 01 Jan 2024 10:00:00 +0000", "Tue, 2 Jan 2024 23:59:59 -0930", " \tWed, 3 Jan 2024 01:02:03 +0100 \t",
	"Thu, 4 Jan 24 01:02:03 +0100", "Fri, 5 Jan 2024 01:02 +0100", "5 Jan 2024 01:02:03 +0100", "Sat, 6 Jan 2024 01:02:03 GMT",
	"Sun, 7 Jan 2024 01:02:03 +0100 (CET)", "Mon, 8 Jan 2024 01:02:03 +01", "Mon, 8 Jan 2024 01:02:03 +0100x", "Xyz, 9 Jan 2024 01:02:03 +0100",
	"Mon, 10 Foo 2024 01:02:03 +0100", "Mon, 31 Feb 2024 01:02:03 +0100", "Mon,  1 Jan 2024 01:02:03 +0100", "Mon, 1 Jan 2024 01:02:03 +9999",
	"Mon, 1 Jan 2024\r\n 01:02:03 +0100", "not a date", "Mon, 1 Jan 2024 25:02:03 +0100", "mon, 1 jan 2024 01:02:03 +0100",
	"Mon, 1 Jan 2024 01:02:03 -0000", "Mon, 1 Jan 2024 01:02:03 +0100\n",
	"Sun,  6 Dec 2026 02:53:54 +0000 (UTC)", "Sun, 6 Dec 2026 02:53:54 +0000 (UTC) ", "Sun, 6 Dec 2026 02:53:54 +0000 (a (b) c)",
	"Sun, 6 Dec 2026 02:53:54 +0000 (UTC", "Sun, 6 Dec 2026 02:53:54 +0000 UTC)", "Sun, 6 Dec 2026 02:53:54 +0000 (x\\) y)",
	"Sun, 6 Dec 2026 02:53:54 +0000 () ()", "Sun, 6 Dec 2026 02:53:54 +0000 x", "Sun, 6 Dec 2026 02:53:54 +0000\t( UTC )\t",
}

func sameDate(t *testing.T, v string) {
	got, gerr := parseDate(v)
	want, werr := mail.ParseDate(v)
	if (gerr == nil) != (werr == nil) || !got.Equal(want) || got.Format(time.RFC1123Z) != want.Format(time.RFC1123Z) {
		t.Errorf("parseDate(%q) = %v, %v; net/mail: %v, %v", v, got, gerr, want, werr)
	}
}

// parseDate's fast path gives what net/mail.ParseDate gives.
func TestParseDate(t *testing.T) {
	t.Parallel()
	for _, v := range dateSamples {
		sameDate(t, v)
	}
	if d, err := parseDate(""); err != nil || !d.IsZero() {
		t.Errorf("empty date: %v %v", d, err)
	}
}

func FuzzParseDate(f *testing.F) {
	for _, v := range dateSamples {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if v != "" {
			sameDate(t, v)
		}
	})
}

// IndexMessage (for caching at delivery) gives the entry a FETCH would cache.
func TestIndexMessage(t *testing.T) {
	t.Parallel()
	for _, msg := range []string{multipartMsg, trickyHeaders[1] + "\r\nbody\r\n", ""} {
		got, err := IndexMessage(bytes.NewReader([]byte(msg)), int64(len(msg)))
		if err != nil {
			t.Fatal(err)
		}
		m, _ := parseReader(readerAt{bytes.NewReader([]byte(msg))}, "m", 0, true)
		want := m.storeMeta()
		if !reflect.DeepEqual(got, want) || len(got.Structure) == 0 {
			t.Errorf("%.30q: IndexMessage %+v, want %+v", msg, got, want)
		}
	}
}
