package outbound

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"

	"yubin/internal/dns"
)

const testContent = "From: <a@example.net>\r\nTo: <b@example.test>\r\nSubject: test\r\n\r\n" +
	"Hello.\r\n.leading dot\r\n..two dots\r\n.\r\nend\r\n"

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// mxResolver says that example.test has the MX mx.example.test at 127.0.0.1.
func mxResolver() *dns.Mock {
	return &dns.Mock{
		MX: map[string][]*net.MX{"example.test": {{Host: mxName, Pref: 10}}},
		IP: map[string][]net.IP{mxName: {net.IPv4(127, 0, 0, 1)}},
	}
}

// newClient returns a client whose MX port is the peer's.
func newClient(t testing.TB, r dns.Resolver, p *peer) *Client {
	c := &Client{Hostname: clientName, Resolver: r, Logger: testLogger(t)}
	if p != nil {
		c.Port = p.port()
	}
	return c
}

func content(s string) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(s)), nil }
}

func delivery(rcpts ...string) *Delivery {
	d := &Delivery{MessageID: "m1", From: "a@example.net", Domain: "example.test", Open: content(testContent)}
	for _, r := range rcpts {
		d.Recipients = append(d.Recipients, Recipient{Address: r})
	}
	return d
}

// codes returns "addr=code enhanced" for each recipient.
func codes(res Result) string {
	var s []string
	for _, r := range res.Rcpts {
		if r.Reply == nil {
			s = append(s, r.Address+"=<nil>")
			continue
		}
		s = append(s, fmt.Sprintf("%s=%d %s", r.Address, r.Reply.Code, r.Reply.Enhanced))
	}
	return strings.Join(s, ", ")
}

func wantCodes(t *testing.T, res Result, want string) {
	t.Helper()
	if got := codes(res); got != want {
		t.Errorf("results: %s\nwant:    %s\nattempts: %+v", got, want, res.Attempts)
		for _, r := range res.Rcpts {
			t.Logf("  %s: %v (mx %q)", r.Address, r.Reply, r.MX)
		}
	}
}

// txn is a plain transaction of one message to the recipients, without
// pipelining, through DATA.
func txn(from string, rcpts ...string) []step {
	s := []step{expect("MAIL FROM:<" + from + ">"), say("250 2.1.0 ok")}
	for _, r := range rcpts {
		s = append(s, expect("RCPT TO:<"+r+">"), say("250 2.1.5 ok"))
	}
	return append(s, expect("DATA"), say("354 go ahead"), readData(), say("250 2.0.0 queued as X1"))
}

func TestDeliverSuccess(t *testing.T) {
	t.Parallel()
	p := startPeer(t, seq(greet(), ehlo("8BITMIME", "ENHANCEDSTATUSCODES"),
		txn("a@example.net", "b@example.test", "c@example.test"), quit()))
	c := newClient(t, mxResolver(), p)
	res := c.Deliver(t.Context(), delivery("b@example.test", "c@example.test"))
	wantCodes(t, res, "b@example.test=250 2.0.0, c@example.test=250 2.0.0")
	if msgs := p.messages(); len(msgs) != 1 || msgs[0] != testContent {
		t.Errorf("received %q, want %q", msgs, testContent)
	}
	if len(res.Attempts) != 1 {
		t.Fatalf("attempts: %+v", res.Attempts)
	}
	a := res.Attempts[0]
	if a.MX != mxName || a.IP != "127.0.0.1" || a.TLS != "none" || a.Reply != "250 2.0.0 queued as X1" || a.Time.IsZero() {
		t.Errorf("attempt: %+v", a)
	}
	if res.Rcpts[0].MX != mxName {
		t.Errorf("MX = %q", res.Rcpts[0].MX)
	}
}

