package outbound

import (
	"net"
	"strings"
	"testing"
)

// RFC 5321 5.1: by preference, random among equal preferences.
func TestOrderMX(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 200 {
		mxs := []*net.MX{
			{Host: "c.test.", Pref: 20}, {Host: "a.test", Pref: 10}, {Host: "b.test", Pref: 10},
			{Host: "A.test", Pref: 30}, {Host: "", Pref: 5},
		}
		var names []string
		for _, h := range orderMX(mxs, "25") {
			names = append(names, h.name)
		}
		got := strings.Join(names, " ")
		if got != "a.test b.test c.test" && got != "b.test a.test c.test" {
			t.Fatalf("order %q", got)
		}
		seen[got] = true
	}
	if len(seen) != 2 {
		t.Errorf("equal preferences always in the same order: %v", seen)
	}
}

func TestInterleave(t *testing.T) {
	t.Parallel()
	var ips []net.IP
	for _, s := range []string{"192.0.2.1", "192.0.2.2", "192.0.2.3", "2001:db8::1", "2001:db8::2"} {
		ips = append(ips, net.ParseIP(s))
	}
	var got []string
	for _, ip := range interleave(ips, 4) {
		got = append(got, ip.String())
	}
	if s := strings.Join(got, " "); s != "2001:db8::1 192.0.2.1 2001:db8::2 192.0.2.2" {
		t.Errorf("interleave: %s", s)
	}
}

func TestIsNullMX(t *testing.T) {
	t.Parallel()
	if !isNullMX([]*net.MX{{Host: ".", Pref: 0}}) {
		t.Error("null MX not recognised")
	}
	// RFC 7505 3: a null MX among others is a mistake; the others are used.
	if isNullMX([]*net.MX{{Host: "."}, {Host: "mx.test", Pref: 10}}) {
		t.Error("null MX with others")
	}
	if hops := orderMX([]*net.MX{{Host: "."}, {Host: "mx.test", Pref: 10}}, "25"); len(hops) != 1 || hops[0].name != "mx.test" {
		t.Errorf("hops %+v", hops)
	}
}
