package outbound

import (
	"context"
	"errors"
	"net"
	"strings"
	"time"
)

// Connection reuse: after a delivery, the session can be kept open for
// IdleTimeout and used for the next message to the same host and address
// (issue 4: one connection carries several transactions). A transaction
// that did not end with the final reply to the data is closed with RSET
// first (RFC 5321 4.1.1.5), so the next one starts clean. A kept session
// that the peer closed meanwhile is detected before use, or by its first
// command failing, and a new connection is made without counting it as a
// failure of the destination.

// poolKey identifies the sessions that may serve a try: same host name
// (the certificate was checked against it), address, port, TLS choice
// and credentials.
func poolKey(p *plan, h hop, ip net.IP, plain bool) string {
	user := ""
	if p.route != nil {
		user = p.route.Username
	}
	return strings.Join([]string{h.name, ip.String(), h.port, p.tlsMode(), user, map[bool]string{true: "plain"}[plain]}, "|")
}

// take returns the most recently used idle session kept under key, if it is still open.
func (c *Client) take(key string) *session {
	for {
		c.mu.Lock()
		ss := c.idle[key]
		if len(ss) == 0 {
			c.mu.Unlock()
			return nil
		}
		s := ss[len(ss)-1]
		ss[len(ss)-1] = nil
		if ss = ss[:len(ss)-1]; len(ss) == 0 {
			delete(c.idle, key)
		} else {
			c.idle[key] = ss
		}
		c.mu.Unlock()
		s.idleTimer.Stop()
		if s.alive() {
			return s
		}
		s.broken = true
		s.close()
	}
}

// release keeps s for reuse under key, or closes it.
func (c *Client) release(key string, s *session) {
	if c.IdleTimeout <= 0 {
		s.close()
		return
	}
	if !s.broken && s.inTxn {
		s.reset()
	}
	if s.broken {
		s.close()
		return
	}
	s.bind(context.Background())
	max := c.MaxIdle
	if max <= 0 {
		max = 4
	}
	c.mu.Lock()
	if c.closed || len(c.idle[key]) >= max {
		c.mu.Unlock()
		s.close()
		return
	}
	defer c.mu.Unlock()
	if c.idle == nil {
		c.idle = map[string][]*session{}
	}
	c.idle[key] = append(c.idle[key], s)
	s.idleTimer = time.AfterFunc(c.IdleTimeout, func() {
		c.mu.Lock()
		mine := false
		ss := c.idle[key]
		for i, x := range ss {
			if x == s {
				mine = true
				ss = append(ss[:i], ss[i+1:]...)
				break
			}
		}
		if len(ss) == 0 {
			delete(c.idle, key)
		} else if mine {
			c.idle[key] = ss
		}
		c.mu.Unlock()
		if mine {
			s.close()
		}
	})
}

// Close closes the idle connections; later deliveries keep none. It
// does not wait for deliveries in progress.
func (c *Client) Close() error {
	c.mu.Lock()
	idle := c.idle
	c.idle = nil
	c.closed = true
	c.mu.Unlock()
	for _, ss := range idle {
		for _, s := range ss {
			s.idleTimer.Stop()
			s.close()
		}
	}
	return nil
}

// bind makes ctx the session's context: its cancellation interrupts the
// session's reads and writes.
func (s *session) bind(ctx context.Context) {
	s.stop()
	s.ctx = ctx
	raw := s.raw
	s.stop = context.AfterFunc(ctx, func() { raw.SetDeadline(time.Unix(1, 0)) })
}

// alive reports whether an idle session is still open and silent: a peer
// that closed it, or said something (a 421 before closing), has ended it.
func (s *session) alive() bool {
	if s.br.Buffered() > 0 {
		return false // the peer said something while idle (a 421 before closing)
	}
	if alive, ok := peekAlive(s.raw); ok {
		return alive
	}
	// A deadline already past would fail the read before it looks at the
	// socket; a millisecond lets it see a FIN or bytes already there.
	s.nc.SetReadDeadline(time.Now().Add(time.Millisecond))
	_, err := s.br.Peek(1)
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// reset ends an unfinished transaction with RSET; the session is broken
// if that fails.
func (s *session) reset() {
	s.cmd("RSET")
	if s.flush(s.to.Mail) != nil {
		return
	}
	rep, err := s.read(s.to.Mail)
	if err == nil && rep.Code/100 == 2 {
		s.inTxn = false
		return
	}
	s.broken = true
}
