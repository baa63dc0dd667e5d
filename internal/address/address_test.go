package address

import (
	"errors"
	"strings"
	"testing"
)

func TestParseValid(t *testing.T) {
	t.Parallel()
	local64 := strings.Repeat("a", 64)
	label63 := strings.Repeat("b", 63)
	tests := []struct {
		in     string
		utf8   bool
		want   Address
		str    string // canonical text; "" means same as in
		key    string // "" means not checked
		ascii  bool
		iplit  bool
		routes bool
	}{
		{in: "user@example.org", want: Address{"user", "example.org"}, ascii: true, key: "user@example.org"},
		{in: "User@EXAMPLE.Org", want: Address{"User", "example.org"}, str: "User@example.org", ascii: true, key: "user@example.org"},
		{in: "first.last@example.org", want: Address{"first.last", "example.org"}, ascii: true},
		{in: "a!#$%&'*+-/=?^_`{|}~z@example.org", want: Address{"a!#$%&'*+-/=?^_`{|}~z", "example.org"}, ascii: true, routes: true},
		{in: `"a b"@example.org`, want: Address{"a b", "example.org"}, ascii: true},
		{in: `"a@b"@example.org`, want: Address{"a@b", "example.org"}, ascii: true, routes: true},
		{in: `"a\"b"@example.org`, want: Address{`a"b`, "example.org"}, ascii: true},
		{in: `"a\\b"@example.org`, want: Address{`a\b`, "example.org"}, ascii: true},
		{in: `"plain"@example.org`, want: Address{"plain", "example.org"}, str: "plain@example.org", ascii: true},
		{in: `"\p\l\ain"@example.org`, want: Address{"plain", "example.org"}, str: "plain@example.org", ascii: true},
		{in: `".a"@example.org`, want: Address{".a", "example.org"}, ascii: true},
		{in: `"a..b"@example.org`, want: Address{"a..b", "example.org"}, ascii: true},
		{in: "a%b@example.org", want: Address{"a%b", "example.org"}, ascii: true, routes: true},
		{in: "b!a@example.org", want: Address{"b!a", "example.org"}, ascii: true, routes: true},
		{in: "user@[192.0.2.1]", want: Address{"user", "[192.0.2.1]"}, ascii: true, iplit: true},
		{in: "user@[192.000.002.001]", want: Address{"user", "[192.0.2.1]"}, str: "user@[192.0.2.1]", ascii: true, iplit: true},
		{in: "user@[IPv6:2001:db8::1]", want: Address{"user", "[IPv6:2001:db8::1]"}, ascii: true, iplit: true},
		{in: "user@[ipv6:2001:DB8:0:0:0:0:0:1]", want: Address{"user", "[IPv6:2001:db8::1]"}, str: "user@[IPv6:2001:db8::1]", ascii: true, iplit: true},
		{in: "user@[IPv6:::ffff:192.0.2.1]", want: Address{"user", "[IPv6:::ffff:192.0.2.1]"}, ascii: true, iplit: true},
		{in: "postmaster@localhost", want: Address{"postmaster", "localhost"}, ascii: true},
		{in: "a@b-c.d1", want: Address{"a", "b-c.d1"}, ascii: true},
		{in: "a@xn--bcher-kva.example", want: Address{"a", "xn--bcher-kva.example"}, ascii: true},
		{in: local64 + "@example.org", want: Address{local64, "example.org"}, ascii: true},
		{in: "a@" + label63 + ".org", want: Address{"a", label63 + ".org"}, ascii: true},
		{in: "用户@例子.广告", utf8: true, want: Address{"用户", "例子.广告"}},
		{in: "Jörg@Bücher.Example", utf8: true, want: Address{"Jörg", "bücher.example"}, str: "Jörg@bücher.example", key: "jörg@bücher.example"},
		{in: `"ü b"@example.org`, utf8: true, want: Address{"ü b", "example.org"}},
		{in: `"ü"@example.org`, utf8: true, want: Address{"ü", "example.org"}, str: "ü@example.org"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			a, err := Parse(tt.in, Options{AllowUTF8: tt.utf8})
			if err != nil {
				t.Fatalf("Parse(%q) = %v", tt.in, err)
			}
			if a != tt.want {
				t.Errorf("Parse(%q) = %#v, want %#v", tt.in, a, tt.want)
			}
			str := tt.str
			if str == "" {
				str = tt.in
			}
			if got := a.String(); got != str {
				t.Errorf("String() = %q, want %q", got, str)
			}
			if tt.key != "" && a.Key() != tt.key {
				t.Errorf("Key() = %q, want %q", a.Key(), tt.key)
			}
			if a.IsASCII() != tt.ascii {
				t.Errorf("IsASCII() = %v, want %v", a.IsASCII(), tt.ascii)
			}
			if a.IsIPLiteral() != tt.iplit {
				t.Errorf("IsIPLiteral() = %v, want %v", a.IsIPLiteral(), tt.iplit)
			}
			if a.HasRoutingChars() != tt.routes {
				t.Errorf("HasRoutingChars() = %v, want %v", a.HasRoutingChars(), tt.routes)
			}
			if a.IsZero() {
				t.Error("IsZero() = true")
			}
		})
	}
}

func TestParseInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		in     string
		utf8   bool // Options.AllowUTF8
		reason string
		isUTF8 bool // want Error.UTF8
	}{
		{"empty", "", false, "empty address", false},
		{"double at", "a@b@c", false, "more than one @", false},
		{"no at", "user", false, "missing @", false},
		{"missing local", "@example.org", false, "missing local part", false},
		{"missing domain", "user@", false, "missing domain", false},
		{"leading dot", ".user@example.org", false, "starts with a dot", false},
		{"trailing dot", "user.@example.org", false, "ends with a dot", false},
		{"double dot", "us..er@example.org", false, "two dots", false},
		{"space unquoted", "us er@example.org", false, "not allowed in unquoted", false},
		{"angle brackets", "<user@example.org>", false, "not allowed in unquoted", false},
		{"empty quoted", `""@example.org`, false, "empty quoted", false},
		{"unterminated quote", `"user@example.org`, false, "unterminated", false},
		{"text after quote", `"a"b@example.org`, false, "missing @", false},
		{"bad escape", "\"a\\\x01\"@example.org", false, "backslash", false},
		{"tab in quotes", "\"a\tb\"@example.org", false, "not allowed in quoted", false},
		{"NUL", "us\x00er@example.org", false, "not allowed", false},
		{"NUL quoted", "\"us\x00er\"@example.org", false, "not allowed", false},
		{"control", "us\x7fer@example.org", false, "not allowed", false},
		{"CR", "user@exa\rmple.org", false, "not allowed in domain", false},
		{"C1 control", "us\u0085er@example.org", true, "not allowed", false},
		{"local too long", strings.Repeat("a", 65) + "@example.org", false, "more than 64", false},
		{"quoted local too long", `"` + strings.Repeat("a", 62) + ` "@example.org`, false, "more than 64", false},
		{"label too long", "a@" + strings.Repeat("b", 64) + ".org", false, "more than 63", false},
		{"domain too long", "a@" + strings.Repeat(strings.Repeat("b", 63)+".", 4) + "org", false, "more than 255", false},
		{"address too long", strings.Repeat("a", 64) + "@" + strings.Repeat(strings.Repeat("b", 60)+".", 4) + "org", false, "more than 254", false},
		{"leading hyphen", "a@-example.org", false, "starts with a hyphen", false},
		{"trailing hyphen", "a@example-.org", false, "ends with a hyphen", false},
		{"domain trailing dot", "a@example.org.", false, "empty label", false},
		{"domain double dot", "a@example..org", false, "empty label", false},
		{"underscore in domain", "a@ex_ample.org", false, "not allowed in domain", false},
		{"utf8 local without smtputf8", "jörg@example.org", false, "SMTPUTF8", true},
		{"utf8 domain without smtputf8", "jorg@bücher.example", false, "SMTPUTF8", true},
		{"bad utf8 syntax without smtputf8", "jörg@@example.org", false, "more than one @", false},
		{"invalid utf8", "j\xffrg@example.org", true, "invalid UTF-8", false},
		{"invalid utf8 no smtputf8", "j\xffrg@example.org", false, "invalid UTF-8", false},
		{"utf8 space", "a\u00a0b@example.org", true, "not allowed in unquoted", false},
		{"symbol in domain", "a@exa☃mple.org", true, "not allowed in domain", false},
		{"ipv4 too big", "a@[192.0.2.256]", false, "bad IPv4", false},
		{"ipv4 three parts", "a@[192.0.2]", false, "bad IPv4", false},
		{"ipv4 four digits", "a@[0192.0.2.1]", false, "bad IPv4", false},
		{"ipv4 sign", "a@[+1.0.2.1]", false, "bad IPv4", false},
		{"ipv6 without tag", "a@[2001:db8::1]", false, "unsupported address literal", false},
		{"ipv6 bad", "a@[IPv6:2001:db8:::1]", false, "bad IPv6", false},
		{"ipv6 is v4", "a@[IPv6:192.0.2.1]", false, "bad IPv6", false},
		{"ipv6 zone", "a@[IPv6:fe80::1%eth0]", false, "bad IPv6", false},
		{"general literal", "a@[x-foo:bar]", false, "unsupported address literal", false},
		{"unterminated literal", "a@[192.0.2.1", false, "unterminated address literal", false},
		{"empty literal", "a@[]", false, "bad IPv4", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a, err := Parse(tt.in, Options{AllowUTF8: tt.utf8})
			if err == nil {
				t.Fatalf("Parse(%q) = %#v, want error", tt.in, a)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Parse(%q) error %T is not *Error", tt.in, err)
			}
			if !strings.Contains(e.Reason, tt.reason) {
				t.Errorf("Parse(%q) reason %q, want it to contain %q", tt.in, e.Reason, tt.reason)
			}
			if e.UTF8 != tt.isUTF8 {
				t.Errorf("Parse(%q) UTF8 = %v, want %v", tt.in, e.UTF8, tt.isUTF8)
			}
			if !a.IsZero() {
				t.Errorf("Parse(%q) returned non-zero %#v with error", tt.in, a)
			}
		})
	}
}

