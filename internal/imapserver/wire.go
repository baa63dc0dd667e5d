package imapserver

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// wireConn is the connection go-imap's server reads from and writes to. It sees every byte,
// in clear text (it sits above TLS, which it does itself for STARTTLS), and guards the
// library's command reader:
//
//   - Literals. go-imap answers a literal it refuses (too big for the command, or where the
//     grammar has none) with a tagged NO or BAD and then reads the literal's bytes as commands.
//     For a synchronizing literal that is harmless (the client waits for "+" and sends
//     nothing), but a non-synchronizing literal ({N+}, RFC 7888) is sent regardless, so its
//     bytes would be executed as commands: request smuggling. wireConn watches the library's
//     answer to every line that announces a literal: a "+" (synchronizing) or silence
//     (non-synchronizing) means the library reads the literal, and wireConn passes that many
//     bytes through, streamed, without looking at them; any other answer to a {N+} literal
//     closes the connection with BYE.
//   - Line length. A command line (outside literals) is held until complete, up to
//     maxLine bytes; a longer one is answered "BAD command line too long" and skipped to its
//     end without being kept (or, in the middle of a command, ends the connection).
//     go-imap's own limit (50 KiB per command) would answer with an internal error and then
//     read the rest of the line as new commands.
//   - STARTTLS (RFC 9051 6.2.1). go-imap decides whether LOGIN is allowed by checking for a
//     *tls.Conn, which a wrapper is not, so the library runs with InsecureAuth and TLS is
//     handled here: wireConn answers STARTTLS itself, does the handshake on the raw
//     connection (bytes the client sent after the command are fed to the handshake, never
//     executed), and until TLS is up adds STARTTLS and LOGINDISABLED to the capability lists
//     the library writes (the session offers no SASL mechanism and refuses LOGIN meanwhile).
type wireConn struct {
	raw net.Conn

	mu           sync.Mutex // guards conn, tlsActive, authed and the literal flags; serializes writes
	conn         net.Conn   // raw, or the *tls.Conn over it
	tlsActive    bool
	authed       bool
	tlsConfig    *tls.Config // for STARTTLS; nil: not offered
	insecureAuth bool
	closed       bool
	pendingOut   []byte // start of an unfinished output line, while capabilities are rewritten

	// While batching (a FETCH or STORE that answers many messages), output is collected and
	// written in batchMax pieces: go-imap flushes after every response line, which would cost
	// a write system call per message.
	batching bool
	batch    []byte
	batchErr error

	// Set by Write while a literal's fate is pending.
	litPending bool
	litCont    bool // a "+" continuation was written
	litOther   bool // something else was written

	// Reader state, used only by the library's reading goroutine.
	br        *bufio.Reader
	readErr   error
	out       []byte // bytes ready for the library
	litLeft   int64  // literal bytes still to pass through
	litIndex  int    // literals seen in the current command
	litWait   bool   // the last line announced a literal whose fate is pending
	litN      int64  // its size
	litNoSync bool
	inCommand bool   // the current command continues after a literal
	cmdBytes  int    // non-literal bytes of the current command
	cmdName   string // upper case, with "UID " for UID commands
	idling    bool

	maxLine     int
	maxAppend   int64
	idleTimeout time.Duration
}

// bufferedLiteralMax is go-imap's limit for a literal it reads into memory.
const bufferedLiteralMax = 4096

// appendMailboxLiteral reports whether the first line of an APPEND announces its mailbox
// name as a literal ("tag APPEND {5}"), rather than the message.
func appendMailboxLiteral(line []byte) bool {
	return len(strings.Fields(string(line))) == 3
}

func tagOf(line []byte) string {
	if f := strings.Fields(string(line)); len(f) > 0 && validTag(f[0]) {
		return f[0]
	}
	return "*"
}

func newWireConn(c net.Conn, tlsConfig *tls.Config, insecureAuth bool, maxLine int, maxAppend int64, idleTimeout time.Duration) *wireConn {
	w := &wireConn{raw: c, conn: c, tlsConfig: tlsConfig, insecureAuth: insecureAuth, maxLine: maxLine, maxAppend: maxAppend, idleTimeout: idleTimeout}
	if _, ok := c.(*tls.Conn); ok {
		w.tlsActive = true
	}
	w.br = bufio.NewReaderSize(c, 16<<10)
	return w
}

// isTLS reports whether the connection is encrypted.
func (w *wireConn) isTLS() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.tlsActive
}

// tlsState returns the TLS connection state, if any.
func (w *wireConn) tlsState() (tls.ConnectionState, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if tc, ok := w.conn.(*tls.Conn); ok {
		return tc.ConnectionState(), true
	}
	return tls.ConnectionState{}, false
}

