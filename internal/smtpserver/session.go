package smtpserver

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base32"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"yubin/internal/directory"
	"yubin/internal/smtp"
)

// Command lines are limited to 512 octets with CRLF (RFC 5321 4.5.3.1.4); AUTH lines to 12288
// (RFC 4954 4), so that is what the reader allows before the per-command check.
const (
	maxCommandLine = 512 - 2
	maxAuthLine    = 12288 - 2
)

var errStopped = errors.New("session stopped by shutdown")

// deadlineConn refreshes the read and write deadlines on every call, so a timeout means
// "this long without progress", and lets Shutdown interrupt a read that waits for a command.
type deadlineConn struct {
	net.Conn
	mu      sync.Mutex
	timeout time.Duration
	killed  bool
	// The deadlines last set. Setting one costs a runtime timer update (and may wake the
	// network poller) and a session makes about seven reads and writes per message, so a
	// deadline is set a little past now+timeout and moved only when it falls short of that.
	rdl, wdl time.Time
}

// maxDeadlineSlack bounds how much later than timeout after the last read or write a
// session may time out (timeout/32 when that is less): never earlier, as RFC 5321 4.5.3.2.7
// asks at least 5 minutes.
const maxDeadlineSlack = 500 * time.Millisecond

// refresh sets *dl to between now+timeout and now+timeout+slack; c.mu is held.
func (c *deadlineConn) refresh(dl *time.Time, set func(time.Time) error) {
	slack := min(c.timeout/32, maxDeadlineSlack)
	want := time.Now().Add(c.timeout)
	if !dl.Before(want) && !dl.After(want.Add(2*slack)) {
		return
	}
	if set(want.Add(slack)) == nil {
		*dl = want.Add(slack)
	}
}

func (c *deadlineConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if c.killed {
		c.mu.Unlock()
		return 0, errStopped
	}
	c.refresh(&c.rdl, c.Conn.SetReadDeadline)
	c.mu.Unlock()
	return c.Conn.Read(p)
}

func (c *deadlineConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.refresh(&c.wdl, c.Conn.SetWriteDeadline)
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *deadlineConn) setTimeout(d time.Duration) {
	c.mu.Lock()
	c.timeout = d
	c.mu.Unlock()
}

// kill makes the current and every later Read fail at once.
func (c *deadlineConn) kill() {
	c.mu.Lock()
	c.killed = true
	c.Conn.SetReadDeadline(time.Unix(1, 0))
	c.mu.Unlock()
}

type session struct {
	srv    *Server
	dc     *deadlineConn // the raw connection with deadlines; TLS runs over it
	br     *bufio.Reader
	bw     *bufio.Writer
	ip     string
	cid    string
	bufs   *sessionBufs // br and bw as made for the raw connection, back to the pool at the end
	logger *slog.Logger // see log
	ctx    context.Context
	cancel context.CancelFunc

	helo    string
	esmtp   bool
	tls     *tls.ConnectionState
	nerrors int
	tx      *transaction
	quit    bool
	account *directory.Account // the authenticated account, nil before AUTH

	mu      sync.Mutex // guards idle, stopped
	idle    bool       // waiting for a command: Shutdown may interrupt
	stopped bool       // Shutdown asked this session to end
}

func newSession(s *Server, c net.Conn, ip string) *session {
	dc := &deadlineConn{Conn: c, timeout: s.lim.CommandTimeout}
	b, _ := s.bufs.Get().(*sessionBufs)
	if b == nil {
		b = &sessionBufs{r: bufio.NewReaderSize(nil, 8192), w: bufio.NewWriterSize(nil, 4096)}
	}
	b.r.Reset(dc)
	b.w.Reset(dc)
	return &session{
		srv:  s,
		dc:   dc,
		ip:   ip,
		cid:  s.idPrefix + sessionNumber(s.nextID.Add(1)),
		bufs: b,
		br:   b.r,
		bw:   b.w,
	}
}

// sessionNumber formats n with at least six digits, as connection ids have them.
func sessionNumber(n uint64) string {
	d := strconv.FormatUint(n, 10)
	if len(d) < 6 {
		d = "000000"[len(d):] + d
	}
	return d
}

// sessionBufs are a session's buffered reader and writer on its raw connection. They are
// reused by later sessions: with a connection per message, 12 KiB allocated and cleared per
// message otherwise.
type sessionBufs struct {
	r *bufio.Reader
	w *bufio.Writer
}

