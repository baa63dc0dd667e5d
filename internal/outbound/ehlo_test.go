package outbound

import (
	"bufio"
	"reflect"
	"strings"
	"testing"

	"yubin/internal/smtp"
)

func TestParseEHLO(t *testing.T) {
	t.Parallel()
	lines := []string{
		"mx.example.test greets you",
		"pipelining",
		"SIZE   35882577",
		"8BITMIME",
		"AUTH=LOGIN",
		"AUTH plain Login CRAM-MD5",
		"STARTTLS",
		"SIZE 1", // repeated: the first counts
		"",
		"-bad keyword",
		"X_UNDERSCORE not a keyword",
		"ENHANCEDSTATUSCODES",
	}
	got := parseEHLO(lines)
	want := extensions{
		"PIPELINING":          "",
		"SIZE":                "35882577",
		"8BITMIME":            "",
		"AUTH":                "LOGIN PLAIN CRAM-MD5",
		"STARTTLS":            "",
		"ENHANCEDSTATUSCODES": "",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseEHLO = %v\nwant %v", got, want)
	}
	if got.sizeLimit() != 35882577 {
		t.Errorf("sizeLimit = %d", got.sizeLimit())
	}
	if m := got.authMechs(); !reflect.DeepEqual(m, []string{"LOGIN", "PLAIN", "CRAM-MD5"}) {
		t.Errorf("authMechs = %v", m)
	}
	for v, want := range map[string]int64{"": 0, "0": 0, "x": 0, "-5": 0, "100 extra": 100} {
		if got := (extensions{"SIZE": v}).sizeLimit(); got != want {
			t.Errorf("SIZE %q: %d, want %d", v, got, want)
		}
	}
	if len(parseEHLO([]string{"only the greeting"})) != 0 {
		t.Error("a one-line reply has no extensions")
	}
}

// FuzzParseEHLO reads fuzzed EHLO replies through the wire package, as the
// client does, and checks that the extensions are well formed and survive
// a round trip through formatEHLO.
func FuzzParseEHLO(f *testing.F) {
	f.Add("250-mx.example.test hi\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 AUTH=PLAIN LOGIN\r\n")
	f.Add("250-x\r\n250-starttls\r\n250-auth plain\r\n250 AUTH login\r\n")
	f.Add("250 x\r\n")
	f.Add("250-x\n250-  SIZE   10  \n250\n")
	f.Fuzz(func(t *testing.T, in string) {
		rep, err := smtp.ReadReply(bufio.NewReader(strings.NewReader(in)), 0)
		if err != nil {
			return
		}
		ext := parseEHLO(rep.Lines)
		for k, v := range ext {
			if !smtp.IsKeyword(k) || k != strings.ToUpper(k) {
				t.Fatalf("keyword %q", k)
			}
			if v != strings.Join(strings.Fields(v), " ") {
				t.Fatalf("params of %s not normalised: %q", k, v)
			}
		}
		var b strings.Builder
		if _, err := formatEHLO("mx.example.test", ext).WriteTo(&b); err != nil {
			t.Fatal(err)
		}
		rep2, err := smtp.ReadReply(bufio.NewReader(strings.NewReader(b.String())), 1000)
		if err != nil {
			t.Fatalf("formatted reply %q does not parse: %v", b.String(), err)
		}
		if ext2 := parseEHLO(rep2.Lines); !reflect.DeepEqual(ext, ext2) {
			t.Fatalf("round trip: %v -> %q -> %v", ext, b.String(), ext2)
		}
	})
}
