package outbound

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"yubin/internal/dns"
)

func wantTLS(t *testing.T, a Attempt, prefix, suffix string) {
	t.Helper()
	if !strings.HasPrefix(a.TLS, prefix) || !strings.HasSuffix(a.TLS, suffix) {
		t.Errorf("Attempt.TLS = %q, want %q...%q", a.TLS, prefix, suffix)
	}
}

func TestSTARTTLSVerified(t *testing.T) {
	t.Parallel()
	ca := newPKI(t)
	cfg := ca.serverConfig(mxName)
	sni := make(chan string, 1)
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		sni <- hello.ServerName
		return nil, nil
	}
	p := startPeer(t, seq(greet(), ehlo("STARTTLS", "PIPELINING"),
		expect("STARTTLS"), say("220 2.0.0 go ahead"), startTLS(cfg),
		ehlo("PIPELINING"),
		expect("MAIL FROM:<a@example.net>"), expect("RCPT TO:<b@example.test>"), expect("DATA"),
		say("250 ok", "250 ok", "354 go"), readData(), say("250 2.0.0 ok"), quit()))
	c := newClient(t, mxResolver(), p)
	c.TLSRoots = ca.roots
	res := c.Deliver(t.Context(), delivery("b@example.test"))
	wantCodes(t, res, "b@example.test=250 2.0.0")
	wantTLS(t, res.Attempts[0], "TLS1.3 TLS_", " verified")
	if msgs := p.messages(); len(msgs) != 1 || msgs[0] != testContent {
		t.Errorf("received %q", msgs)
	}
	if got := <-sni; got != mxName {
		t.Errorf("SNI %q, want the MX host name", got)
	}
}

// go-smtp ignored a lowercase "starttls"; RFC 5321 2.4 makes keywords
// case-insensitive.
func TestSTARTTLSLowercase(t *testing.T) {
	t.Parallel()
	ca := newPKI(t)
	p := startPeer(t, seq(greet(), ehlo("starttls"),
		expect("STARTTLS"), say("220 go"), startTLS(ca.serverConfig(mxName)),
		ehlo(), txn("a@example.net", "b@example.test"), quit()))
	c := newClient(t, mxResolver(), p)
	c.TLSRoots = ca.roots
	res := c.Deliver(t.Context(), delivery("b@example.test"))
	wantCodes(t, res, "b@example.test=250 2.0.0")
	wantTLS(t, res.Attempts[0], "TLS1.3", " verified")
}

func TestNoSTARTTLSOffered(t *testing.T) {
	t.Parallel()
	p := startPeer(t, seq(greet(), ehlo("8BITMIME"), txn("a@example.net", "b@example.test"), quit()))
	res := newClient(t, mxResolver(), p).Deliver(t.Context(), delivery("b@example.test"))
	wantCodes(t, res, "b@example.test=250 2.0.0")
	if res.Attempts[0].TLS != "none" {
		t.Errorf("TLS = %q", res.Attempts[0].TLS)
	}
}

// An unverified certificate is used (opportunistic TLS still beats
// cleartext) and the reason is recorded.
func TestUnverifiedCertificateRecorded(t *testing.T) {
	t.Parallel()
	ca := newPKI(t)
	tests := []struct {
		name   string
		cfg    *tls.Config
		reason string
	}{
		{"self-signed", selfSigned(t, mxName), "unverified: x509: certificate signed by unknown authority"},
		{"wrong name", ca.serverConfig("other.example.test"), "unverified: x509: certificate is valid for other.example.test, not mx.example.test"},
	}
	for _, tt := range tests {
		p := startPeer(t, seq(greet(), ehlo("STARTTLS"),
			expect("STARTTLS"), say("220 go"), startTLS(tt.cfg),
			ehlo(), txn("a@example.net", "b@example.test"), quit()))
		c := newClient(t, mxResolver(), p)
		c.TLSRoots = ca.roots
		res := c.Deliver(t.Context(), delivery("b@example.test"))
		wantCodes(t, res, "b@example.test=250 2.0.0")
		wantTLS(t, res.Attempts[0], "TLS1.3 ", tt.reason)
	}
}

