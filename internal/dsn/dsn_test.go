package dsn

import (
	"bufio"
	"bytes"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"

	"yubin/internal/smtp"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

var (
	arrival = time.Date(2026, 3, 2, 9, 15, 0, 0, time.UTC)
	later   = arrival.Add(4*time.Hour + 30*time.Second)
)

const original = "Received: from client.example.org by mail.example.org; Mon, 02 Mar 2026 09:15:00 +0000\r\n" +
	"From: Ana <ana@example.org>\r\n" +
	"To: Bob <bob@remote.example>\r\n" +
	"Subject: Lunch on Friday?\r\n" +
	"Message-ID: <lunch.1@example.org>\r\n" +
	"Date: Mon, 02 Mar 2026 10:14:59 +0100\r\n" +
	"\r\n" +
	"Shall we?\r\n"

// cases are rendered to testdata/NAME.eml and compared byte for byte.
func cases() map[string]*Report {
	base := func() *Report {
		return &Report{
			Hostname:     "mail.example.org",
			To:           "ana@example.org",
			MessageID:    "report.1@mail.example.org",
			Date:         later,
			ArrivalDate:  arrival,
			Original:     strings.NewReader(original),
			OriginalSize: int64(len(original)),
		}
	}
	m := map[string]*Report{}

	r := base()
	r.EnvID = "QQ314159+2Bx"
	r.Recipients = []Recipient{{
		Address: "bob@remote.example", ORCPT: "rfc822;Bob+2Btag@remote.example", Action: Failed,
		Reply:     smtp.NewReply(550, "5.1.1", "<bob@remote.example>: Recipient address rejected: User unknown"),
		RemoteMTA: "mx1.remote.example", LastAttempt: later,
	}}
	m["failed_headers"] = r

	r = base()
	r.Ret = "FULL"
	r.Recipients = []Recipient{{
		Address: "bob@remote.example", Action: Failed,
		Reply:     smtp.NewReply(550, "5.7.1", "Message rejected as spam.\nSee https://remote.example/postmaster for help with a long explanation that goes well past the width of a line"),
		RemoteMTA: "mx1.remote.example", LastAttempt: later,
	}, {
		Address: "carol@remote.example", Action: Failed,
		Reply:     smtp.NewReply(552, "5.2.2", "Mailbox full"),
		RemoteMTA: "mx1.remote.example", LastAttempt: later,
	}}
	m["failed_full_two"] = r

	r = base()
	r.Ret = "FULL"
	r.MaxFull = 64
	r.Recipients = []Recipient{{
		Address: "bob@remote.example", Action: Failed,
		Reply:     smtp.NewReply(552, "5.3.4", "Message too big"),
		RemoteMTA: "mx1.remote.example", LastAttempt: later,
	}}
	m["failed_full_too_big"] = r

	r = base()
	r.Recipients = []Recipient{{
		Address: "bob@remote.example", Action: Delayed,
		Reply:     smtp.NewReply(451, "4.7.1", "Greylisted, try again later"),
		RemoteMTA: "mx1.remote.example", LastAttempt: later, WillRetryUntil: arrival.Add(5 * 24 * time.Hour),
	}}
	m["delayed"] = r

	r = base()
	r.Date = arrival.Add(5 * 24 * time.Hour)
	r.Recipients = []Recipient{{
		Address: "bob@remote.example", Action: Failed, Expired: true,
		Reply:     &smtp.Reply{Code: 421, Lines: []string{"mx1.remote.example Service not available"}},
		RemoteMTA: "mx1.remote.example", LastAttempt: r.Date,
	}}
	m["expired"] = r

	r = base()
	r.Original = nil
	r.Recipients = []Recipient{{
		Address: "bob@nowhere.example", Action: Failed,
		Reply: smtp.NewReply(550, "5.1.2", "nowhere.example: domain does not exist (NXDOMAIN)"),
	}}
	m["local_reason"] = r

	const utf8Original = "From: 花子 <花子@例え.jp>\r\nTo: 太郎@例え.jp\r\nSubject: こんにちは\r\n\r\n本文\r\n"
	r = base()
	r.To = "花子@例え.jp"
	r.Original = strings.NewReader(utf8Original)
	r.OriginalSize = int64(len(utf8Original))
	r.Recipients = []Recipient{{
		Address: "太郎@例え.jp", ORCPT: `utf-8;\x{592A}\x{90CE}@\x{4F8B}\x{3048}.jp`, Action: Failed,
		Reply:     smtp.NewReply(550, "5.1.1", "no such user"),
		RemoteMTA: "mx.example.jp", LastAttempt: later,
	}}
	m["utf8"] = r
	return m
}

func TestGolden(t *testing.T) {
	for name, r := range cases() {
		t.Run(name, func(t *testing.T) {
			msg, err := r.Build()
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", name+".eml")
			if *update {
				if err := os.WriteFile(path, msg.Data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(msg.Data, want) {
				t.Errorf("%s differs from the golden file; got:\n%s", name, msg.Data)
			}
			checkStructure(t, r, msg)
		})
	}
}

// checkStructure parses the report back with go-message, an independent MIME parser, and
// checks what RFC 3464 and RFC 6522 require.
func checkStructure(t *testing.T, r *Report, msg *Message) {
	t.Helper()
	for i, l := range strings.Split(string(msg.Data), "\r\n") {
		if len(l) > 998 {
			t.Errorf("line %d has %d octets", i+1, len(l))
		}
		if strings.ContainsRune(l, '\n') || strings.ContainsRune(l, '\r') {
			t.Errorf("line %d has a bare CR or LF", i+1)
		}
	}
	e, err := message.Read(bytes.NewReader(msg.Data))
	if err != nil {
		t.Fatal(err)
	}
	mt, params, err := e.Header.ContentType()
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("Content-Type %q %v %v", mt, params, err)
	}
	if got := e.Header.Get("Auto-Submitted"); got != "auto-replied" {
		t.Errorf("Auto-Submitted %q", got)
	}
	if got := e.Header.Get("From"); got != "Mail Delivery System <MAILER-DAEMON@"+r.Hostname+">" {
		t.Errorf("From %q", got)
	}
	for _, h := range []string{"Date", "Message-Id", "Subject", "To"} {
		if !e.Header.Has(h) {
			t.Errorf("no %s header", h)
		}
	}
	mr := e.MultipartReader()
	var types []string
	var texts [][]byte
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		mt, _, _ := p.Header.ContentType()
		types = append(types, mt)
		b, err := io.ReadAll(p.Body)
		if err != nil {
			t.Fatal(err)
		}
		texts = append(texts, b)
	}
	if len(types) < 2 || types[0] != "text/plain" || !strings.HasSuffix(types[1], "delivery-status") {
		t.Fatalf("parts %v", types)
	}
	if (r.Original != nil) != (len(types) == 3) {
		t.Errorf("parts %v with original %v", types, r.Original != nil)
	}

	// The human part names each recipient and quotes the reply.
	for _, rc := range r.Recipients {
		if !bytes.Contains(texts[0], []byte(rc.Address)) {
			t.Errorf("text part does not name %s", rc.Address)
		}
		if rc.Reply != nil {
			for _, l := range replyLines(rc.Reply) {
				if !bytes.Contains(texts[0], []byte(l)) {
					t.Errorf("text part does not quote %q:\n%s", l, texts[0])
				}
			}
		}
	}

	// The status part: a per-message block, then one block per recipient.
	blocks := statusBlocks(t, texts[1])
	if len(blocks) != 1+len(r.Recipients) {
		t.Fatalf("%d status blocks for %d recipients", len(blocks), len(r.Recipients))
	}
	if got := blocks[0].Get("Reporting-MTA"); got != "dns; "+r.Hostname {
		t.Errorf("Reporting-MTA %q", got)
	}
	for i, rc := range r.Recipients {
		b := blocks[i+1]
		if got := b.Get("Action"); got != string(rc.Action) {
			t.Errorf("Action %q, want %q", got, rc.Action)
		}
		if got, want := b.Get("Status"), rc.status(); got != want {
			t.Errorf("Status %q, want %q", got, want)
		}
		if !strings.HasSuffix(b.Get("Final-Recipient"), "; "+rc.Address) {
			t.Errorf("Final-Recipient %q", b.Get("Final-Recipient"))
		}
		if rc.RemoteMTA != "" {
			if got, want := unfold(b.Get("Diagnostic-Code")), "smtp; "+rc.Reply.Error(); got != want {
				t.Errorf("Diagnostic-Code %q, want %q", got, want)
			}
			if got := b.Get("Remote-MTA"); got != "dns; "+rc.RemoteMTA {
				t.Errorf("Remote-MTA %q", got)
			}
		}
		if rc.Action == Delayed && b.Get("Will-Retry-Until") == "" {
			t.Error("no Will-Retry-Until in a delay report")
		}
	}
}

// unfold removes the folding go-message keeps in values.
func unfold(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", ""), "\n", "") }

func statusBlocks(t *testing.T, b []byte) []textproto.Header {
	t.Helper()
	var hs []textproto.Header
	for _, blk := range strings.Split(strings.TrimRight(string(b), "\r\n"), "\r\n\r\n") {
		h, err := textproto.ReadHeader(bufio.NewReader(strings.NewReader(blk + "\r\n\r\n")))
		if err != nil {
			t.Fatalf("status block %q: %v", blk, err)
		}
		hs = append(hs, h)
	}
	return hs
}

func TestFlagsAndTypes(t *testing.T) {
	cs := cases()
	for name, want := range map[string]struct {
		utf8, eight bool
		third       string
	}{
		"failed_headers":      {false, false, "Content-Type: text/rfc822-headers"},
		"failed_full_two":     {false, false, "Content-Type: message/rfc822"},
		"failed_full_too_big": {false, false, "Content-Type: text/rfc822-headers"},
		"utf8":                {true, true, "Content-Type: message/global-headers"},
	} {
		m, err := cs[name].Build()
		if err != nil {
			t.Fatal(err)
		}
		if m.SMTPUTF8 != want.utf8 || m.EightBit != want.eight {
			t.Errorf("%s: SMTPUTF8 %v EightBit %v, want %v %v", name, m.SMTPUTF8, m.EightBit, want.utf8, want.eight)
		}
		if !bytes.Contains(m.Data, []byte(want.third+"\r\n")) {
			t.Errorf("%s: no %q", name, want.third)
		}
	}
	m, _ := cases()["utf8"].Build() // a Report's Original can be read only once
	for _, s := range []string{"message/global-delivery-status", "Final-Recipient: utf-8; 太郎@例え.jp", "Original-Recipient: utf-8; 太郎@例え.jp"} {
		if !bytes.Contains(m.Data, []byte(s)) {
			t.Errorf("utf8 report lacks %q", s)
		}
	}
	m, _ = cases()["failed_headers"].Build()
	for _, s := range []string{"Original-Recipient: rfc822; Bob+tag@remote.example", "Original-Envelope-Id: QQ314159+x", "In-Reply-To: <lunch.1@example.org>"} {
		if !bytes.Contains(m.Data, []byte(s)) {
			t.Errorf("report lacks %q", s)
		}
	}
	if bytes.Contains(m.Data, []byte("Shall we?")) {
		t.Error("headers-only report contains the body")
	}
}

func TestRefusals(t *testing.T) {
	r := cases()["failed_headers"]
	for name, mod := range map[string]func(*Report){
		"null sender":   func(r *Report) { r.To = "" },
		"no hostname":   func(r *Report) { r.Hostname = "" },
		"no recipients": func(r *Report) { r.Recipients = nil },
	} {
		c := *r
		mod(&c)
		if _, err := c.Build(); err == nil {
			t.Errorf("%s: Build succeeded", name)
		}
	}
}

// A hostile reply or original cannot inject header lines or break the MIME structure.
func TestHostileInput(t *testing.T) {
	boundaryBait := "X-Bait: =_report_\r\n\r\n--=_report_\r\n"
	orig := "Subject: x\r\n" + boundaryBait + "body\r\n"
	r := &Report{
		Hostname: "mail.example.org", To: "ana@example.org", MessageID: "x@y", Date: later,
		Ret: "FULL", Original: strings.NewReader(orig), OriginalSize: int64(len(orig)),
		Recipients: []Recipient{{
			Address: "bob@remote.example", Action: Failed, RemoteMTA: "mx\r\nBcc: evil@example.net",
			Reply: &smtp.Reply{Code: 550, Lines: []string{"bad\x00\x1b[31m", strings.Repeat("x", 2000)}},
		}},
	}
	m, err := r.Build()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(m.Data, []byte("\r\nBcc:")) {
		t.Error("a header was injected through Remote-MTA")
	}
	if bytes.ContainsAny(m.Data, "\x00\x1b") {
		t.Error("control characters passed through")
	}
	for i, l := range strings.Split(string(m.Data), "\r\n") {
		if len(l) > 998 {
			t.Errorf("line %d has %d octets", i+1, len(l))
		}
	}
	// The bait in the original did not end the part: it comes back whole.
	e, err := message.Read(bytes.NewReader(m.Data))
	if err != nil {
		t.Fatal(err)
	}
	var parts [][]byte
	mr := e.MultipartReader()
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
	if len(parts) != 3 || string(parts[2]) != orig {
		t.Errorf("%d parts; third %q", len(parts), parts[len(parts)-1])
	}
	if !bytes.Contains(parts[0], []byte("550-bad??[31m")) {
		t.Errorf("text part:\n%s", parts[0])
	}
}

// UTF-8 in a remote reply does not make the report need SMTPUTF8.
func TestUTF8ReplyStaysASCII(t *testing.T) {
	r := cases()["failed_headers"]
	r.Recipients[0].Reply = smtp.NewReply(550, "5.1.1", "utilisateur inconnu: élève")
	m, err := r.Build()
	if err != nil {
		t.Fatal(err)
	}
	if m.SMTPUTF8 || m.EightBit || bytes.Contains(m.Data, []byte("global")) {
		t.Errorf("SMTPUTF8 %v EightBit %v", m.SMTPUTF8, m.EightBit)
	}
	if !bytes.Contains(m.Data, []byte("Diagnostic-Code: smtp; 550 5.1.1 utilisateur inconnu: ?l?ve")) {
		t.Errorf("report:\n%s", m.Data)
	}
	if !bytes.Contains(m.Data, []byte("charset=utf-8")) {
		t.Error("the human part lost the reply's UTF-8")
	}
}

func TestDecodeXtext(t *testing.T) {
	for in, want := range map[string]string{
		"a+2Bb@x":         "a+b@x",
		"plain":           "plain",
		`\x{592A}@x`:      "太@x",
		"+3D+2B":          "=+",
		"":                "",
		"rfc822;a+2Bb@x.": "rfc822;a+b@x.",
	} {
		got, err := DecodeXtext(in)
		if err != nil || got != want {
			t.Errorf("DecodeXtext(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"a+2", "a+zz", "a+2b", `\x{`, `\x{D800}`, "+FF"} {
		if got, err := DecodeXtext(in); err == nil {
			t.Errorf("DecodeXtext(%q) = %q, want an error", in, got)
		}
	}
}

func TestFoldField(t *testing.T) {
	long := "smtp; 550 5.7.1 " + strings.Repeat("word ", 40) + strings.Repeat("y", 1200)
	f := foldField("Diagnostic-Code", long)
	for _, l := range strings.Split(strings.TrimSuffix(f, "\r\n"), "\r\n") {
		if len(l) > 998 {
			t.Errorf("line of %d octets", len(l))
		}
	}
	if got := strings.ReplaceAll(f, "\r\n", ""); !strings.HasPrefix(got, "Diagnostic-Code: smtp; 550 5.7.1 word word") {
		t.Errorf("unfolded %q", got[:60])
	}
	short := foldField("Action", "failed")
	if short != "Action: failed\r\n" {
		t.Errorf("short field %q", short)
	}
}
