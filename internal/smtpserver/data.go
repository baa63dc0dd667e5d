package smtpserver

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"

	"yubin/internal/intake"
	"yubin/internal/smtp"
	"yubin/internal/store"
)

// copyBufs recycles the 32 KiB buffers that move message data from the connection to the blob.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// bdatState is a BDAT transfer in progress (RFC 3030).
type bdatState struct {
	draft *intake.Draft
	scan  *contentScanner
	err   *smtp.Reply // the transfer failed: later chunks are read and dropped, LAST gets err
}

func (sess *session) cmdData(arg string) {
	tx := sess.tx
	switch {
	case tx == nil:
		sess.fail(smtp.NewReply(503, "5.5.1", "need MAIL before DATA"))
		return
	case tx.usedDat:
		sess.fail(smtp.NewReply(503, "5.5.1", "DATA not allowed after BDAT"))
		return
	case len(tx.rcpts) == 0:
		sess.fail(smtp.NewReply(554, "5.5.1", "no valid recipients"))
		return
	case arg != "":
		sess.fail(smtp.NewReply(501, "5.5.4", "DATA takes no argument"))
		return
	}
	draft, err := sess.begin(tx)
	if err != nil {
		sess.resetTx()
		sess.reply(sess.storageReply("begin message", err))
		return
	}
	sess.reply(&smtp.Reply{Code: 354, Lines: []string{"end data with <CR><LF>.<CR><LF>"}})
	if sess.bw.Flush() != nil {
		draft.Abort()
		sess.quit = true
		return
	}
	sess.dc.setTimeout(sess.srv.lim.DataTimeout)
	defer sess.dc.setTimeout(sess.srv.lim.CommandTimeout)
	dr := smtp.NewDataReader(sess.br)
	scan := sess.newScanner(draft, false)
	bp := copyBufs.Get().(*[]byte)
	_, err = io.CopyBuffer(scan, dr, *bp)
	copyBufs.Put(bp)
	if errors.Is(err, smtp.ErrBareLineEnding) {
		// SMTP smuggling (CVE-2023-51764): read up to the real end of data, then refuse.
		scan.bareEOL = true
		err = dr.Discard()
	}
	if err != nil {
		draft.Abort()
		sess.resetTx()
		sess.dataReadError(err)
		return
	}
	scan.finish()
	sess.finishMessage(draft, scan)
}

// newScanner makes the content scanner for a message going into draft.
func (sess *session) newScanner(draft *intake.Draft, bdat bool) *contentScanner {
	c := &contentScanner{w: draft, max: sess.srv.lim.MaxMessageSize, inHeader: true, checkEOL: bdat}
	if sess.srv.Submission {
		id, host, now := draft.ID(), sess.srv.Hostname, sess.srv.Now()
		c.addHeaders = func(hasMessageID, hasDate bool) string {
			var add string
			if !hasMessageID {
				add += "Message-ID: <" + id + "@" + host + ">\r\n"
			}
			if !hasDate {
				add += "Date: " + now.Format(dateFormat) + "\r\n"
			}
			return add
		}
	}
	return c
}

// dateFormat is RFC 5322 3.3.
const dateFormat = "Mon, 02 Jan 2006 15:04:05 -0700"

