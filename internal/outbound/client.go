package outbound

import (
	"context"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"yubin/internal/dns"
	"yubin/internal/lazylog"
	"yubin/internal/smtp"
)

// Delivery is one message for the recipients of one destination domain.
type Delivery struct {
	MessageID  string
	From       string      // envelope sender; "" = null sender
	Recipients []Recipient // all for Domain
	Domain     string
	Size       int64                         // size of the content in octets, for SIZE (RFC 1870)
	Open       func() (io.ReadCloser, error) // the content (CRLF text); opened once to check it, then once per sending
	SMTPUTF8   bool                          // the message needs SMTPUTF8 (UTF-8 addresses or headers)
	EightBit   bool                          // BODY=8BITMIME
	Ret, EnvID string                        // DSN (RFC 3461): "FULL"/"HDRS", the envelope id decoded (not xtext); "" when not given
	RequireTLS bool                          // RFC 8689: the sender asked for REQUIRETLS
}

// Recipient is one envelope recipient with its DSN parameters (RFC 3461),
// "" when not given. Notify is "NEVER" or a comma-separated list of
// SUCCESS, FAILURE, DELAY; ORCPT is "addr-type;address", decoded (not
// xtext), e.g. "rfc822;bob@example.org". Deliver encodes them for the wire.
type Recipient struct {
	Address, Notify, ORCPT string
}

// RcptResult is the outcome for one recipient.
type RcptResult struct {
	Address string
	// Reply is the final reply for this recipient: 2xx delivered, 4xx retry,
	// 5xx bounce. It is the peer's own reply when the peer gave one, with
	// one exception: a 552 to RCPT becomes a 452 (RFC 5321 4.5.3.1.10).
	// Otherwise yubin wrote it (DNS failures, connection failures, policy).
	Reply *smtp.Reply
	MX    string // the host that gave Reply, "" when no host did
}

// Attempt is one connection (or one try to connect) to one address.
type Attempt struct {
	Time  time.Time
	MX    string // host name (MX or route host)
	IP    string // the address tried, "" when the host had none
	TLS   string // "none", "TLS1.3 TLS_AES_128_GCM_SHA256 verified" or "... unverified: <reason>"
	Reply string // last reply or error text
}

// Result is the outcome of Deliver: one RcptResult per recipient of the
// Delivery, in order, and the attempts in the order they were made.
type Result struct {
	Rcpts    []RcptResult
	Attempts []Attempt
}

// Route sends a domain to a fixed host (a smarthost) instead of its MX.
type Route struct {
	Host               string // host:port (port 25 when omitted)
	Username, Password string // AUTH PLAIN, or LOGIN when only that is offered, after TLS
	// TLS: "starttls" (required, certificate verified), "implicit" (TLS
	// from the first byte, as on port 465), "opportunistic" (STARTTLS when
	// offered, as for MX delivery; also what "" means) or "none".
	TLS                string
	InsecureSkipVerify bool // with "starttls" or "implicit": accept an unverified certificate (still recorded)
}

// The values of Route.TLS.
const (
	TLSStartTLS      = "starttls"
	TLSImplicit      = "implicit"
	TLSOpportunistic = "opportunistic"
	TLSNone          = "none"
)

// Timeouts bound each step of a session. A zero field takes the default in
// brackets, from RFC 5321 4.5.3.2 where it gives one.
type Timeouts struct {
	Connect   time.Duration // TCP connect [30s]
	Greeting  time.Duration // the 220 greeting [5m]
	EHLO      time.Duration // EHLO/HELO reply [5m]
	TLS       time.Duration // STARTTLS reply and TLS handshake [5m]
	Auth      time.Duration // each AUTH step [5m]
	Mail      time.Duration // MAIL reply [5m]
	Rcpt      time.Duration // each RCPT reply [5m]
	DataInit  time.Duration // DATA reply (354) [2m]
	DataBlock time.Duration // each write of the content [3m]
	DataFinal time.Duration // the reply after the content [10m]
	Quit      time.Duration // QUIT reply; the message is already delivered [30s]
}

func (t Timeouts) withDefaults() Timeouts {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&t.Connect, 30*time.Second)
	def(&t.Greeting, 5*time.Minute)
	def(&t.EHLO, 5*time.Minute)
	def(&t.TLS, 5*time.Minute)
	def(&t.Auth, 5*time.Minute)
	def(&t.Mail, 5*time.Minute)
	def(&t.Rcpt, 5*time.Minute)
	def(&t.DataInit, 2*time.Minute)
	def(&t.DataBlock, 3*time.Minute)
	def(&t.DataFinal, 10*time.Minute)
	def(&t.Quit, 30*time.Second)
	return t
}