// release gives the session's buffers back to the server's pool; the session must not read
// or write any more.
func (sess *session) release() {
	b := sess.bufs
	if b == nil {
		return
	}
	sess.bufs, sess.br, sess.bw = nil, nil, nil
	b.r.Reset(nil)
	b.w.Reset(nil)
	sess.srv.bufs.Put(b)
}

// log returns the session's logger, with its connection id and remote address. It is made
// at the first use, and debug and logs check the level before: most sessions log nothing
// at the usual levels, and With formats its attributes at once.
func (sess *session) log() *slog.Logger {
	if sess.logger == nil {
		sess.logger = sess.srv.Logger.With("cid", sess.cid, "remote", sess.dc.RemoteAddr().String())
	}
	return sess.logger
}

// logs reports whether the session's logger writes records of level.
func (sess *session) logs(level slog.Level) bool {
	return sess.srv.Logger.Enabled(context.Background(), level)
}

// debug logs at the debug level, when that level is on.
func (sess *session) debug(msg string, args ...any) {
	if sess.logs(slog.LevelDebug) {
		sess.log().Debug(msg, args...)
	}
}

// stop is called by Shutdown: an idle session is interrupted now, a busy one ends after its
// current command.
func (sess *session) stop() {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	sess.stopped = true
	if sess.idle {
		sess.dc.kill()
	}
}

func (sess *session) setIdle(idle bool) (stopped bool) {
	sess.mu.Lock()
	defer sess.mu.Unlock()
	sess.idle = idle
	return sess.stopped
}

func (sess *session) run() {
	sess.ctx, sess.cancel = context.WithCancel(context.Background())
	defer sess.cancel()
	defer sess.release()
	defer sess.dc.Close()
	defer sess.resetTx()
	sess.debug("connection opened")
	if sess.srv.ImplicitTLS && !sess.handshake() {
		return
	}
	sess.reply(smtp.NewReply(220, "", sess.srv.Hostname+" ESMTP yubin"))
	for !sess.quit {
		if sess.br.Buffered() == 0 {
			if sess.bw.Flush() != nil {
				return
			}
		}
		if sess.setIdle(true) {
			sess.shutdownReply()
			return
		}
		line, err := smtp.ReadLine(sess.br, maxAuthLine)
		stopped := sess.setIdle(false)
		if err != nil {
			if errors.Is(err, smtp.ErrLineTooLong) {
				sess.fail(smtp.NewReply(500, "5.5.2", "line too long"))
				continue
			}
			sess.readError(err, stopped)
			return
		}
		sess.command(line)
	}
	sess.bw.Flush()
	sess.debug("connection closed")
}

// readError ends the session after a failed read, telling the client why when it can.
func (sess *session) readError(err error, stopped bool) {
	var ne net.Error
	switch {
	case stopped || errors.Is(err, errStopped):
		sess.shutdownReply()
	case errors.As(err, &ne) && ne.Timeout():
		sess.log().Info("timeout, closing connection")
		sess.reply(smtp.NewReply(421, "4.4.2", sess.srv.Hostname+" timeout exceeded, closing connection"))
		sess.bw.Flush()
	case errors.Is(err, io.EOF):
		sess.debug("connection closed by client")
	default:
		sess.debug("read failed", "err", err)
	}
}

func (sess *session) shutdownReply() {
	sess.reply(smtp.NewReply(421, "4.3.2", sess.srv.Hostname+" service shutting down, try again later"))
	sess.bw.Flush()
}

// reply queues a reply; replies are flushed when the client's input is drained (RFC 2920).
func (sess *session) reply(r *smtp.Reply) {
	r.WriteTo(sess.bw)
}

// fail sends an error reply and counts it; too many errors end the session (an attacker
// probing addresses, or a client stuck in a loop).
func (sess *session) fail(r *smtp.Reply) {
	sess.reply(r)
	if r.Code < 500 {
		return
	}
	sess.nerrors++
	if sess.nerrors >= sess.srv.lim.MaxErrors {
		sess.log().Warn("too many errors, closing connection", "errors", sess.nerrors)
		sess.reply(smtp.NewReply(421, "4.7.0", sess.srv.Hostname+" too many errors, closing connection"))
		sess.quit = true
	}
}

// internalError logs err under a reference and returns the reference; the reply names only
// the reference, never internals (STYLE.md 5).
func (sess *session) internalError(what string, err error) (ref string) {
	ref = randomID(6)
	sess.log().Error(what, "err", err, "ref", ref)
	return ref
}