func (sess *session) cmdBdat(arg string) {
	f := strings.Fields(arg)
	var size int64 = -1
	if len(f) == 1 || len(f) == 2 {
		if n, err := strconv.ParseInt(f[0], 10, 64); err == nil && n >= 0 {
			size = n
		}
	}
	if size < 0 || len(f) == 2 && !strings.EqualFold(f[1], "LAST") {
		// Without a valid size the rest of the stream cannot be told from commands: close.
		sess.reply(smtp.NewReply(501, "5.5.4", "BDAT syntax: BDAT <size> [LAST]"))
		sess.reply(smtp.NewReply(421, "4.5.0", sess.srv.Hostname+" cannot resynchronize, closing connection"))
		sess.quit = true
		return
	}
	last := len(f) == 2
	sess.dc.setTimeout(sess.srv.lim.DataTimeout)
	defer sess.dc.setTimeout(sess.srv.lim.CommandTimeout)

	tx := sess.tx
	var refuse *smtp.Reply
	switch {
	case tx == nil:
		refuse = smtp.NewReply(503, "5.5.1", "need MAIL before BDAT")
	case len(tx.rcpts) == 0:
		refuse = smtp.NewReply(554, "5.5.1", "no valid recipients")
	}
	if refuse != nil {
		// RFC 3030 3: the chunk is read and dropped even when the command is refused.
		if _, err := io.CopyN(io.Discard, sess.br, size); err != nil {
			sess.dataReadError(err)
			return
		}
		sess.fail(refuse)
		return
	}
	if tx.bdat == nil {
		tx.usedDat = true
		tx.bdat = &bdatState{}
		draft, err := sess.begin(tx)
		if err != nil {
			tx.bdat.err = sess.storageReply("begin message", err)
		} else {
			tx.bdat.draft = draft
			tx.bdat.scan = sess.newScanner(draft, true)
		}
	}
	st := tx.bdat
	var dst io.Writer = io.Discard
	if st.err == nil {
		dst = st.scan
	}
	if _, err := io.CopyN(dst, sess.br, size); err != nil {
		sess.resetTx()
		sess.dataReadError(err)
		return
	}
	if st.err == nil && st.scan.over {
		st.err = smtp.Replyf(552, "5.3.4", "message size exceeds fixed maximum message size (%d)", sess.srv.lim.MaxMessageSize)
		st.draft.Abort()
	}
	if !last {
		if st.err != nil {
			sess.fail(st.err)
			return
		}
		sess.reply(smtp.Replyf(250, "2.0.0", "%d octets received", size))
		return
	}
	if st.err != nil {
		sess.resetTx()
		sess.fail(st.err)
		return
	}
	st.scan.finish()
	draft := st.draft
	tx.bdat = nil // the draft now belongs to finishMessage
	sess.finishMessage(draft, st.scan)
}

// begin starts the draft and writes the trace header.
func (sess *session) begin(tx *transaction) (*intake.Draft, error) {
	draft, err := sess.srv.Backend.Begin(sess.ctx, tx.from)
	if err != nil {
		return nil, err
	}
	if _, err := io.WriteString(draft, sess.receivedHeader(draft.ID(), tx)); err != nil {
		draft.Abort()
		return nil, err
	}
	return draft, nil
}

// finishMessage judges the received content and commits it; only a successful commit is
// answered with 250.
func (sess *session) finishMessage(draft *intake.Draft, scan *contentScanner) {
	tx := sess.tx
	defer sess.resetTx()
	var refuse *smtp.Reply
	switch {
	case scan.over:
		refuse = smtp.Replyf(552, "5.3.4", "message size exceeds fixed maximum message size (%d)", sess.srv.lim.MaxMessageSize)
	case scan.bareEOL:
		refuse = smtp.NewReply(550, "5.6.0", "message contains a bare CR or LF; lines must end with CRLF")
	case scan.received > sess.srv.lim.MaxReceivedHeaders:
		// RFC 5321 6.3: a message with very many Received headers is looping.
		refuse = smtp.Replyf(554, "5.4.6", "too many Received headers (%d): mail loop", scan.received)
	}
	if refuse != nil {
		draft.Abort()
		sess.log().Info("message refused", "id", draft.ID(), "reply", refuse.Error())
		sess.fail(refuse)
		return
	}
	if scan.werr != nil {
		draft.Abort()
		sess.reply(sess.storageReply("write message", scan.werr))
		return
	}
	if sess.srv.Submission && tx.from != "" {
		// DKIM signature for the sender's domain, when it has keys; before the commit.
		if err := draft.SignDKIM(sess.ctx, tx.from[strings.LastIndexByte(tx.from, '@')+1:]); err != nil {
			draft.Abort()
			sess.reply(sess.storageReply("DKIM signing", err))
			return
		}
	}
	env := intake.Envelope{From: tx.from, Recipients: tx.rcpts, Ret: tx.ret, EnvID: tx.envID,
		SMTPUTF8: tx.utf8, EightBit: tx.body == "8BITMIME"}
	if err := draft.Commit(sess.ctx, env); err != nil {
		sess.reply(sess.storageReply("commit message", err))
		return
	}
	if sess.account != nil {
		sess.srv.rates.record(sess.account.Address, len(tx.rcpts))
	}
	if sess.logs(slog.LevelInfo) {
		rcpts := make([]string, len(tx.rcpts))
		for i, r := range tx.rcpts {
			rcpts[i] = r.Address
		}
		sess.log().Info("message accepted", "id", draft.ID(), "from", tx.from, "rcpts", rcpts, "size", scan.n, "tls", sess.tls != nil)
	}
	sess.reply(smtp.Replyf(250, "2.0.0", "OK queued as %s", draft.ID()))
}