// Content without CRLF line endings goes out as CRLF text, with a final
// CRLF, and the SIZE announced is what is sent.
func TestDeliverNormalisesContent(t *testing.T) {
	t.Parallel()
	raw := "Subject: x\n\nline\rtwo\r\n.dot\nlast"
	want := "Subject: x\r\n\r\nline\r\ntwo\r\n.dot\r\nlast\r\n"
	p := startPeer(t, seq(greet(), ehlo("SIZE 100000"),
		expect(fmt.Sprintf("MAIL FROM:<a@example.net> SIZE=%d", len(want))), say("250 ok"),
		expect("RCPT TO:<b@example.test>"), say("250 ok"),
		expect("DATA"), say("354 go"), readData(), say("250 ok"), quit()))
	d := delivery("b@example.test")
	d.Open = content(raw)
	res := newClient(t, mxResolver(), p).Deliver(t.Context(), d)
	wantCodes(t, res, "b@example.test=250 ")
	if msgs := p.messages(); len(msgs) != 1 || msgs[0] != want {
		t.Errorf("received %q, want %q", msgs, want)
	}
}

func TestPerRecipientReplies(t *testing.T) {
	t.Parallel()
	p := startPeer(t, seq(greet(), ehlo(),
		expect("MAIL FROM:<a@example.net>"), say("250 ok"),
		expect("RCPT TO:<ok@example.test>"), say("250 ok"),
		expect("RCPT TO:<later@example.test>"), say("450 4.2.1 mailbox busy"),
		expect("RCPT TO:<nobody@example.test>"), say("550 5.1.1 no such user"),
		expect("RCPT TO:<full@example.test>"), say("552 5.5.3 too many recipients"),
		expect("DATA"), say("354 go"), readData(), say("250 2.0.0 ok"), quit()))
	res := newClient(t, mxResolver(), p).Deliver(t.Context(),
		delivery("ok@example.test", "later@example.test", "nobody@example.test", "full@example.test"))
	wantCodes(t, res, "ok@example.test=250 2.0.0, later@example.test=450 4.2.1, nobody@example.test=550 5.1.1, full@example.test=452 4.5.3")
	if got := res.Rcpts[3].Reply.Lines[0]; got != "too many recipients" {
		t.Errorf("552 rewritten text = %q", got)
	}
}

func TestMailRefused(t *testing.T) {
	t.Parallel()
	p := startPeer(t, seq(greet(), ehlo(),
		expect("MAIL FROM:<a@example.net>"), say("553 5.7.1 sender rejected"), quit()))
	res := newClient(t, mxResolver(), p).Deliver(t.Context(), delivery("b@example.test", "c@example.test"))
	wantCodes(t, res, "b@example.test=553 5.7.1, c@example.test=553 5.7.1")
}

func TestDataRefused(t *testing.T) {
	t.Parallel()
	p := startPeer(t, seq(greet(), ehlo(),
		expect("MAIL FROM:<a@example.net>"), say("250 ok"),
		expect("RCPT TO:<b@example.test>"), say("250 ok"),
		expect("RCPT TO:<c@example.test>"), say("550 5.1.1 unknown"),
		expect("DATA"), say("354 go"), readData(), say("451 4.3.0 try later"), quit()))
	res := newClient(t, mxResolver(), p).Deliver(t.Context(), delivery("b@example.test", "c@example.test"))
	wantCodes(t, res, "b@example.test=451 4.3.0, c@example.test=550 5.1.1")
}

// No recipient accepted: no DATA, the transaction is over.
func TestAllRecipientsRefused(t *testing.T) {
	t.Parallel()
	p := startPeer(t, seq(greet(), ehlo(),
		expect("MAIL FROM:<>"), say("250 ok"),
		expect("RCPT TO:<b@example.test>"), say("550 5.1.1 unknown"), quit()))
	d := delivery("b@example.test")
	d.From = ""
	res := newClient(t, mxResolver(), p).Deliver(t.Context(), d)
	wantCodes(t, res, "b@example.test=550 5.1.1")
}

// The peer knows EHLO only by its 5xx: HELO, and no extensions.
func TestHELOFallback(t *testing.T) {
	t.Parallel()
	p := startPeer(t, seq(greet(),
		expect("EHLO "+clientName), say("502 5.5.1 what?"),
		expect("HELO "+clientName), say("250 "+mxName),
		txn("a@example.net", "b@example.test"), quit()))
	d := delivery("b@example.test")
	d.EightBit = true // not offered: no BODY=
	res := newClient(t, mxResolver(), p).Deliver(t.Context(), d)
	wantCodes(t, res, "b@example.test=250 2.0.0")
}