// The certificate is checked at the client's clock.
func TestExpiredCertificate(t *testing.T) {
	t.Parallel()
	ca := newPKI(t)
	p := startPeer(t, seq(greet(), ehlo("STARTTLS"),
		expect("STARTTLS"), say("220 go"), startTLS(ca.serverConfig(mxName)),
		ehlo(), txn("a@example.net", "b@example.test"), quit()))
	c := newClient(t, mxResolver(), p)
	c.TLSRoots = ca.roots
	c.Now = func() time.Time { return time.Now().Add(48 * time.Hour) }
	res := c.Deliver(t.Context(), delivery("b@example.test"))
	wantCodes(t, res, "b@example.test=250 2.0.0")
	if !strings.Contains(res.Attempts[0].TLS, "unverified: x509: certificate has expired or is not yet valid") {
		t.Errorf("TLS = %q", res.Attempts[0].TLS)
	}
}

// A refused STARTTLS leaves opportunistic delivery in clear, on the same
// connection.
func TestSTARTTLSRefused(t *testing.T) {
	t.Parallel()
	p := startPeer(t, seq(greet(), ehlo("STARTTLS"),
		expect("STARTTLS"), say("454 4.7.0 TLS not available"),
		txn("a@example.net", "b@example.test"), quit()))
	res := newClient(t, mxResolver(), p).Deliver(t.Context(), delivery("b@example.test"))
	wantCodes(t, res, "b@example.test=250 2.0.0")
}

// A broken TLS handshake: the same address again, without STARTTLS.
func TestTLSHandshakeFailsRetriesPlain(t *testing.T) {
	t.Parallel()
	p := startPeer(t,
		seq(greet(), ehlo("STARTTLS"), expect("STARTTLS"), say("220 go"), handshakeFails()),
		seq(greet(), ehlo("STARTTLS"), txn("a@example.net", "b@example.test"), quit()))
	res := newClient(t, mxResolver(), p).Deliver(t.Context(), delivery("b@example.test"))
	wantCodes(t, res, "b@example.test=250 2.0.0")
	if len(res.Attempts) != 2 || !strings.Contains(res.Attempts[0].Reply, "TLS handshake") || res.Attempts[1].TLS != "none" {
		t.Errorf("attempts: %+v", res.Attempts)
	}
}

// staticPolicy is an MTASTSFetcher that always answers the same.
type staticPolicy struct {
	p   *Policy
	err error
}

func (s staticPolicy) Policy(context.Context, string) (*Policy, error) { return s.p, s.err }

func enforce(mx ...string) staticPolicy {
	return staticPolicy{p: &Policy{Mode: ModeEnforce, MX: mx, MaxAge: time.Hour}}
}

// MTA-STS enforce: a certificate that does not verify stops the delivery
// before MAIL, and the recipients are deferred (RFC 8461 5).
func TestMTASTSEnforceBadCertificate(t *testing.T) {
	t.Parallel()
	p := startPeer(t, seq(greet(), ehlo("STARTTLS"),
		expect("STARTTLS"), say("220 go"), startTLS(selfSigned(t, mxName)),
		ehlo(), quitOrClose()))
	c := newClient(t, mxResolver(), p)
	c.TLSRoots = newPKI(t).roots
	c.MTASTS = enforce("*.example.test")
	res := c.Deliver(t.Context(), delivery("b@example.test"))
	wantCodes(t, res, "b@example.test=451 4.7.5")
	if got := res.Rcpts[0].Reply.Error(); !strings.Contains(got, "unknown authority") || !strings.Contains(got, "MTA-STS policy of example.test is enforce") {
		t.Errorf("reply: %s", got)
	}
	wantTLS(t, res.Attempts[0], "TLS1.3", "unknown authority")
}