// storageReply maps a storage failure: full disk is 452 4.3.1, anything else 451 4.3.0.
func (sess *session) storageReply(what string, err error) *smtp.Reply {
	if errors.Is(err, store.ErrStorageFull) {
		sess.log().Error(what+": storage full", "err", err)
		return smtp.NewReply(452, "4.3.1", "insufficient system storage, try again later")
	}
	ref := sess.internalError(what, err)
	return smtp.Replyf(451, "4.3.0", "local error in processing, try again later (ref %s)", ref)
}

// dataReadError ends a session whose connection failed during a transfer. Nothing was
// acknowledged, so nothing is lost.
func (sess *session) dataReadError(err error) {
	sess.quit = true
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		sess.log().Info("timeout during data transfer")
		sess.reply(smtp.NewReply(421, "4.4.2", sess.srv.Hostname+" timeout exceeded, closing connection"))
		return
	}
	sess.log().Info("connection lost during data transfer", "err", err)
}

// receivedHeader is the trace header (RFC 5321 4.4). The submitter's address appears as sent
// by TCP, the EHLO name as given (sanitized); "for" only with a single recipient.
func (sess *session) receivedHeader(id string, tx *transaction) string {
	with := "SMTP"
	if sess.esmtp {
		with = "ESMTP"
	}
	if tx.utf8 {
		with = "UTF8SMTP" // RFC 6531 3.7.3
	}
	if sess.tls != nil {
		with += "S" // RFC 3848
	}
	if sess.account != nil {
		with += "A" // RFC 3848
	}
	ip := "[" + sess.ip + "]"
	if strings.Contains(sess.ip, ":") {
		ip = "[IPv6:" + sess.ip + "]"
	}
	var b strings.Builder
	b.WriteString("Received: ")
	software := "yubin"
	switch {
	case sess.srv.Local:
		software = "yubin, local submission"
	case sess.srv.Submission && !sess.srv.Policy.ReceivedAuthUser:
		// Privacy: a submitter's address and EHLO name stay out of the message.
	case sess.account != nil:
		fmt.Fprintf(&b, "from %s (%s)\r\n\t(authenticated user %s)\r\n\t", sanitizeHelo(sess.helo), ip, sess.account.Address)
	default:
		fmt.Fprintf(&b, "from %s (%s)\r\n\t", sanitizeHelo(sess.helo), ip)
	}
	fmt.Fprintf(&b, "by %s (%s) with %s", sess.srv.Hostname, software, with)
	if st := sess.tls; st != nil {
		fmt.Fprintf(&b, "\r\n\t(%s %s)", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite))
	}
	fmt.Fprintf(&b, "\r\n\tid %s", id)
	if len(tx.rcpts) == 1 {
		fmt.Fprintf(&b, "\r\n\tfor <%s>", tx.rcpts[0].Address)
	}
	fmt.Fprintf(&b, ";\r\n\t%s\r\n", sess.srv.Now().Format(dateFormat))
	return b.String()
}

// contentScanner sits between the client's data and the draft. It enforces the size limit
// (past it, bytes are read and dropped, not stored), counts Received headers in the header
// section for loop detection, for BDAT (which has no dot terminator to protect) checks that
// every line ends in CRLF, and on submission adds the Message-ID and Date headers a client
// left out (RFC 6409 8) at the end of the header section. It never fails a Write, so the
// transfer is always read to its end; the verdict is read from its fields afterwards.
type contentScanner struct {
	w        io.Writer
	max      int64
	n        int64
	over     bool
	werr     error
	inHeader bool
	col      int // bytes seen in the current header line
	pfx      [16]byte
	received int
	checkEOL bool
	prevCR   bool
	bareEOL  bool

	// addHeaders, when set, returns the header lines to add given what the header section
	// had; it is called once, when the section ends.
	addHeaders    func(hasMessageID, hasDate bool) string
	hasMessageID  bool
	hasDate       bool
	heldCR        bool // a CR at the end of a chunk in the header, held back for injection
	headerDoneEnd int  // set by scanHeader: where in p the blank line starts (-1: the held CR)
}