// Client delivers messages to other mail servers. Its fields are set
// before the first Deliver and not changed after; Deliver may then be
// called from many goroutines.
type Client struct {
	Hostname string           // EHLO name, before and after STARTTLS; required
	Resolver dns.Resolver     // required unless every domain has a route with an IP address
	Routes   map[string]Route // domain (lower-case) or "*" -> static route (smarthost)
	Port     int              // port of MX hosts; 0 means 25
	TLSRoots *x509.CertPool   // roots for verifying peers; nil = the system roots
	MTASTS   MTASTSFetcher    // nil = MTA-STS disabled
	Timeouts Timeouts
	Logger   *slog.Logger                                                      // nil = discard
	Now      func() time.Time                                                  // nil = time.Now; attempt times and certificate validity
	Dial     func(ctx context.Context, network, addr string) (net.Conn, error) // nil = net.Dialer
	// IdleTimeout is how long a connection stays open after a delivery, for
	// the next message to the same host; 0 closes it at once. Close closes
	// the idle connections.
	IdleTimeout time.Duration
	// MaxIdle is how many idle connections are kept per host and address: as many as
	// deliveries to it may run at once is enough; 0 means 4.
	MaxIdle int

	mu     sync.Mutex
	idle   map[string][]*session // by poolKey, most recently used last
	closed bool
}

func (c *Client) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Client) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// route returns the static route for domain, if any.
func (c *Client) route(domain string) (Route, bool) {
	if r, ok := c.Routes[strings.ToLower(domain)]; ok {
		return r, true
	}
	r, ok := c.Routes["*"]
	return r, ok
}

// rcptState is one recipient during Deliver.
type rcptState struct {
	Recipient
	wire  string      // the address as sent
	reply *smtp.Reply // final reply, nil while pending
	mx    string
}

// Deliver makes one delivery to d.Domain: it resolves where to connect,
// tries each host and address in order until one takes the transaction,
// and returns a final reply for every recipient. It never returns an
// error: every failure becomes a reply, 4xx when a later try may succeed.
func (c *Client) Deliver(ctx context.Context, d *Delivery) (res Result) {
	log := lazylog.With(c.logger(), "msgid", d.MessageID, "domain", d.Domain)
	rcpts := make([]*rcptState, len(d.Recipients))
	for i, r := range d.Recipients {
		rcpts[i] = &rcptState{Recipient: r}
	}
	defer func() {
		for _, r := range rcpts {
			res.Rcpts = append(res.Rcpts, RcptResult{Address: r.Address, Reply: r.reply, MX: r.mx})
		}
	}()
	if c.Hostname == "" {
		finalAll(rcpts, smtp.NewReply(451, "4.3.5", "outbound: no EHLO hostname configured"), "")
		return res
	}
	msg, fail := prepare(d, rcpts)
	if fail != nil {
		finalAll(rcpts, fail, "")
		log.Warn("outbound: message refused before connecting", "reply", fail.Error())
		return res
	}
	if pendingCount(rcpts) == 0 {
		return res
	}

	plan, fail := c.plan(ctx, d, msg)
	if fail != nil {
		finalAll(rcpts, fail, "")
		log.Info("outbound: no destination", "reply", fail.Error())
		return res
	}
	// Why the last host failed, and the host that said so. A temporary
	// failure anywhere wins over a permanent one at a later host: a backup
	// MX that refuses must not bounce mail the primary could take later.
	var last, lastTemp *smtp.Reply
	var lastMX, lastTempMX string
	failed := func(rep *smtp.Reply, mx string) {
		last, lastMX = rep, mx
		if rep.Temporary() {
			lastTemp, lastTempMX = rep, mx
		}
	}
hosts:
	for _, h := range plan.hops {
		if why := plan.refuseHost(h, d); why != nil {
			res.Attempts = append(res.Attempts, Attempt{Time: c.now(), MX: h.name, TLS: "none", Reply: why.Error()})
			failed(why, "")
			continue
		}
		ips, fail := c.addresses(ctx, h)
		if fail != nil {
			res.Attempts = append(res.Attempts, Attempt{Time: c.now(), MX: h.name, TLS: "none", Reply: fail.Error()})
			failed(fail, "")
			continue
		}
		for _, ip := range ips {
			out := c.try(ctx, log, msg, plan, h, ip, rcpts, false)
			res.Attempts = append(res.Attempts, out.attempts...)
			if out.retryPlain && ctx.Err() == nil {
				// RFC 3207 permits going on without TLS; a peer whose
				// TLS is broken gets the message in clear rather than never.
				out = c.try(ctx, log, msg, plan, h, ip, rcpts, true)
				res.Attempts = append(res.Attempts, out.attempts...)
			}
			if out.fail != nil {
				failed(out.fail, out.failMX)
			}
			if out.done || pendingCount(rcpts) == 0 || ctx.Err() != nil {
				break hosts
			}
		}
	}
	if pendingCount(rcpts) > 0 {
		if lastTemp != nil {
			last, lastMX = lastTemp, lastTempMX
		}
		if err := ctx.Err(); err != nil {
			last, lastMX = smtp.Replyf(451, "4.4.2", "delivery interrupted: %v", err), ""
		}
		if last == nil {
			last = smtp.NewReply(451, "4.4.1", "no mail server of the domain could be reached")
		}
		finalAll(rcpts, last, lastMX)
	}
	return res
}

func pendingCount(rcpts []*rcptState) int {
	n := 0
	for _, r := range rcpts {
		if r.reply == nil {
			n++
		}
	}
	return n
}