func TestMTASTSEnforce(t *testing.T) {
	t.Parallel()
	ca := newPKI(t)
	t.Run("good certificate", func(t *testing.T) {
		t.Parallel()
		p := startPeer(t, seq(greet(), ehlo("STARTTLS"),
			expect("STARTTLS"), say("220 go"), startTLS(ca.serverConfig(mxName)),
			ehlo(), txn("a@example.net", "b@example.test"), quit()))
		c := newClient(t, mxResolver(), p)
		c.TLSRoots = ca.roots
		c.MTASTS = enforce(mxName)
		wantCodes(t, c.Deliver(t.Context(), delivery("b@example.test")), "b@example.test=250 2.0.0")
	})
	t.Run("no STARTTLS", func(t *testing.T) {
		t.Parallel()
		p := startPeer(t, seq(greet(), ehlo(), quit()))
		c := newClient(t, mxResolver(), p)
		c.MTASTS = enforce(mxName)
		wantCodes(t, c.Deliver(t.Context(), delivery("b@example.test")), "b@example.test=451 4.7.10")
	})
	t.Run("MX not in policy", func(t *testing.T) {
		t.Parallel()
		c := newClient(t, mxResolver(), nil)
		c.MTASTS = enforce("mail.example.test", "*.other.test")
		res := c.Deliver(t.Context(), delivery("b@example.test"))
		wantCodes(t, res, "b@example.test=451 4.7.5")
		if len(res.Attempts) != 1 || res.Attempts[0].IP != "" {
			t.Errorf("attempts: %+v", res.Attempts)
		}
	})
	t.Run("testing mode delivers", func(t *testing.T) {
		t.Parallel()
		p := startPeer(t, seq(greet(), ehlo("STARTTLS"),
			expect("STARTTLS"), say("220 go"), startTLS(selfSigned(t, mxName)),
			ehlo(), txn("a@example.net", "b@example.test"), quit()))
		c := newClient(t, mxResolver(), p)
		c.MTASTS = staticPolicy{p: &Policy{Mode: ModeTesting, MX: []string{"other.test"}, MaxAge: time.Hour}}
		wantCodes(t, c.Deliver(t.Context(), delivery("b@example.test")), "b@example.test=250 2.0.0")
	})
	t.Run("fetch error delivers", func(t *testing.T) {
		t.Parallel()
		p := startPeer(t, seq(greet(), ehlo(), txn("a@example.net", "b@example.test"), quit()))
		c := newClient(t, mxResolver(), p)
		c.MTASTS = staticPolicy{err: context.DeadlineExceeded}
		wantCodes(t, c.Deliver(t.Context(), delivery("b@example.test")), "b@example.test=250 2.0.0")
	})
}

