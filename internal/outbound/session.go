package outbound

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"yubin/internal/smtp"
)

// session is one SMTP connection to one peer. It is used by one goroutine.
type session struct {
	ctx  context.Context
	to   Timeouts
	raw  net.Conn // the TCP connection
	nc   net.Conn // raw, or the TLS connection over it
	br   *bufio.Reader
	bw   *bufio.Writer
	dw   deadlineWriter
	stop func() bool // stops the context watch

	host string     // the peer's name (MX host), for SNI and verification
	ext  extensions // from the last EHLO
	// tls is the Attempt.TLS text; tlsOn says TLS is up, verifyErr why its
	// certificate did not verify (nil: verified).
	tls       string
	tlsOn     bool
	verifyErr error
	last      string // last reply or error, for Attempt.Reply
	nreplies  int    // replies read so far
	broken    bool   // out of sync or closed: no QUIT, no reuse
	inTxn     bool   // MAIL was accepted and the transaction has not ended
	idleTimer *time.Timer
}

func newSession(ctx context.Context, nc net.Conn, host string, to Timeouts) *session {
	s := &session{ctx: ctx, to: to, raw: nc, nc: nc, host: host, tls: "none"}
	s.dw.s = s
	s.br = bufio.NewReaderSize(nc, 4096)
	s.bw = bufio.NewWriterSize(&s.dw, 32*1024)
	// Cancelling the context interrupts a blocked read or write at once;
	// every operation checks the context after setting its own deadline,
	// so a cancellation is never overwritten.
	s.stop = context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	return s
}

// close ends the session: QUIT when the connection is in a state to say
// it, then close.
func (s *session) close() {
	if !s.broken {
		s.cmd("QUIT")
		if s.flush(s.to.Quit) == nil {
			// The reply does not matter; reading it lets the peer close first.
			s.read(s.to.Quit)
		}
	}
	s.stop()
	s.nc.Close()
}

// deadlineWriter gives every write to the connection its own deadline:
// a peer that stops reading cannot block a delivery for ever.
type deadlineWriter struct {
	s       *session
	timeout time.Duration
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	if err := w.s.ctx.Err(); err != nil {
		return 0, w.s.ioError(err)
	}
	w.s.nc.SetWriteDeadline(time.Now().Add(w.timeout))
	if err := w.s.ctx.Err(); err != nil {
		return 0, w.s.ioError(err)
	}
	n, err := w.s.nc.Write(p)
	if err != nil {
		return n, w.s.ioError(err)
	}
	return n, nil
}

// cmd buffers one command line; flush sends it.
func (s *session) cmd(line string) {
	s.bw.WriteString(line)
	s.bw.WriteString("\r\n")
}

// flush sends what is buffered, each write within timeout.
func (s *session) flush(timeout time.Duration) error {
	s.dw.timeout = timeout
	if err := s.bw.Flush(); err != nil {
		return s.ioError(err)
	}
	return nil
}

// read reads one reply within timeout. A 421 means the peer is closing the
// connection (RFC 5321 3.8): the session is broken after it.
func (s *session) read(timeout time.Duration) (*smtp.Reply, error) {
	if err := s.ctx.Err(); err != nil {
		return nil, s.ioError(err)
	}
	s.nc.SetReadDeadline(time.Now().Add(timeout))
	if err := s.ctx.Err(); err != nil {
		return nil, s.ioError(err)
	}
	rep, err := smtp.ReadReply(s.br, 0)
	if err != nil {
		return nil, s.ioError(err)
	}
	s.last = rep.Error()
	s.nreplies++
	if rep.Code == 421 {
		s.broken = true
	}
	return rep, nil
}

// ioError records a failed read or write: the connection is out of sync
// and is never used again.
func (s *session) ioError(err error) error {
	s.broken = true
	if cerr := s.ctx.Err(); cerr != nil {
		err = cerr
	} else {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			err = errTimeout
		}
	}
	s.last = err.Error()
	return err
}

var errTimeout = errors.New("timeout waiting for the peer")

// lost returns the reply for recipients whose transaction was cut by err
// during stage.
func (s *session) lost(stage string, err error) *smtp.Reply {
	return smtp.Replyf(451, "4.4.2", "connection with %s lost during %s: %v", s.host, stage, err)
}

