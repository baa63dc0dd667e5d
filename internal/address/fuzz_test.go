package address

import (
	"errors"
	"testing"
)

// FuzzParseRoundTrip checks that the canonical text is a fixed point: what
// Parse accepts, it accepts again from String with the same result, and
// String of that is the same text. The server writes String into queue
// entries and trace headers, so a drift here would change addresses in
// flight.
func FuzzParseRoundTrip(f *testing.F) {
	for _, s := range []string{
		"user@example.org",
		"User.Name+tag@Example.ORG",
		`"a b"@example.org`,
		`"a\"b\\c"@example.org`,
		`"a@b"@example.org`,
		`"\a"@x`,
		"a%b@hosted.test",
		"user@[192.000.2.1]",
		"user@[IPv6:2001:DB8::1]",
		"user@[IPv6:::ffff:192.0.2.1]",
		"postmaster@localhost",
		"Jörg@Bücher.Example",
		"用户@例子.广告",
		"a@İ.example",
		"a@\u212a.example",
		"a@b@c",
		"",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, s string, allowUTF8 bool) {
		opt := Options{AllowUTF8: allowUTF8}
		a, err := Parse(s, opt)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Parse(%q) error %T is not *Error", s, err)
			}
			if e.UTF8 && allowUTF8 {
				t.Fatalf("Parse(%q) UTF8 error with AllowUTF8", s)
			}
			return
		}
		if a.IsZero() {
			t.Fatalf("Parse(%q) returned the zero Address", s)
		}
		if !allowUTF8 && !a.IsASCII() {
			t.Fatalf("Parse(%q) without AllowUTF8 returned non-ASCII %#v", s, a)
		}
		str := a.String()
		b, err := Parse(str, opt)
		if err != nil {
			t.Fatalf("Parse(%q) = %#v, but Parse(String() = %q) fails: %v", s, a, str, err)
		}
		if b != a {
			t.Fatalf("Parse(%q) = %#v, Parse(%q) = %#v", s, a, str, b)
		}
		if b.String() != str {
			t.Fatalf("String not idempotent: %q then %q", str, b.String())
		}
		if len(str) > maxAddress {
			t.Fatalf("String() %q longer than %d", str, maxAddress)
		}
	})
}
