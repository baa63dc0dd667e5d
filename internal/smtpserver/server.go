// Package smtpserver is yubin's SMTP server: the listener, the per-connection session state
// machine (RFC 5321), its limits and relay policy, and the streaming of DATA/BDAT into an intake
// Draft. It owns no storage: a message is acknowledged with 250 only after the Backend's Commit
// returned, which means it is on disk.
//
// The server looks like net/http: a Server with exported fields, Serve and
// Shutdown. Files: server.go (listener, connection limits, shutdown), session.go (the command
// loop and replies), envelope.go (EHLO, MAIL, RCPT...), data.go (DATA, BDAT, trace headers).
package smtpserver

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"yubin/internal/address"
	"yubin/internal/directory"
	"yubin/internal/intake"
	"yubin/internal/netutil"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("smtpserver: server closed")

// Backend resolves recipients and commits messages. *intake.Intake implements it.
type Backend interface {
	Resolve(ctx context.Context, addr address.Address) (directory.Resolution, error)
	Begin(ctx context.Context, from string) (*intake.Draft, error)
}

// Limits bound what one client can make the server do. Zero fields take the defaults noted.
type Limits struct {
	MaxMessageSize      int64         // bytes; default 50 MiB
	MaxRecipients       int           // default 100
	MaxConnections      int           // default 1000
	MaxConnectionsPerIP int           // default 20
	MaxErrors           int           // default 20
	CommandTimeout      time.Duration // default 5m
	DataTimeout         time.Duration // default 5m
	MaxReceivedHeaders  int           // default 100
}

func (l Limits) withDefaults() Limits {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	if l.MaxMessageSize <= 0 {
		l.MaxMessageSize = 50 << 20
	}
	def(&l.MaxRecipients, 100)
	def(&l.MaxConnections, 1000)
	def(&l.MaxConnectionsPerIP, 20)
	def(&l.MaxErrors, 20)
	def(&l.MaxReceivedHeaders, 100)
	if l.CommandTimeout <= 0 {
		l.CommandTimeout = 5 * time.Minute
	}
	if l.DataTimeout <= 0 {
		l.DataTimeout = 5 * time.Minute
	}
	return l
}

// Server is one SMTP listener's configuration and state. Set the exported fields before Serve.
type Server struct {
	// Hostname is used in the greeting, EHLO reply and Received headers.
	Hostname string
	// Backend resolves and commits. Required.
	Backend Backend
	// TLSConfig enables STARTTLS when not nil.
	TLSConfig *tls.Config
	// ImplicitTLS starts TLS on connect (port 465, RFC 8314) instead of offering STARTTLS.
	ImplicitTLS bool
	Limits      Limits
	// Logger receives connection and message events; nil discards.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	// Submission makes this a message submission listener (RFC 6409) instead of an MX:
	// AUTH is offered after TLS, MAIL needs an authenticated (or Local) session, the sender
	// must be the account's own address, and recipients may be anywhere (relay).
	Submission bool
	// Auth checks credentials on a submission listener.
	Auth Authenticator
	// Local marks a listener only local programs can reach (the Unix socket that
	// "yubin sendmail" uses): sessions count as authenticated and may use any sender,
	// as with Postfix's sendmail. Implies Submission.
	Local bool
	// Policy holds the rules for authenticated senders.
	Policy SubmissionPolicy

	initOnce sync.Once
	lim      Limits
	lns      netutil.Listeners
	sessions netutil.Sessions[*session]
	nextID   atomic.Uint64
	idPrefix string
	rates    *rateLimiter
	bufs     sync.Pool // *sessionBufs of ended sessions
}

// SubmissionPolicy is what an authenticated account may do.
type SubmissionPolicy struct {
	// DomainSenders lets an account (key "alice@example.org") send as any address of the
	// listed domains, for the administrator of a domain.
	DomainSenders map[string][]string
	// MaxMessagesPerHour and MaxRecipientsPerHour limit each account; 0 means no limit.
	// Past them MAIL or RCPT gets 450 4.7.1.
	MaxMessagesPerHour, MaxRecipientsPerHour int
	// ReceivedAuthUser names the client (EHLO, IP) and the authenticated user in the
	// Received header. Off by default: a submitter's IP address is private.
	ReceivedAuthUser bool
}

func (s *Server) init() {
	s.initOnce.Do(func() {
		s.lim = s.Limits.withDefaults()
		s.sessions.Limit = netutil.ConnLimit{Max: s.lim.MaxConnections, MaxPerIP: s.lim.MaxConnectionsPerIP}
		if s.Logger == nil {
			s.Logger = slog.New(slog.DiscardHandler)
		}
		if s.Now == nil {
			s.Now = time.Now
		}
		if s.Hostname == "" {
			s.Hostname = "localhost"
		}
		s.idPrefix = randomID(4)
		if s.Local {
			s.Submission = true
		}
		s.rates = newRateLimiter(s.Policy.MaxMessagesPerHour, s.Policy.MaxRecipientsPerHour, s.Now)
	})
}

// Serve accepts connections on l until Shutdown or Close. It always returns a non-nil error;
// after Shutdown or Close that is ErrServerClosed.
func (s *Server) Serve(l net.Listener) error {
	s.init()
	return s.lns.Serve(l, ErrServerClosed, func(err error, d time.Duration) {
		s.Logger.Warn("accept failed, retrying", "err", err, "backoff", d)
	}, s.handle)
}

func (s *Server) handle(c net.Conn) {
	closed, reason := s.sessions.Go(c, func(ip string) *session { return newSession(s, c, ip) }, (*session).run)
	switch {
	case closed:
		netutil.Refuse(c, "421 4.3.2 "+s.Hostname+" shutting down\r\n")
	case reason != "":
		s.Logger.Warn("connection refused", "remote", c.RemoteAddr().String(), "reason", reason)
		netutil.Refuse(c, "421 4.7.0 "+s.Hostname+" "+reason+", try again later\r\n")
	}
}

// Shutdown stops accepting, ends idle sessions with 421 4.3.2, lets sessions that are in the
// middle of a command (a DATA transfer, a commit) finish it, and closes them then. When ctx
// ends first, the remaining connections are closed: their uncommitted messages are dropped and
// never acknowledged, so nothing acknowledged is lost.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.lns.Close()
	s.sessions.Close((*session).stop)
	if err := s.sessions.Wait(ctx); err != nil {
		s.Close()
		s.sessions.Wait(context.Background())
		return err
	}
	return nil
}

// Close closes the listeners and every connection at once.
func (s *Server) Close() error {
	s.init()
	s.lns.Close()
	// The raw connection, set once: closing it ends a TLS session over it too, and it does
	// not race with STARTTLS swapping the session's reader and writer.
	s.sessions.Close(func(sess *session) { sess.dc.Close() })
	return nil
}