func (sess *session) command(line []byte) {
	cmd, err := smtp.ParseCommand(line)
	if err != nil {
		sess.fail(asReply(err, 500, "5.5.2"))
		return
	}
	if len(line) > maxCommandLine && cmd.Verb != "AUTH" {
		sess.fail(smtp.NewReply(500, "5.5.2", "line too long"))
		return
	}
	switch cmd.Verb {
	case "EHLO":
		sess.cmdHello(cmd.Arg, true)
	case "HELO":
		sess.cmdHello(cmd.Arg, false)
	case "MAIL":
		sess.cmdMail(cmd.Arg)
	case "RCPT":
		sess.cmdRcpt(cmd.Arg)
	case "DATA":
		sess.cmdData(cmd.Arg)
	case "BDAT":
		sess.cmdBdat(cmd.Arg)
	case "RSET":
		if cmd.Arg != "" {
			sess.fail(smtp.NewReply(501, "5.5.4", "RSET takes no argument"))
			return
		}
		sess.resetTx()
		sess.reply(smtp.NewReply(250, "2.0.0", "OK"))
	case "NOOP":
		sess.reply(smtp.NewReply(250, "2.0.0", "OK"))
	case "QUIT":
		sess.reply(smtp.NewReply(221, "2.0.0", sess.srv.Hostname+" closing connection"))
		sess.quit = true
	case "VRFY":
		if cmd.Arg == "" {
			sess.fail(smtp.NewReply(501, "5.5.4", "VRFY needs an address"))
			return
		}
		// RFC 5321 3.5.3: 252 neither confirms nor denies, so addresses cannot be harvested.
		sess.reply(smtp.NewReply(252, "2.5.0", "cannot VRFY user, but will accept message and attempt delivery"))
	case "EXPN":
		sess.fail(smtp.NewReply(502, "5.5.1", "EXPN not available"))
	case "HELP":
		sess.reply(smtp.NewReply(214, "2.0.0", "commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY STARTTLS HELP"))
	case "STARTTLS":
		sess.cmdStartTLS(cmd.Arg)
	case "AUTH":
		sess.cmdAuth(cmd.Arg)
	case "GET", "POST", "HEAD", "PUT", "CONNECT":
		// A web client or proxy abuse (a browser form posting to port 25): stop at once.
		sess.log().Info("HTTP request on SMTP port, closing", "verb", cmd.Verb)
		sess.reply(smtp.NewReply(221, "2.7.0", "this is an SMTP server, closing connection"))
		sess.quit = true
	default:
		sess.fail(smtp.NewReply(500, "5.5.1", "command not recognized"))
	}
}

// asReply returns err as a protocol reply, or a generic one with the code given.
func asReply(err error, code int, enh string) *smtp.Reply {
	var r *smtp.Reply
	if errors.As(err, &r) {
		return r
	}
	return smtp.NewReply(code, enh, "syntax error")
}

func (sess *session) cmdStartTLS(arg string) {
	switch {
	case sess.srv.TLSConfig == nil:
		sess.fail(smtp.NewReply(502, "5.5.1", "STARTTLS not available"))
		return
	case sess.tls != nil:
		sess.fail(smtp.NewReply(503, "5.5.1", "TLS already active"))
		return
	case arg != "":
		sess.fail(smtp.NewReply(501, "5.5.4", "STARTTLS takes no argument"))
		return
	}
	sess.reply(smtp.NewReply(220, "2.0.0", "ready to start TLS"))
	if sess.bw.Flush() != nil {
		sess.quit = true
		return
	}
	// CVE-2011-0411: anything the client pipelined after STARTTLS was sent in clear text and
	// must not be executed inside the TLS session. The old reader and its buffer are dropped.
	if n := sess.br.Buffered(); n > 0 {
		sess.log().Warn("discarding plaintext pipelined after STARTTLS", "bytes", n)
	}
	if !sess.handshake() {
		sess.quit = true
		return
	}
	// RFC 3207 4.2: the session starts over; the client must say EHLO again.
	sess.helo, sess.esmtp = "", false
	sess.resetTx()
}

// handshake starts TLS on the raw connection (STARTTLS, or implicit TLS on connect).
func (sess *session) handshake() bool {
	tc := tls.Server(sess.dc, sess.srv.TLSConfig)
	ctx, cancel := context.WithTimeout(sess.ctx, sess.srv.lim.CommandTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		sess.log().Info("TLS handshake failed", "err", err)
		return false
	}
	st := tc.ConnectionState()
	sess.tls = &st
	sess.br = bufio.NewReaderSize(tc, 8192)
	sess.bw = bufio.NewWriterSize(tc, 4096)
	sess.debug("TLS started", "version", tls.VersionName(st.Version), "cipher", tls.CipherSuiteName(st.CipherSuite))
	return true
}

func randomID(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
}
