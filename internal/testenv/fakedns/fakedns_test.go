package fakedns

import (
	"testing"

	mdns "github.com/miekg/dns"
)

func query(t *testing.T, s *Server, name string, qtype uint16, net string) *mdns.Msg {
	t.Helper()
	m := new(mdns.Msg)
	m.SetQuestion(mdns.Fqdn(name), qtype)
	c := &mdns.Client{Net: net}
	r, _, err := c.Exchange(m, s.Addr())
	if err != nil {
		t.Fatalf("%s %s over %s: %v", name, mdns.TypeToString[qtype], net, err)
	}
	return r
}

func TestServer(t *testing.T) {
	t.Parallel()
	s := Start(t)
	s.AddMX("example.test", 10, "mx.example.test")
	s.AddA("mx.example.test", "192.0.2.1")
	s.AddAAAA("mx.example.test", "2001:db8::1")
	s.AddTXT("_mta-sts.sub.example.test", "v=STSv1; id=1")
	s.SetServFail("fail.test")
	s.SetNullMX("null.test")

	for _, n := range []string{"udp", "tcp"} {
		r := query(t, s, "EXAMPLE.test", mdns.TypeMX, n)
		if r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].Header().Name != "EXAMPLE.test." || !r.Authoritative {
			t.Errorf("%s MX: %v", n, r)
		}
		if r := query(t, s, "mx.example.test", mdns.TypeMX, n); r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 0 {
			t.Errorf("%s NODATA: %v", n, r)
		}
		if r := query(t, s, "sub.example.test", mdns.TypeA, n); r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 0 {
			t.Errorf("%s empty non-terminal: %v", n, r)
		}
		if r := query(t, s, "nope.example.test", mdns.TypeA, n); r.Rcode != mdns.RcodeNameError {
			t.Errorf("%s NXDOMAIN: %v", n, r)
		}
		if r := query(t, s, "fail.test", mdns.TypeA, n); r.Rcode != mdns.RcodeServerFailure {
			t.Errorf("%s SERVFAIL: %v", n, r)
		}
	}
	r := query(t, s, "null.test", mdns.TypeMX, "udp")
	if len(r.Answer) != 1 || r.Answer[0].(*mdns.MX).Mx != "." || r.Answer[0].(*mdns.MX).Preference != 0 {
		t.Errorf("null MX: %v", r)
	}
	if got := s.Queries("example.test", "MX"); got != 2 {
		t.Errorf("Queries = %d, want 2", got)
	}
	s.Remove("example.test")
	if r := query(t, s, "example.test", mdns.TypeMX, "udp"); r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 0 {
		t.Errorf("after Remove (still a parent of mx.example.test): %v", r)
	}
}

func TestTruncation(t *testing.T) {
	t.Parallel()
	s := Start(t)
	for range 4 {
		s.AddTXT("big.test", string(make([]byte, 300)))
	}
	if r := query(t, s, "big.test", mdns.TypeTXT, "udp"); !r.Truncated {
		t.Error("UDP answer over 512 bytes not truncated")
	}
	if r := query(t, s, "big.test", mdns.TypeTXT, "tcp"); r.Truncated || len(r.Answer) != 4 {
		t.Errorf("TCP: truncated=%v answers=%d", r.Truncated, len(r.Answer))
	}
}