func TestZero(t *testing.T) {
	t.Parallel()
	var a Address
	if !a.IsZero() || a.String() != "" {
		t.Errorf("zero Address: IsZero %v, String %q", a.IsZero(), a.String())
	}
}

func TestSplitDetail(t *testing.T) {
	t.Parallel()
	tests := []struct {
		local, sep, base, detail string
		ok                       bool
	}{
		{"user+tag", "+", "user", "tag", true},
		{"user+a+b", "+", "user", "a+b", true},
		{"user+", "+", "user", "", true},
		{"user", "+", "user", "", false},
		{"+tag", "+", "+tag", "", false},
		{"user+tag", "", "user+tag", "", false},
		{"user-tag", "-", "user", "tag", true},
		{"user--tag", "--", "user", "tag", true},
	}
	for _, tt := range tests {
		base, detail, ok := SplitDetail(tt.local, tt.sep)
		if base != tt.base || detail != tt.detail || ok != tt.ok {
			t.Errorf("SplitDetail(%q, %q) = %q, %q, %v; want %q, %q, %v",
				tt.local, tt.sep, base, detail, ok, tt.base, tt.detail, tt.ok)
		}
	}
}

func TestStringQuotes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		a    Address
		want string
	}{
		{Address{"a.b", "x"}, "a.b@x"},
		{Address{"a b", "x"}, `"a b"@x`},
		{Address{`a"b\c`, "x"}, `"a\"b\\c"@x`},
		{Address{"a.", "x"}, `"a."@x`},
		{Address{"", "x"}, `""@x`},
	}
	for _, tt := range tests {
		if got := tt.a.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.a, got, tt.want)
		}
	}
}