func (w *wireConn) setAuthenticated(b bool) {
	w.mu.Lock()
	w.authed = b
	w.mu.Unlock()
}

// command returns the name of the command being executed, upper case ("UID FETCH").
func (w *wireConn) command() string { return w.cmdName }

func (w *wireConn) Read(p []byte) (n int, err error) {
	// An error is final: go-imap reads on after a failed read (its EOF check swallows the
	// error), and must never get the bytes that follow a refused literal.
	if w.readErr != nil {
		return 0, w.readErr
	}
	defer func() {
		if err != nil {
			w.readErr = err
		}
	}()
	for {
		if len(w.out) > 0 {
			n := copy(p, w.out)
			w.out = w.out[n:]
			return n, nil
		}
		if w.litWait {
			if err := w.decideLiteral(); err != nil {
				return 0, err
			}
		}
		if w.litLeft > 0 {
			if int64(len(p)) > w.litLeft {
				p = p[:w.litLeft]
			}
			n, err := w.br.Read(p)
			w.litLeft -= int64(n)
			return n, err
		}
		if err := w.readLine(); err != nil {
			return 0, err
		}
	}
}

// decideLiteral learns from what the library wrote whether it reads the literal announced by
// the last line.
func (w *wireConn) decideLiteral() error {
	w.mu.Lock()
	cont, other := w.litCont, w.litOther
	w.litPending, w.litCont, w.litOther = false, false, false
	w.mu.Unlock()
	n, nonSync := w.litN, w.litNoSync
	w.litWait, w.litN, w.litNoSync = false, 0, false
	switch {
	case nonSync && !other:
		w.litLeft = n
	case !nonSync && cont:
		w.litLeft = n
	case nonSync:
		// Refused, yet the client sends the bytes: they must never run as commands.
		w.bye("[TOOBIG] Refused non-synchronizing literal")
		return errLiteralRefused
	default:
		// A refused synchronizing literal ends the command; the client sends no data.
		w.inCommand = false
	}
	return nil
}

var (
	errLiteralRefused = errors.New("imap: refused non-synchronizing literal")
	errLineTooLong    = errors.New("imap: command line too long")
)

// readLine reads one line (bounded by maxLine) and queues it for the library, handling
// STARTTLS and literal announcements.
func (w *wireConn) readLine() error {
	var line []byte
	for {
		chunk, err := w.br.ReadSlice('\n')
		if len(line)+len(chunk) > w.maxLine {
			return w.tooLong(line)
		}
		line = append(line, chunk...)
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			if len(line) > 0 {
				w.out = line // let the library see what came before the end
				return nil
			}
			return err
		}
	}
	if w.idling {
		if strings.EqualFold(string(bytes.TrimRight(line, "\r\n")), "DONE") {
			w.idling = false
		}
		w.out = line
		return nil
	}
	continuation := w.inCommand
	if !continuation {
		w.cmdBytes = 0
		w.litIndex = 0
		w.cmdName = commandName(line)
		f := strings.Fields(string(line))
		w.mu.Lock()
		authed := w.authed
		w.mu.Unlock()
		if authed && (len(f) == 0 || !validTag(f[0])) {
			// go-imap ends the connection on a line without a tag; once logged in, answer
			// BAD and go on (before login the library's closing is the better defence).
			_, err := w.Write([]byte("* BAD [CLIENTBUG] Command line without a tag\r\n"))
			return err
		}
		if len(f) > 0 && validTag(f[0]) && (len(f) == 1 || strings.EqualFold(f[1], "UID") && len(f) == 2) {
			// So does a tag without a command, or UID without one.
			_, err := w.Write([]byte(f[0] + " BAD [CLIENTBUG] Missing command name\r\n"))
			return err
		}
		if w.cmdName == "STARTTLS" && w.canStartTLS() {
			return w.startTLS(line)
		}
		if w.cmdName == "IDLE" {
			w.idling = true
		}
	}
	w.cmdBytes += len(line)
	if w.cmdBytes > w.maxLine {
		return w.tooLong(nil)
	}
	w.inCommand = false
	if n, nonSync, ok := literalAt(line); ok {
		// go-imap reads a literal into memory, up to 4096 bytes, except the message of
		// APPEND (up to the APPENDLIMIT). Past its limit it either answers NO [TOOBIG] and
		// then reads the literal's bytes as commands (APPEND), or drops its own refusal and
		// reads the following bytes as the rest of the command (elsewhere).
		limit := int64(bufferedLiteralMax)
		if w.cmdName == "APPEND" && !(w.litIndex == 0 && appendMailboxLiteral(line)) {
			limit = w.maxAppend
		}
		w.litIndex++
		if n > limit {
			switch {
			case nonSync:
				w.bye("[TOOBIG] Literal too big")
				return errLiteralRefused
			case limit != bufferedLiteralMax:
				w.out = line // the library answers NO [TOOBIG]; the client sends nothing
				return nil
			case continuation:
				w.bye("[TOOBIG] Literal too big")
				return errLiteralRefused
			default:
				_, err := w.Write([]byte(tagOf(line) + " NO [TOOBIG] Literal too big\r\n"))
				return err
			}
		}
		w.inCommand = true
		w.litWait, w.litN, w.litNoSync = true, n, nonSync
		w.mu.Lock()
		w.litPending, w.litCont, w.litOther = true, false, false
		w.mu.Unlock()
	}
	w.out = line
	return nil
}