// Replies as terse as RFC 5321 allows: "250" alone, "354" alone, a
// multi-line EHLO with lowercase keywords and no text on the last line.
func TestTerseReplies(t *testing.T) {
	t.Parallel()
	p := startPeer(t, seq(say("220"),
		expect("EHLO "+clientName), say("250-"+mxName, "250-pipelining", "250-size 1000000", "250 8bitmime"),
		expect("MAIL FROM:<a@example.net> SIZE=*"), expect("RCPT TO:<b@example.test>"), expect("DATA"),
		say("250", "250", "354"), readData(), say("250"), quit()))
	res := newClient(t, mxResolver(), p).Deliver(t.Context(), delivery("b@example.test"))
	wantCodes(t, res, "b@example.test=250 ")
}

func TestNullMX(t *testing.T) {
	t.Parallel()
	r := &dns.Mock{MX: map[string][]*net.MX{"example.test": {{Host: ".", Pref: 0}}}}
	res := newClient(t, r, nil).Deliver(t.Context(), delivery("b@example.test", "c@example.test"))
	wantCodes(t, res, "b@example.test=556 5.1.10, c@example.test=556 5.1.10")
	if len(res.Attempts) != 0 {
		t.Errorf("attempts: %+v", res.Attempts)
	}
}

func TestDNSFailures(t *testing.T) {
	t.Parallel()
	r := &dns.Mock{Fail: map[string]bool{"broken.test": true}}
	c := newClient(t, r, nil)

	d := delivery("b@nowhere.test")
	d.Domain = "nowhere.test"
	wantCodes(t, c.Deliver(t.Context(), d), "b@nowhere.test=550 5.1.2")

	d = delivery("b@broken.test")
	d.Domain = "broken.test"
	wantCodes(t, c.Deliver(t.Context(), d), "b@broken.test=451 4.4.3")
}

// No MX records: the domain's own address is the MX (RFC 5321 5.1).
func TestImplicitMX(t *testing.T) {
	t.Parallel()
	p := startPeer(t, seq(greet(), ehlo(), txn("a@example.net", "b@example.test"), quit()))
	r := &dns.Mock{IP: map[string][]net.IP{"example.test": {net.IPv4(127, 0, 0, 1)}}}
	res := newClient(t, r, p).Deliver(t.Context(), delivery("b@example.test"))
	wantCodes(t, res, "b@example.test=250 2.0.0")
	if res.Attempts[0].MX != "example.test" {
		t.Errorf("attempt: %+v", res.Attempts[0])
	}
}

// mapDial returns a Dial function that sends each "ip:port" to the peer
// given for the ip, and refuses the others; it records the order.
func mapDial(peers map[string]*peer, order *[]string) func(context.Context, string, string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, _ := net.SplitHostPort(addr)
		*order = append(*order, host)
		p, ok := peers[host]
		if !ok {
			return nil, &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf("connection refused")}
		}
		var d net.Dialer
		return d.DialContext(ctx, network, p.addr())
	}
}

// MX hosts are tried by preference; a refused connection, a host without
// address and a 421 greeting each move on to the next.
func TestMXFallbackOrder(t *testing.T) {
	t.Parallel()
	busy := startPeer(t, seq(say("421 4.3.2 busy, try later")))
	good := startPeer(t, seq(greet(), ehlo(), txn("a@example.net", "b@example.test"), quit()))
	r := &dns.Mock{
		MX: map[string][]*net.MX{"example.test": {
			{Host: "mx4.example.test", Pref: 40},
			{Host: "mx1.example.test", Pref: 10},
			{Host: "mx3.example.test", Pref: 30},
			{Host: "mx2.example.test", Pref: 20},
			{Host: "mx5.example.test", Pref: 50},
		}},
		IP: map[string][]net.IP{
			"mx1.example.test": {net.ParseIP("192.0.2.1")}, // connection refused
			// mx2 has no address
			"mx3.example.test": {net.ParseIP("192.0.2.3")}, // 421
			"mx4.example.test": {net.ParseIP("192.0.2.4")}, // works
			"mx5.example.test": {net.ParseIP("192.0.2.5")}, // never tried
		},
	}
	var order []string
	c := newClient(t, r, nil)
	c.Dial = mapDial(map[string]*peer{"192.0.2.3": busy, "192.0.2.4": good}, &order)
	res := c.Deliver(t.Context(), delivery("b@example.test"))
	wantCodes(t, res, "b@example.test=250 2.0.0")
	if got := strings.Join(order, " "); got != "192.0.2.1 192.0.2.3 192.0.2.4" {
		t.Errorf("dial order: %s", got)
	}
	var mxs []string
	for _, a := range res.Attempts {
		mxs = append(mxs, a.MX+"="+a.Reply)
	}
	want := "mx1.example.test=connect: connection refused|" +
		"mx2.example.test=550 5.4.4 mail server mx2.example.test has no address: lookup A/AAAA mx2.example.test on mock: no such domain (NXDOMAIN)|" +
		"mx3.example.test=421 4.3.2 busy, try later|mx4.example.test=250 2.0.0 queued as X1"
	if got := strings.Join(mxs, "|"); got != want {
		t.Errorf("attempts:\n%s\nwant:\n%s", got, want)
	}
}