var (
	receivedPrefix  = []byte("received:")
	messageIDPrefix = []byte("message-id:")
	datePrefix      = []byte("date:")
)

func (c *contentScanner) Write(p []byte) (int, error) {
	n := len(p)
	c.n += int64(n)
	if c.n > c.max {
		c.over = true
	}
	if c.checkEOL && !c.bareEOL {
		c.scanEOL(p)
	}
	if !c.inHeader {
		c.emit(p)
		return n, nil
	}
	ended := c.scanHeader(p)
	if c.addHeaders == nil {
		c.emit(p)
		return n, nil
	}
	held := c.heldCR
	c.heldCR = false
	switch {
	case ended && c.headerDoneEnd < 0:
		c.emit([]byte(c.addHeaders(c.hasMessageID, c.hasDate)))
		c.emit([]byte{'\r'})
		c.emit(p)
	case ended:
		if held {
			c.emit([]byte{'\r'})
		}
		c.emit(p[:c.headerDoneEnd])
		c.emit([]byte(c.addHeaders(c.hasMessageID, c.hasDate)))
		c.emit(p[c.headerDoneEnd:])
	default:
		if held {
			c.emit([]byte{'\r'})
		}
		if len(p) > 0 && p[len(p)-1] == '\r' {
			c.emit(p[:len(p)-1])
			c.heldCR = true
		} else {
			c.emit(p)
		}
	}
	return n, nil
}

// emit passes bytes to the draft unless the message is already refused.
func (c *contentScanner) emit(p []byte) {
	if !c.over && c.werr == nil && len(p) > 0 {
		if _, err := c.w.Write(p); err != nil {
			c.werr = err
		}
	}
}

// scanHeader follows the header section; it reports whether the section ended in p, and
// then headerDoneEnd is the offset in p where the empty line starts.
func (c *contentScanner) scanHeader(p []byte) bool {
	for i, b := range p {
		if b == '\n' {
			if c.col == 0 || c.col == 1 && c.pfx[0] == '\r' {
				c.inHeader = false // the empty line ends the header section
				c.headerDoneEnd = i - c.col
				return true
			}
			line := c.pfx[:min(c.col, len(c.pfx))]
			switch {
			case hasFoldPrefix(line, receivedPrefix):
				c.received++
			case hasFoldPrefix(line, messageIDPrefix):
				c.hasMessageID = true
			case hasFoldPrefix(line, datePrefix):
				c.hasDate = true
			}
			c.col = 0
			continue
		}
		if c.col < len(c.pfx) {
			c.pfx[c.col] = b
		}
		c.col++
	}
	return false
}

func hasFoldPrefix(s, prefix []byte) bool {
	return len(s) >= len(prefix) && bytes.EqualFold(s[:len(prefix)], prefix)
}

func (c *contentScanner) scanEOL(p []byte) {
	if len(p) == 0 {
		return
	}
	if c.prevCR && p[0] != '\n' {
		c.bareEOL = true
		return
	}
	for i := 0; ; {
		j := bytes.IndexByte(p[i:], '\n')
		if j < 0 {
			break
		}
		k := i + j
		if k == 0 && !c.prevCR || k > 0 && p[k-1] != '\r' {
			c.bareEOL = true
			return
		}
		i = k + 1
	}
	for i := 0; ; {
		j := bytes.IndexByte(p[i:], '\r')
		if j < 0 {
			break
		}
		k := i + j
		if k+1 < len(p) && p[k+1] != '\n' {
			c.bareEOL = true
			return
		}
		i = k + 1
	}
	c.prevCR = p[len(p)-1] == '\r'
}

// finish ends the content: a CR left dangling at the very end of a BDAT transfer is a bare
// CR; a message that is all header (no empty line) gets its added headers at the end.
func (c *contentScanner) finish() {
	if c.checkEOL && c.prevCR {
		c.bareEOL = true
	}
	if c.heldCR {
		c.emit([]byte{'\r'})
		c.heldCR = false
	}
	if c.inHeader && c.addHeaders != nil {
		c.inHeader = false
		if c.col != 0 {
			c.emit([]byte("\r\n")) // the last line lacked its line ending
		}
		c.emit([]byte(c.addHeaders(c.hasMessageID, c.hasDate)))
	}
}
