package outbound

import (
	"context"
	"log/slog"
	"net"

	"yubin/internal/smtp"
)

// outcome is what one try at one address decided.
type outcome struct {
	attempts []Attempt
	// fail is why the try failed, the reply for recipients still pending if
	// no later try does better; failMX the host that said it, "" when
	// yubin did.
	fail   *smtp.Reply
	failMX string
	// done: the destination gave its answer for the transaction (or the
	// message cannot go anywhere); no other host is tried.
	done bool
	// retryPlain: the TLS handshake of opportunistic STARTTLS failed; the
	// same address is tried again without STARTTLS.
	retryPlain bool
}

// try delivers to the recipients still pending through h at ip: over an
// idle connection kept from an earlier delivery when there is one (and a
// new connection if that one turns out to be closed), else over a new
// connection. plain disables STARTTLS.
func (c *Client) try(ctx context.Context, log *slog.Logger, m *message, p *plan, h hop, ip net.IP, rcpts []*rcptState, plain bool) outcome {
	key := poolKey(p, h, ip, plain)
	var earlier []Attempt
	if s := c.take(key); s != nil {
		s.bind(ctx)
		a := Attempt{Time: c.now(), MX: h.name, IP: ip.String()}
		out, stale := c.use(log, s, a, m, p, h, ip, rcpts, true)
		if !stale {
			c.release(key, s)
			return out
		}
		// The peer closed it while it was idle: nothing was decided.
		s.close()
		earlier = out.attempts
	}
	s, out := c.connect(ctx, log, p, h, ip, plain)
	if s != nil {
		out, _ = c.use(log, s, out.attempts[0], m, p, h, ip, rcpts, false)
		c.release(key, s)
	}
	out.attempts = append(earlier, out.attempts...)
	return out
}

// connect opens a session with h at ip, ready for a transaction: greeting,
// EHLO, STARTTLS, the TLS rules of the plan and AUTH for a route. On
// failure the session is closed and nil.
func (c *Client) connect(ctx context.Context, log *slog.Logger, p *plan, h hop, ip net.IP, plain bool) (*session, outcome) {
	to := c.Timeouts.withDefaults()
	where := hostPort(h.name, ip, h.port)
	a := Attempt{Time: c.now(), MX: h.name, IP: ip.String(), TLS: "none"}
	var out outcome

	nc, err := c.dial(ctx, net.JoinHostPort(ip.String(), h.port), to.Connect)
	if err != nil {
		out.fail = smtp.Replyf(451, "4.4.1", "connect to %s: %s", where, connError(err))
		a.Reply = "connect: " + connError(err)
		out.attempts = []Attempt{a}
		c.logAttempt(log, a, out)
		return nil, out
	}
	s := newSession(ctx, nc, h.name, to)
	fail := func(rep *smtp.Reply, fromPeer bool) (*session, outcome) {
		a.TLS = s.tls
		if fromPeer {
			out.fail, out.failMX = s.failure(rep), h.name
			a.Reply = s.last
		} else {
			out.fail = rep
			a.Reply = rep.Error()
		}
		out.attempts = []Attempt{a}
		c.logAttempt(log, a, out)
		s.close()
		return nil, out
	}

	mode := p.tlsMode()
	if mode == TLSImplicit {
		if err := s.handshake(c); err != nil {
			return fail(smtp.Replyf(451, "4.7.5", "TLS handshake with %s failed: %v", where, err), false)
		}
	}
	rep, err := s.read(to.Greeting)
	if err != nil {
		return fail(s.lost("the greeting", err), false)
	}
	if rep.Code != 220 {
		// RFC 5321 3.1: a 554 greeting (or any refusal) means no service
		// here; another MX may serve.
		return fail(rep, true)
	}
	if rep, err := s.hello(c.Hostname); err != nil {
		return fail(s.lost("EHLO", err), false)
	} else if rep != nil {
		return fail(rep, true)
	}

	if !s.tlsOn && !plain && mode != TLSNone && s.ext.has("STARTTLS") {
		rep, inHandshake, err := s.startTLS(c)
		switch {
		case err != nil && inHandshake && !p.requireTLS:
			out.retryPlain = true
			return fail(smtp.Replyf(451, "4.7.5", "TLS handshake with %s failed: %v", where, err), false)
		case err != nil:
			return fail(s.lost("STARTTLS", err), false)
		case rep != nil && rep.Code == 421:
			return fail(rep, true)
		case rep != nil && p.requireTLS:
			return fail(smtp.Replyf(451, "4.7.5", "%s refused STARTTLS (%s), and %s", where, rep.Error(), p.why), false)
		case rep == nil:
			// RFC 3207 4.2: after TLS the session starts over.
			if rep, err := s.hello(c.Hostname); err != nil {
				return fail(s.lost("EHLO after STARTTLS", err), false)
			} else if rep != nil {
				return fail(rep, true)
			}
		}
		// A refused STARTTLS leaves opportunistic delivery in clear.
	}
	if rep := tlsPolicy(s, p, where); rep != nil {
		return fail(rep, false)
	}

	if r := p.route; r != nil && r.Username != "" {
		if !s.tlsOn && mode != TLSNone {
			return fail(smtp.Replyf(454, "4.7.0", "not sending credentials to %s without TLS", where), false)
		}
		rep, err := s.auth(r.Username, r.Password)
		if err != nil {
			return fail(s.lost("AUTH", err), false)
		}
		if rep != nil {
			// Wrong credentials are the operator's to fix: retry later
			// rather than bounce (Postfix does the same).
			out.done = true
			return fail(smtp.Replyf(454, "4.7.0", "authentication to %s failed: %s", where, rep.Error()), false)
		}
	}
	out.attempts = []Attempt{a}
	return s, out
}

