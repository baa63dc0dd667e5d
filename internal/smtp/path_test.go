package smtp

import (
	"errors"
	"reflect"
	"testing"
)

func TestParsePathArg(t *testing.T) {
	t.Parallel()
	tests := []struct {
		arg, prefix string
		want        PathArg
	}{
		{"FROM:<a@b.example>", "FROM:", PathArg{Mailbox: "a@b.example"}},
		{"from:<a@b.example>", "FROM:", PathArg{Mailbox: "a@b.example"}},
		{"FROM: <a@b.example>", "FROM:", PathArg{Mailbox: "a@b.example"}},
		{"FROM:  <a@b.example>", "FROM:", PathArg{Mailbox: "a@b.example"}},
		{"TO:<a@b.example>", "TO:", PathArg{Mailbox: "a@b.example"}},
		{"To:<A.B+tag@Sub.B.Example>", "TO:", PathArg{Mailbox: "A.B+tag@Sub.B.Example"}},
		{"FROM:<>", "FROM:", PathArg{}},
		{"FROM:<> BODY=8BITMIME", "FROM:", PathArg{Params: []Param{{"BODY", "8BITMIME"}}}},
		{"FROM:<a@b> SIZE=100 BODY=8BITMIME", "FROM:",
			PathArg{Mailbox: "a@b", Params: []Param{{"SIZE", "100"}, {"BODY", "8BITMIME"}}}},
		{"FROM:<a@b> smtputf8 size=100", "FROM:",
			PathArg{Mailbox: "a@b", Params: []Param{{"SMTPUTF8", ""}, {"SIZE", "100"}}}},
		{"FROM:<a@b>  SIZE=1   BODY=7BIT", "FROM:",
			PathArg{Mailbox: "a@b", Params: []Param{{"SIZE", "1"}, {"BODY", "7BIT"}}}},
		{"TO:<a@b> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bb@c", "TO:",
			PathArg{Mailbox: "a@b", Params: []Param{{"NOTIFY", "SUCCESS,FAILURE"}, {"ORCPT", "rfc822;a+2Bb@c"}}}},
		{"FROM:<a@b> X-VENDOR-1=δ", "FROM:", PathArg{Mailbox: "a@b", Params: []Param{{"X-VENDOR-1", "δ"}}}},
		{"FROM:<@a,@b:user@c>", "FROM:", PathArg{Route: "@a,@b", Mailbox: "user@c"}},
		{"TO:<@relay.example:user@c.example>", "TO:", PathArg{Route: "@relay.example", Mailbox: "user@c.example"}},
		{`FROM:<"a b"@x.org>`, "FROM:", PathArg{Mailbox: `"a b"@x.org`}},
		{`FROM:<"a@b>c"@x.org>`, "FROM:", PathArg{Mailbox: `"a@b>c"@x.org`}},
		{`FROM:<"a\"b\\c"@x.org> SIZE=1`, "FROM:", PathArg{Mailbox: `"a\"b\\c"@x.org`, Params: []Param{{"SIZE", "1"}}}},
		{`TO:<""@x.org>`, "TO:", PathArg{Mailbox: `""@x.org`}},
		{"TO:<δοκιμή@παράδειγμα.δοκιμή>", "TO:", PathArg{Mailbox: "δοκιμή@παράδειγμα.δοκιμή"}},
		{"FROM:<用户@例子.广告> SMTPUTF8", "FROM:", PathArg{Mailbox: "用户@例子.广告", Params: []Param{{"SMTPUTF8", ""}}}},
		{"TO:<Postmaster>", "TO:", PathArg{Mailbox: "Postmaster"}},
		{"TO:<postmaster>", "TO:", PathArg{Mailbox: "postmaster"}},
		{"TO:<Postmaster@b.example>", "TO:", PathArg{Mailbox: "Postmaster@b.example"}},
		{"TO:<a@[192.0.2.1]>", "TO:", PathArg{Mailbox: "a@[192.0.2.1]"}},
		{"TO:<a@[IPv6:2001:db8::1]>", "TO:", PathArg{Mailbox: "a@[IPv6:2001:db8::1]"}},
		{"TO:<a@[ipv6:::ffff:192.0.2.1]>", "TO:", PathArg{Mailbox: "a@[ipv6:::ffff:192.0.2.1]"}},
		{"TO:<a@[x-tag:any-thing]>", "TO:", PathArg{Mailbox: "a@[x-tag:any-thing]"}},
		{"TO:<!#$%&'*+-/=?^_`{|}~@b>", "TO:", PathArg{Mailbox: "!#$%&'*+-/=?^_`{|}~@b"}},
		{"TO:<a..b.@docomo.ne.jp>", "TO:", PathArg{Mailbox: "a..b.@docomo.ne.jp"}},
		{"TO:<a@b-c.d1.example>", "TO:", PathArg{Mailbox: "a@b-c.d1.example"}},
		{"TO:<a@1.2>", "TO:", PathArg{Mailbox: "a@1.2"}},
	}
	for _, tt := range tests {
		got, err := ParsePathArg(tt.arg, tt.prefix)
		if err != nil {
			t.Errorf("ParsePathArg(%q, %q): %v", tt.arg, tt.prefix, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParsePathArg(%q, %q) = %#v, want %#v", tt.arg, tt.prefix, got, tt.want)
		}
	}
}

func TestParsePathArgErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		arg, prefix string
		enhanced    string
	}{
		{"", "FROM:", "5.5.4"},
		{"FROM", "FROM:", "5.5.4"},
		{"FRM:<a@b>", "FROM:", "5.5.4"},
		{"TO:<a@b>", "FROM:", "5.5.4"},
		{"FROM:", "FROM:", "5.1.7"},
		{"FROM:a@b", "FROM:", "5.1.7"},
		{"TO:a@b", "TO:", "5.1.3"},
		{"FROM:<a@b", "FROM:", "5.1.7"},
		{"FROM:a@b>", "FROM:", "5.1.7"},
		{"FROM:<a@b>x", "FROM:", "5.1.7"},
		{"FROM:<a@b>>", "FROM:", "5.1.7"},
		{"FROM:<a@b><c@d>", "FROM:", "5.1.7"},
		{"FROM:< a@b>", "FROM:", "5.1.7"},
		{"FROM:<a@b >", "FROM:", "5.1.7"},
		{"FROM:<a b@c>", "FROM:", "5.1.7"},
		{"FROM:<a>", "FROM:", "5.1.7"},
		{"FROM:<Postmaster>", "FROM:", "5.1.7"},
		{"TO:<>", "TO:", "5.1.3"},
		{"TO:<@b>", "TO:", "5.1.3"},
		{"TO:<a@>", "TO:", "5.1.3"},
		{"TO:<a@b@c>", "TO:", "5.1.3"},
		{"TO:<a@.b>", "TO:", "5.1.3"},
		{"TO:<a@b.>", "TO:", "5.1.3"},
		{"TO:<a@b..c>", "TO:", "5.1.3"},
		{"TO:<a@-b.c>", "TO:", "5.1.3"},
		{"TO:<a@b-.c>", "TO:", "5.1.3"},
		{"TO:<a@b_c>", "TO:", "5.1.3"},
		{"TO:<a(comment)@b>", "TO:", "5.1.3"},
		{"TO:<\"a@b>", "TO:", "5.1.3"},
		{"TO:<\"a\x01\"@b>", "TO:", "5.1.3"},
		{"TO:<\"a\\\x01\"@b>", "TO:", "5.1.3"},
		{"TO:<\"a\"b@c>", "TO:", "5.1.3"},
		{"TO:<\"Postmaster\">", "TO:", "5.1.3"},
		{"TO:<@a:Postmaster>", "TO:", "5.1.3"},
		{"TO:<@a,b:c@d>", "TO:", "5.1.3"},
		{"TO:<@a;@b:c@d>", "TO:", "5.1.3"},
		{"TO:<@a,@b>", "TO:", "5.1.3"},
		{"TO:<@:c@d>", "TO:", "5.1.3"},
		{"TO:<@[1.2.3.4]:c@d>", "TO:", "5.1.3"},
		{"TO:<a@[1.2.3]>", "TO:", "5.1.3"},
		{"TO:<a@[1.2.3.4>", "TO:", "5.1.3"},
		{"TO:<a@[IPv6:1.2.3.4]>", "TO:", "5.1.3"},
		{"TO:<a@[IPv6:fe80::1%eth0]>", "TO:", "5.1.3"},
		{"TO:<a@[:x]>", "TO:", "5.1.3"},
		{"TO:<a@[tag:]>", "TO:", "5.1.3"},
		{"TO:<a@[]>", "TO:", "5.1.3"},
		{"TO:<a\xff@b>", "TO:", "5.1.3"},
		{"TO:<a@b\xff>", "TO:", "5.1.3"},
		{"FROM:<a@b> =1", "FROM:", "5.5.4"},
		{"FROM:<a@b> SIZE=", "FROM:", "5.5.4"},
		{"FROM:<a@b> SIZE==1", "FROM:", "5.5.4"},
		{"FROM:<a@b> SIZE=1=2", "FROM:", "5.5.4"},
		{"FROM:<a@b> -SIZE=1", "FROM:", "5.5.4"},
		{"FROM:<a@b> SI_ZE=1", "FROM:", "5.5.4"},
		{"FROM:<a@b> SIZE=1\t", "FROM:", "5.5.4"},
		{"FROM:<a@b> SIZE=\x7f", "FROM:", "5.5.4"},
		{"FROM:<a@b> X=\xff", "FROM:", "5.5.4"},
		{"FROM:<a@b> SIZE=1 size=2", "FROM:", "5.5.4"},
		{"FROM:<a@b> SMTPUTF8 SMTPUTF8", "FROM:", "5.5.4"},
	}
	for _, tt := range tests {
		got, err := ParsePathArg(tt.arg, tt.prefix)
		var r *Reply
		if !errors.As(err, &r) || r.Code != 501 || r.Enhanced != tt.enhanced {
			t.Errorf("ParsePathArg(%q, %q) = %#v, %v; want 501 %s", tt.arg, tt.prefix, got, err, tt.enhanced)
		}
	}
}

func TestPathArgParamAndString(t *testing.T) {
	t.Parallel()
	pa, err := ParsePathArg(`FROM: <@r1,@r2:"x y"@b.example> size=100 SMTPUTF8`, "FROM:")
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := pa.Param("SIZE"); v != "100" || !ok {
		t.Errorf("SIZE = %q, %v", v, ok)
	}
	if v, ok := pa.Param("smtputf8"); v != "" || !ok {
		t.Errorf("SMTPUTF8 = %q, %v", v, ok)
	}
	if _, ok := pa.Param("BODY"); ok {
		t.Error("BODY present")
	}
	if !pa.Params[0].HasValue() || pa.Params[1].HasValue() {
		t.Errorf("HasValue wrong: %+v", pa.Params)
	}
	if got, want := pa.String(), `<@r1,@r2:"x y"@b.example> SIZE=100 SMTPUTF8`; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got := (PathArg{}).String(); got != "<>" {
		t.Errorf("null path String() = %q", got)
	}
}