// Every MX down: the recipients are deferred with the last reason.
func TestAllMXDown(t *testing.T) {
	t.Parallel()
	r := &dns.Mock{
		MX: map[string][]*net.MX{"example.test": {{Host: "mx1.example.test", Pref: 10}, {Host: "mx2.example.test", Pref: 20}}},
		IP: map[string][]net.IP{
			"mx1.example.test": {net.ParseIP("192.0.2.1"), net.ParseIP("2001:db8::1")},
			"mx2.example.test": {net.ParseIP("192.0.2.2")},
		},
	}
	var order []string
	c := newClient(t, r, nil)
	c.Dial = mapDial(nil, &order)
	res := c.Deliver(t.Context(), delivery("b@example.test"))
	wantCodes(t, res, "b@example.test=451 4.4.1")
	// IPv6 first (RFC 8305), then IPv4, then the next MX.
	if got := strings.Join(order, " "); got != "2001:db8::1 192.0.2.1 192.0.2.2" {
		t.Errorf("dial order: %s", got)
	}
	if got := res.Rcpts[0].Reply.Error(); !strings.Contains(got, "mx2.example.test[192.0.2.2]") {
		t.Errorf("reply %q does not name the last host", got)
	}
}

// A 421 in the middle of the transaction: the recipient accepted before it
// is not delivered, and the next MX gets both.
func TestReply421MidTransaction(t *testing.T) {
	t.Parallel()
	first := startPeer(t, seq(greet(), ehlo(),
		expect("MAIL FROM:<a@example.net>"), say("250 ok"),
		expect("RCPT TO:<b@example.test>"), say("250 ok"),
		expect("RCPT TO:<c@example.test>"), say("421 4.4.2 closing, too slow"),
		expectClose()))
	second := startPeer(t, seq(greet(), ehlo(), txn("a@example.net", "b@example.test", "c@example.test"), quit()))
	r := &dns.Mock{
		MX: map[string][]*net.MX{"example.test": {{Host: "mx1.example.test", Pref: 10}, {Host: "mx2.example.test", Pref: 20}}},
		IP: map[string][]net.IP{"mx1.example.test": {net.ParseIP("192.0.2.1")}, "mx2.example.test": {net.ParseIP("192.0.2.2")}},
	}
	var order []string
	c := newClient(t, r, nil)
	c.Dial = mapDial(map[string]*peer{"192.0.2.1": first, "192.0.2.2": second}, &order)
	res := c.Deliver(t.Context(), delivery("b@example.test", "c@example.test"))
	wantCodes(t, res, "b@example.test=250 2.0.0, c@example.test=250 2.0.0")
	if res.Rcpts[0].MX != "mx2.example.test" {
		t.Errorf("delivered by %q", res.Rcpts[0].MX)
	}

	// With no other MX, both are deferred with the 421.
	only := startPeer(t, seq(greet(), ehlo(),
		expect("MAIL FROM:<a@example.net>"), say("250 ok"),
		expect("RCPT TO:<b@example.test>"), say("250 ok"),
		expect("RCPT TO:<c@example.test>"), say("421 4.4.2 closing"), expectClose()))
	res = newClient(t, mxResolver(), only).Deliver(t.Context(), delivery("b@example.test", "c@example.test"))
	wantCodes(t, res, "b@example.test=421 4.4.2, c@example.test=421 4.4.2")
}