// tlsPolicy returns why the session's TLS does not satisfy the plan, or nil.
func tlsPolicy(s *session, p *plan, where string) *smtp.Reply {
	if p.requireTLS && !s.tlsOn {
		return smtp.Replyf(451, "4.7.10", "%s does not offer STARTTLS, and %s", where, p.why)
	}
	if p.verify && s.verifyErr != nil {
		return smtp.Replyf(451, "4.7.5", "the certificate of %s is not valid (%v), and %s", where, s.verifyErr, p.why)
	}
	return nil
}

// use runs the transaction on s, an open session, after checking that the
// peer can take the message. stale reports a reused session that failed
// before the peer said anything about the transaction (or said 421 at
// once): it had been closed while idle.
func (c *Client) use(log *slog.Logger, s *session, a Attempt, m *message, p *plan, h hop, ip net.IP, rcpts []*rcptState, reused bool) (out outcome, stale bool) {
	where := hostPort(h.name, ip, h.port)
	defer func() {
		a.TLS = s.tls
		if a.Reply == "" {
			a.Reply = s.last
		}
		out.attempts = []Attempt{a}
		c.logAttempt(log, a, out)
	}()
	yubinFail := func(rep *smtp.Reply) (outcome, bool) {
		out.fail = rep
		a.Reply = rep.Error()
		return out, false
	}
	if reused {
		// A kept session was opened for another message, maybe under other
		// rules.
		if rep := tlsPolicy(s, p, where); rep != nil {
			return yubinFail(rep)
		}
	}
	if p.policy != nil && p.policy.Mode == ModeTesting && (!s.tlsOn || s.verifyErr != nil) {
		// RFC 8461 5: testing mode delivers anyway; the failure is only
		// reported (TLSRPT is not implemented: the log says it).
		log.Warn("outbound: MTA-STS testing policy not met", "mx", h.name, "tls", s.tls)
	}
	if m.needUTF8 && !s.ext.has("SMTPUTF8") {
		// RFC 6531 3.5: no downgrade exists for UTF-8 addresses.
		out.done = true
		rep := smtp.Replyf(553, "5.6.7",
			"the message needs SMTPUTF8 (non-ASCII addresses or headers, RFC 6531) and %s does not support it", h.name)
		finalAll(rcpts, rep, h.name)
		a.Reply = rep.Error()
		return out, false
	}
	if m.d.RequireTLS && !s.ext.has("REQUIRETLS") {
		// RFC 8689 4.2.2: the next hop must support REQUIRETLS.
		return yubinFail(smtp.Replyf(550, "5.7.30", "REQUIRETLS: %s does not support REQUIRETLS", where))
	}
	if limit := s.ext.sizeLimit(); limit > 0 && m.size() > limit {
		// RFC 1870 6.1: do not send what the peer already said it refuses.
		out.done = true
		rep := smtp.Replyf(552, "5.3.4", "the message (%d octets) is larger than %s accepts (%d octets)", m.size(), h.name, limit)
		finalAll(rcpts, rep, h.name)
		a.Reply = rep.Error()
		return out, false
	}

	before := s.nreplies
	out.fail, out.done = s.transaction(m, rcpts)
	if out.fail != nil {
		out.failMX = h.name
	}
	stale = reused && !out.done && (s.nreplies == before || s.nreplies == before+1 && out.fail != nil && out.fail.Code == 421)
	return out, stale
}

func (c *Client) logAttempt(log *slog.Logger, a Attempt, out outcome) {
	log.Info("outbound: attempt", "mx", a.MX, "ip", a.IP, "tls", a.TLS, "reply", a.Reply, "done", out.done)
}

// finalAll gives rep to every recipient still pending.
func finalAll(rcpts []*rcptState, rep *smtp.Reply, mx string) {
	for _, r := range rcpts {
		if r.reply == nil {
			r.reply, r.mx = rep, mx
		}
	}
}