func b64s(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// routeClient sends every domain to the peer with the given route options.
func routeClient(t *testing.T, p *peer, r Route) *Client {
	r.Host = p.addr()
	c := &Client{Hostname: clientName, Routes: map[string]Route{"*": r}, Logger: testLogger(t)}
	return c
}

func TestSmarthostAuthPlainOverSTARTTLS(t *testing.T) {
	t.Parallel()
	ca := newPKI(t)
	p := startPeer(t, seq(greet(), ehlo("STARTTLS", "AUTH LOGIN"),
		expect("STARTTLS"), say("220 go"), startTLS(ca.serverConfig("127.0.0.1")),
		ehlo("AUTH LOGIN PLAIN", "PIPELINING"),
		expect("AUTH PLAIN "+b64s("\x00user@example.net\x00s3cret")), say("235 2.7.0 authenticated"),
		expect("MAIL FROM:<a@example.net>"), expect("RCPT TO:<b@elsewhere.test>"), expect("DATA"),
		say("250 ok", "250 ok", "354 go"), readData(), say("250 2.0.0 relayed"), quit()))
	c := routeClient(t, p, Route{Username: "user@example.net", Password: "s3cret", TLS: TLSStartTLS})
	c.TLSRoots = ca.roots
	d := delivery("b@elsewhere.test")
	d.Domain = "elsewhere.test"
	res := c.Deliver(t.Context(), d)
	wantCodes(t, res, "b@elsewhere.test=250 2.0.0")
	wantTLS(t, res.Attempts[0], "TLS1.3", " verified")
	if res.Attempts[0].MX != "127.0.0.1" {
		t.Errorf("attempt: %+v", res.Attempts[0])
	}
}

func TestSmarthostAuthLogin(t *testing.T) {
	t.Parallel()
	ca := newPKI(t)
	p := startPeer(t, seq(greet(), ehlo("STARTTLS"),
		expect("STARTTLS"), say("220 go"), startTLS(ca.serverConfig("127.0.0.1")),
		ehlo("AUTH=LOGIN"),
		expect("AUTH LOGIN"), say("334 "+b64s("Username:")),
		expect(b64s("user")), say("334 "+b64s("Password:")),
		expect(b64s("pw")), say("235 ok"),
		txn("a@example.net", "b@example.test"), quit()))
	c := routeClient(t, p, Route{Username: "user", Password: "pw", TLS: TLSStartTLS})
	c.TLSRoots = ca.roots
	wantCodes(t, c.Deliver(t.Context(), delivery("b@example.test")), "b@example.test=250 2.0.0")
}

func TestSmarthostFailures(t *testing.T) {
	t.Parallel()
	ca := newPKI(t)
	t.Run("STARTTLS required but not offered", func(t *testing.T) {
		t.Parallel()
		p := startPeer(t, seq(greet(), ehlo("AUTH PLAIN"), quit()))
		c := routeClient(t, p, Route{Username: "u", Password: "p", TLS: TLSStartTLS})
		wantCodes(t, c.Deliver(t.Context(), delivery("b@example.test")), "b@example.test=451 4.7.10")
	})
	t.Run("no credentials in clear", func(t *testing.T) {
		t.Parallel()
		p := startPeer(t, seq(greet(), ehlo("AUTH PLAIN"), quit()))
		c := routeClient(t, p, Route{Username: "u", Password: "p"})
		wantCodes(t, c.Deliver(t.Context(), delivery("b@example.test")), "b@example.test=454 4.7.0")
	})
	t.Run("bad credentials defer", func(t *testing.T) {
		t.Parallel()
		p := startPeer(t, seq(greet(), ehlo("STARTTLS"),
			expect("STARTTLS"), say("220 go"), startTLS(ca.serverConfig("127.0.0.1")),
			ehlo("AUTH PLAIN"), expect("AUTH PLAIN *"), say("535 5.7.8 bad credentials"), quit()))
		c := routeClient(t, p, Route{Username: "u", Password: "p", TLS: TLSStartTLS})
		c.TLSRoots = ca.roots
		res := c.Deliver(t.Context(), delivery("b@example.test"))
		wantCodes(t, res, "b@example.test=454 4.7.0")
		if strings.Contains(res.Rcpts[0].Reply.Error(), b64s("\x00u\x00p")) {
			t.Error("the reply shows the credentials")
		}
	})
	t.Run("unverified certificate refused", func(t *testing.T) {
		t.Parallel()
		p := startPeer(t, seq(greet(), ehlo("STARTTLS"),
			expect("STARTTLS"), say("220 go"), startTLS(selfSigned(t, "127.0.0.1")),
			ehlo("AUTH PLAIN"), quitOrClose()))
		c := routeClient(t, p, Route{Username: "u", Password: "p", TLS: TLSStartTLS})
		c.TLSRoots = ca.roots
		wantCodes(t, c.Deliver(t.Context(), delivery("b@example.test")), "b@example.test=451 4.7.5")
	})
	t.Run("unverified certificate allowed", func(t *testing.T) {
		t.Parallel()
		p := startPeer(t, seq(greet(), ehlo("STARTTLS"),
			expect("STARTTLS"), say("220 go"), startTLS(selfSigned(t, "127.0.0.1")),
			ehlo(), txn("a@example.net", "b@example.test"), quit()))
		c := routeClient(t, p, Route{TLS: TLSStartTLS, InsecureSkipVerify: true})
		res := c.Deliver(t.Context(), delivery("b@example.test"))
		wantCodes(t, res, "b@example.test=250 2.0.0")
		wantTLS(t, res.Attempts[0], "TLS1.3", "unknown authority")
	})
}

func TestImplicitTLSRoute(t *testing.T) {
	t.Parallel()
	ca := newPKI(t)
	p := startPeer(t, seq(startTLS(ca.serverConfig("127.0.0.1")), greet(), ehlo("STARTTLS"),
		txn("a@example.net", "b@example.test"), quit()))
	c := routeClient(t, p, Route{TLS: TLSImplicit})
	c.TLSRoots = ca.roots
	res := c.Deliver(t.Context(), delivery("b@example.test"))
	wantCodes(t, res, "b@example.test=250 2.0.0")
	wantTLS(t, res.Attempts[0], "TLS1.3", " verified")
}

// A route for one domain wins over "*" and over the MX records.
func TestRouteByDomain(t *testing.T) {
	t.Parallel()
	p := startPeer(t, seq(greet(), ehlo(), txn("a@example.net", "b@example.test"), quit()))
	c := &Client{Hostname: clientName, Logger: testLogger(t), Resolver: &dns.Mock{},
		Routes: map[string]Route{"example.test": {Host: p.addr()}, "*": {Host: "192.0.2.1:25"}}}
	wantCodes(t, c.Deliver(t.Context(), delivery("b@EXAMPLE.test")), "b@EXAMPLE.test=250 2.0.0")
}

// REQUIRETLS (RFC 8689) needs an authenticated MX (MTA-STS here), a
// verified certificate and a peer that supports it.
func TestRequireTLS(t *testing.T) {
	t.Parallel()
	ca := newPKI(t)
	t.Run("no MTA-STS policy", func(t *testing.T) {
		t.Parallel()
		d := delivery("b@example.test")
		d.RequireTLS = true
		res := newClient(t, mxResolver(), nil).Deliver(t.Context(), d)
		wantCodes(t, res, "b@example.test=550 5.7.30")
	})
	t.Run("delivered", func(t *testing.T) {
		t.Parallel()
		p := startPeer(t, seq(greet(), ehlo("STARTTLS"),
			expect("STARTTLS"), say("220 go"), startTLS(ca.serverConfig(mxName)),
			ehlo("REQUIRETLS"),
			expect("MAIL FROM:<a@example.net> REQUIRETLS"), say("250 ok"),
			expect("RCPT TO:<b@example.test>"), say("250 ok"),
			expect("DATA"), say("354 go"), readData(), say("250 ok"), quit()))
		c := newClient(t, mxResolver(), p)
		c.TLSRoots = ca.roots
		c.MTASTS = staticPolicy{p: &Policy{Mode: ModeTesting, MX: []string{mxName}, MaxAge: time.Hour}}
		d := delivery("b@example.test")
		d.RequireTLS = true
		wantCodes(t, c.Deliver(t.Context(), d), "b@example.test=250 ")
	})
	t.Run("peer without REQUIRETLS", func(t *testing.T) {
		t.Parallel()
		p := startPeer(t, seq(greet(), ehlo("STARTTLS"),
			expect("STARTTLS"), say("220 go"), startTLS(ca.serverConfig(mxName)),
			ehlo(), quit()))
		c := newClient(t, mxResolver(), p)
		c.TLSRoots = ca.roots
		c.MTASTS = enforce(mxName)
		d := delivery("b@example.test")
		d.RequireTLS = true
		wantCodes(t, c.Deliver(t.Context(), d), "b@example.test=550 5.7.30")
	})
}

// An MX given as an address literal domain goes straight to the address.
func TestAddressLiteralDomain(t *testing.T) {
	t.Parallel()
	p := startPeer(t, seq(greet(), ehlo(), txn("a@example.net", "b@[127.0.0.1]"), quit()))
	d := delivery("b@[127.0.0.1]")
	d.Domain = "[127.0.0.1]"
	c := newClient(t, nil, p)
	res := c.Deliver(t.Context(), d)
	wantCodes(t, res, "b@[127.0.0.1]=250 2.0.0")
}