// tooLong answers a line longer than maxLine. At the start of a command the line is skipped
// to its end and answered with a tagged BAD, and the session goes on; in the middle of a
// command (after a literal) or in IDLE the library has half a command, so the connection
// ends.
func (w *wireConn) tooLong(start []byte) error {
	if w.inCommand || w.idling || start == nil {
		w.bye("[TOOBIG] Command line too long")
		return errLineTooLong
	}
	tag := tagOf(start)
	// Skip the rest of the line without keeping it.
	for {
		_, err := w.br.ReadSlice('\n')
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return err
		}
	}
	// The library is waiting for a command and has nothing unwritten: answering here does
	// not interleave with its output.
	_, err := w.Write([]byte(tag + " BAD [TOOBIG] Command line too long\r\n"))
	return err
}

func validTag(t string) bool {
	if t == "" || len(t) > 64 {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`(){%*"\+`, c) >= 0 {
			return false
		}
	}
	return true
}

// commandName returns the upper-case command of a command line ("UID FETCH" for UID
// commands), or "".
func commandName(line []byte) string {
	f := strings.Fields(string(line))
	if len(f) < 2 {
		return ""
	}
	name := strings.ToUpper(f[1])
	if name == "UID" && len(f) > 2 {
		name += " " + strings.ToUpper(f[2])
	}
	return name
}

// literalAt reports whether a line ends with a literal announcement, "{N}" or "{N+}" (also
// "~{N}", RFC 3516), and returns its size.
func literalAt(line []byte) (n int64, nonSync, ok bool) {
	l := bytes.TrimRight(line, "\r\n")
	if len(l) < 3 || l[len(l)-1] != '}' {
		return 0, false, false
	}
	i := bytes.LastIndexByte(l, '{')
	if i < 0 {
		return 0, false, false
	}
	num := l[i+1 : len(l)-1]
	if len(num) > 0 && num[len(num)-1] == '+' {
		nonSync = true
		num = num[:len(num)-1]
	}
	if len(num) == 0 || len(num) > 19 {
		return 0, false, false
	}
	v, err := strconv.ParseInt(string(num), 10, 64)
	if err != nil || v < 0 {
		return 0, false, false
	}
	return v, nonSync, true
}

func (w *wireConn) canStartTLS() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.tlsConfig != nil && !w.tlsActive && !w.authed
}

// startTLS answers a STARTTLS command and negotiates TLS (RFC 9051 6.2.1). Bytes that
// followed the command are handed to the handshake: never run as commands in the clear.
func (w *wireConn) startTLS(line []byte) error {
	tag := strings.Fields(string(line))[0]
	if len(strings.Fields(string(line))) != 2 {
		w.out = line // arguments: let the library answer BAD
		return nil
	}
	if _, err := w.Write([]byte(tag + " OK Begin TLS negotiation now\r\n")); err != nil {
		return err
	}
	var pre []byte
	if n := w.br.Buffered(); n > 0 {
		pre, _ = w.br.Peek(n)
		pre = append([]byte(nil), pre...)
	}
	under := net.Conn(w.raw)
	if len(pre) > 0 {
		under = &prefixConn{Conn: w.raw, r: io.MultiReader(bytes.NewReader(pre), w.raw)}
	}
	tc := tls.Server(under, w.tlsConfig)
	w.raw.SetDeadline(time.Now().Add(30 * time.Second))
	if err := tc.Handshake(); err != nil {
		w.raw.Close()
		return fmt.Errorf("STARTTLS handshake: %w", err)
	}
	w.raw.SetDeadline(time.Time{})
	w.mu.Lock()
	w.conn = tc
	w.tlsActive = true
	w.pendingOut = nil
	w.mu.Unlock()
	w.br = bufio.NewReaderSize(tc, 16<<10)
	return nil
}

type prefixConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Write sends the library's output, noting what it says about a pending literal and adding
// the STARTTLS and LOGINDISABLED capabilities before TLS.
func (w *wireConn) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.litPending && len(p) > 0 {
		if p[0] == '+' && !w.litOther {
			w.litCont = true
		} else {
			w.litOther = true
		}
	}
	if w.tlsActive || w.authed || (w.tlsConfig == nil && w.insecureAuth) {
		if w.batching {
			return w.batchWrite(p)
		}
		return w.conn.Write(p)
	}
	// Before TLS: rewrite capability lists, a whole line at a time.
	buf := append(w.pendingOut, p...)
	var out []byte
	for {
		i := bytes.Index(buf, []byte("\r\n"))
		if i < 0 {
			break
		}
		out = append(out, w.rewriteCaps(buf[:i])...)
		out = append(out, "\r\n"...)
		buf = buf[i+2:]
	}
	w.pendingOut = append([]byte(nil), buf...)
	if len(out) > 0 {
		if _, err := w.conn.Write(out); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// batchMax is how much output a batch collects before writing it.
const batchMax = 64 << 10

// batchWrite adds p to the batch, writing the batch out when it is full. w.mu is held.
func (w *wireConn) batchWrite(p []byte) (int, error) {
	if w.batchErr != nil {
		return 0, w.batchErr
	}
	w.batch = append(w.batch, p...)
	if len(w.batch) >= batchMax {
		if _, err := w.conn.Write(w.batch); err != nil {
			w.batchErr = err
			return 0, err
		}
		w.batch = w.batch[:0]
	}
	return len(p), nil
}

// startBatch collects output until endBatch.
func (w *wireConn) startBatch() {
	w.mu.Lock()
	w.batching = true
	w.mu.Unlock()
}

// endBatch writes what the batch holds and ends it. The library has cleared its write deadline
// by then, so the last write gets one of its own, like a response's.
func (w *wireConn) endBatch() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.batching = false
	err := w.batchErr
	if err == nil && len(w.batch) > 0 {
		w.raw.SetWriteDeadline(time.Now().Add(batchWriteTimeout))
		_, err = w.conn.Write(w.batch)
		w.raw.SetWriteDeadline(time.Time{})
	}
	w.batchErr = nil
	if cap(w.batch) > batchMax*2 {
		w.batch = nil
	} else {
		w.batch = w.batch[:0]
	}
	return err
}

// batchWriteTimeout bounds the last write of a batch (go-imap gives a response 30 seconds).
const batchWriteTimeout = 30 * time.Second

// rewriteCaps adds the pre-TLS capabilities to a greeting or CAPABILITY line.
func (w *wireConn) rewriteCaps(line []byte) []byte {
	var extra string
	if w.tlsConfig != nil {
		extra += " STARTTLS"
	}
	if !w.insecureAuth {
		extra += " LOGINDISABLED"
	}
	s := string(line)
	switch {
	case strings.HasPrefix(s, "* CAPABILITY "):
		return []byte(s + extra)
	case strings.Contains(s, "[CAPABILITY "):
		i := strings.Index(s, "[CAPABILITY ")
		j := strings.IndexByte(s[i:], ']')
		if j > 0 {
			return []byte(s[:i+j] + extra + s[i+j:])
		}
	}
	return line
}

// bye writes an untagged BYE and closes the connection.
func (w *wireConn) bye(text string) {
	w.mu.Lock()
	conn := w.conn
	w.mu.Unlock()
	conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(conn, "* BYE "+text+"\r\n")
	w.Close()
}

func (w *wireConn) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	return w.conn.Close()
}

func (w *wireConn) LocalAddr() net.Addr  { return w.raw.LocalAddr() }
func (w *wireConn) RemoteAddr() net.Addr { return w.raw.RemoteAddr() }

func (w *wireConn) SetDeadline(t time.Time) error {
	w.SetReadDeadline(t)
	return w.SetWriteDeadline(t)
}

// SetReadDeadline applies the library's read deadlines, except that its fixed 35 minutes
// between commands of a logged-in session (and in IDLE) become the configured idle timeout
// (RFC 9051 5.4: at least 30 minutes).
func (w *wireConn) SetReadDeadline(t time.Time) error {
	if !t.IsZero() && time.Until(t) > 10*time.Minute && w.idleTimeout > 0 {
		t = time.Now().Add(w.idleTimeout)
	}
	return w.raw.SetReadDeadline(t)
}

func (w *wireConn) SetWriteDeadline(t time.Time) error { return w.raw.SetWriteDeadline(t) }