func TestInvalidAddresses(t *testing.T) {
	t.Parallel()
	p := startPeer(t, seq(greet(), ehlo(), txn("a@example.net", "good@example.test"), quit()))
	res := newClient(t, mxResolver(), p).Deliver(t.Context(), delivery("bad address@example.test", "good@example.test", "x@"))
	wantCodes(t, res, "bad address@example.test=553 5.1.3, good@example.test=250 2.0.0, x@=553 5.1.3")

	d := delivery("good@example.test")
	d.From = "not an address"
	res = newClient(t, mxResolver(), nil).Deliver(t.Context(), d)
	wantCodes(t, res, "good@example.test=553 5.1.7")
}

func TestLongLineRefused(t *testing.T) {
	t.Parallel()
	d := delivery("b@example.test")
	d.Open = content("Subject: x\r\n\r\nshort\r\n" + strings.Repeat("x", 999) + "\r\n")
	res := newClient(t, mxResolver(), nil).Deliver(t.Context(), d)
	wantCodes(t, res, "b@example.test=554 5.6.3")
	if !strings.Contains(res.Rcpts[0].Reply.Error(), "line 4 of the message is 999 octets long") {
		t.Errorf("reply: %v", res.Rcpts[0].Reply)
	}
	// 998 octets is the limit, not over it.
	p := startPeer(t, seq(greet(), ehlo(), txn("a@example.net", "b@example.test"), quit()))
	d.Open = content(strings.Repeat("x", 998) + "\r\n")
	wantCodes(t, newClient(t, mxResolver(), p).Deliver(t.Context(), d), "b@example.test=250 2.0.0")
}

func TestOpenFails(t *testing.T) {
	t.Parallel()
	d := delivery("b@example.test")
	d.Open = func() (io.ReadCloser, error) { return nil, fmt.Errorf("blob gone") }
	wantCodes(t, newClient(t, mxResolver(), nil).Deliver(t.Context(), d), "b@example.test=451 4.3.0")
}

func TestNoHostname(t *testing.T) {
	t.Parallel()
	c := newClient(t, mxResolver(), nil)
	c.Hostname = ""
	wantCodes(t, c.Deliver(t.Context(), delivery("b@example.test")), "b@example.test=451 4.3.5")
}

// A cancelled context defers everything at once.
func TestDeliverCancelled(t *testing.T) {
	t.Parallel()
	atMail := make(chan struct{})
	p := startPeer(t, seq(greet(), ehlo(), expect("MAIL FROM:*"), signal(atMail), stall()))
	ctx, cancel := context.WithCancel(t.Context())
	c := newClient(t, mxResolver(), p)
	done := make(chan Result)
	go func() { done <- c.Deliver(ctx, delivery("b@example.test")) }()
	<-atMail
	cancel()
	res := <-done
	wantCodes(t, res, "b@example.test=451 4.4.2")
}

// A permanent refusal from a backup MX does not bounce mail that the
// primary, down for now, could take later; from the only MX, it does.
func TestTemporaryFailureWins(t *testing.T) {
	t.Parallel()
	refusing := startPeer(t, seq(say("554 5.7.1 no service for you"), quitOrClose()))
	r := &dns.Mock{
		MX: map[string][]*net.MX{"example.test": {{Host: "mx1.example.test", Pref: 10}, {Host: "mx2.example.test", Pref: 20}}},
		IP: map[string][]net.IP{"mx1.example.test": {net.ParseIP("192.0.2.1")}, "mx2.example.test": {net.ParseIP("192.0.2.2")}},
	}
	var order []string
	c := newClient(t, r, nil)
	c.Dial = mapDial(map[string]*peer{"192.0.2.2": refusing}, &order)
	wantCodes(t, c.Deliver(t.Context(), delivery("b@example.test")), "b@example.test=451 4.4.1")

	only := startPeer(t, seq(say("554 5.7.1 no service for you"), quitOrClose()))
	res := newClient(t, mxResolver(), only).Deliver(t.Context(), delivery("b@example.test"))
	wantCodes(t, res, "b@example.test=554 5.7.1")
	if res.Rcpts[0].MX != mxName {
		t.Errorf("MX = %q", res.Rcpts[0].MX)
	}
}