// hello says EHLO, and HELO when the peer refuses EHLO with a 5xx (RFC
// 5321 4.1.1.1 and 3.2). It returns the peer's refusal, or an I/O error.
func (s *session) hello(name string) (*smtp.Reply, error) {
	s.cmd("EHLO " + name)
	if err := s.flush(s.to.EHLO); err != nil {
		return nil, err
	}
	rep, err := s.read(s.to.EHLO)
	if err != nil {
		return nil, err
	}
	if rep.Code/100 == 2 {
		s.ext = parseEHLO(rep.Lines)
		return nil, nil
	}
	if rep.Code/100 != 5 || s.tlsOn {
		return rep, nil
	}
	s.cmd("HELO " + name)
	if err := s.flush(s.to.EHLO); err != nil {
		return nil, err
	}
	if rep, err = s.read(s.to.EHLO); err != nil {
		return nil, err
	}
	if rep.Code/100 != 2 {
		return rep, nil
	}
	s.ext = extensions{}
	return nil, nil
}

// handshake runs the client side of TLS on the connection and verifies the
// certificate (the result is in s.tls and s.verifyErr).
func (s *session) handshake(c *Client) error {
	tc := tls.Client(s.raw, tlsConfig(s.host))
	s.raw.SetDeadline(time.Now().Add(s.to.TLS))
	if err := s.ctx.Err(); err != nil {
		return s.ioError(err)
	}
	if err := tc.HandshakeContext(s.ctx); err != nil {
		return s.ioError(err)
	}
	state := tc.ConnectionState()
	s.nc = tc
	s.br.Reset(tc)
	s.bw.Reset(&s.dw)
	s.tlsOn = true
	s.verifyErr = verifyPeer(state, s.host, c.TLSRoots, c.now())
	s.tls = describeTLS(state, s.verifyErr)
	return nil
}

// startTLS sends STARTTLS (RFC 3207) and shakes hands on a 220. It returns
// the peer's refusal, or an error when the connection is lost; inHandshake
// says the error happened in the TLS handshake.
func (s *session) startTLS(c *Client) (rep *smtp.Reply, inHandshake bool, err error) {
	s.cmd("STARTTLS")
	if err := s.flush(s.to.TLS); err != nil {
		return nil, false, err
	}
	if rep, err = s.read(s.to.TLS); err != nil {
		return nil, false, err
	}
	if rep.Code != 220 {
		return rep, false, nil
	}
	if s.br.Buffered() > 0 {
		// Bytes after the 220 and before the handshake were injected by
		// someone on the path, to be read as if they came over TLS
		// (the client side of CVE-2011-0411).
		return nil, false, s.ioError(errors.New("data after the STARTTLS reply, before TLS"))
	}
	return nil, true, s.handshake(c)
}

// auth authenticates with PLAIN, or LOGIN when only that is offered
// (RFC 4954, RFC 4616). Credentials never go in a log or a reply.
func (s *session) auth(user, pass string) (*smtp.Reply, error) {
	mechs := s.ext.authMechs()
	var steps []string
	switch {
	case slices.Contains(mechs, "PLAIN"):
		s.cmd("AUTH PLAIN " + b64("\x00"+user+"\x00"+pass))
	case slices.Contains(mechs, "LOGIN"):
		s.cmd("AUTH LOGIN")
		steps = []string{b64(user), b64(pass)}
	default:
		return smtp.Replyf(454, "4.7.0", "%s offers no AUTH mechanism yubin supports (PLAIN, LOGIN)", s.host), nil
	}
	for {
		if err := s.flush(s.to.Auth); err != nil {
			return nil, err
		}
		rep, err := s.read(s.to.Auth)
		if err != nil {
			return nil, err
		}
		switch {
		case rep.Code == 235:
			return nil, nil
		case rep.Code == 334 && len(steps) > 0:
			s.cmd(steps[0])
			steps = steps[1:]
		case rep.Code == 334:
			// More challenges than the mechanism has: cancel (RFC 4954 4).
			s.cmd("*")
		default:
			return rep, nil
		}
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// dial connects to addr within the connect timeout.
func (c *Client) dial(ctx context.Context, addr string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if c.Dial != nil {
		return c.Dial(ctx, "tcp", addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

// connError shortens a dial error for replies.
func connError(err error) string {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "connection timed out"
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return fmt.Sprint(oe.Err)
	}
	return err.Error()
}
