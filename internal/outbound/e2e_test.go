package outbound

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"yubin/internal/dns"
	"yubin/internal/testenv/fakedns"
)

// These tests resolve through the real resolver against the fake DNS
// server, as yubin does in production.

func dnsClient(t *testing.T, p *peer) (*fakedns.Server, *Client) {
	srv := fakedns.Start(t)
	return srv, newClient(t, dns.NewResolver([]string{srv.Addr()}, 2*time.Second), p)
}

func TestDNSDelivery(t *testing.T) {
	t.Parallel()
	p := startPeer(t, seq(greet(), ehlo(), txn("a@example.net", "b@example.test"), quit()))
	srv, c := dnsClient(t, p)
	srv.AddMX("example.test", 10, mxName)
	srv.AddA(mxName, "127.0.0.1")
	wantCodes(t, c.Deliver(t.Context(), delivery("b@example.test")), "b@example.test=250 2.0.0")
}

func TestDNSNoMXSoA(t *testing.T) {
	t.Parallel()
	p := startPeer(t, seq(greet(), ehlo(), txn("a@example.net", "b@example.test"), quit()))
	srv, c := dnsClient(t, p)
	srv.AddA("example.test", "127.0.0.1")
	res := c.Deliver(t.Context(), delivery("b@example.test"))
	wantCodes(t, res, "b@example.test=250 2.0.0")
	if res.Attempts[0].MX != "example.test" {
		t.Errorf("attempt: %+v", res.Attempts[0])
	}
}

func TestDNSNullMXAndNXDOMAIN(t *testing.T) {
	t.Parallel()
	srv, c := dnsClient(t, nil)
	srv.SetNullMX("example.test")
	srv.AddA("example.test", "127.0.0.1") // ignored: the null MX says no mail
	wantCodes(t, c.Deliver(t.Context(), delivery("b@example.test")), "b@example.test=556 5.1.10")

	d := delivery("b@missing.test")
	d.Domain = "missing.test"
	wantCodes(t, c.Deliver(t.Context(), d), "b@missing.test=550 5.1.2")

	srv.SetServFail("broken.test")
	d = delivery("b@broken.test")
	d.Domain = "broken.test"
	wantCodes(t, c.Deliver(t.Context(), d), "b@broken.test=451 4.4.3")
}

// MX fallback through DNS: the first MX has an address where nothing
// listens (connection refused), the second works.
func TestDNSMXFallback(t *testing.T) {
	t.Parallel()
	p := startPeer(t, seq(greet(), ehlo(), txn("a@example.net", "b@example.test"), quit()))
	srv, c := dnsClient(t, p)
	srv.AddMX("example.test", 20, "mx2.example.test")
	srv.AddMX("example.test", 10, "mx1.example.test")
	srv.AddA("mx1.example.test", "127.0.0.2") // same port, nothing listening
	srv.AddA("mx2.example.test", "127.0.0.1")
	res := c.Deliver(t.Context(), delivery("b@example.test"))
	wantCodes(t, res, "b@example.test=250 2.0.0")
	if len(res.Attempts) != 2 || res.Attempts[0].MX != "mx1.example.test" || !strings.Contains(res.Attempts[0].Reply, "refused") {
		t.Errorf("attempts: %+v", res.Attempts)
	}
}

// MTA-STS from end to end: the TXT record in DNS, the policy over HTTPS,
// and an MX whose certificate does not verify: no delivery, a retry later.
func TestDNSMTASTSEnforceBadCertificate(t *testing.T) {
	t.Parallel()
	p := startPeer(t, seq(greet(), ehlo("STARTTLS"),
		expect("STARTTLS"), say("220 go"), startTLS(selfSigned(t, mxName)),
		ehlo(), quitOrClose()))
	srv, c := dnsClient(t, p)
	srv.AddMX("example.test", 10, mxName)
	srv.AddA(mxName, "127.0.0.1")
	srv.AddTXT("_mta-sts.example.test", "v=STSv1; id=2026;")

	var body atomic.Value
	body.Store(testPolicy)
	var hits atomic.Int32
	web := policyServer(t, &body, &hits)
	c.MTASTS = &HTTPFetcher{
		Resolver:   c.Resolver,
		HTTPClient: web.Client(),
		Cache:      NewPolicyCache(),
		URL:        func(domain string) string { return web.URL + "/.well-known/mta-sts.txt" },
	}
	res := c.Deliver(t.Context(), delivery("b@example.test"))
	wantCodes(t, res, "b@example.test=451 4.7.5")
	wantTLS(t, res.Attempts[0], "TLS1.3", "unverified: x509: certificate signed by unknown authority")
	if hits.Load() != 1 {
		t.Errorf("%d policy fetches", hits.Load())
	}
}
