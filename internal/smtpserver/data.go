package smtpserver

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
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
	scan := &contentScanner{w: draft, max: sess.srv.lim.MaxMessageSize, inHeader: true}
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
	sess.finishMessage(draft, scan)
}

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
			tx.bdat.scan = &contentScanner{w: draft, max: sess.srv.lim.MaxMessageSize, inHeader: true, checkEOL: true}
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
		sess.log.Info("message refused", "id", draft.ID(), "reply", refuse.Error())
		sess.fail(refuse)
		return
	}
	if scan.werr != nil {
		draft.Abort()
		sess.reply(sess.storageReply("write message", scan.werr))
		return
	}
	env := intake.Envelope{From: tx.from, Recipients: tx.rcpts}
	if err := draft.Commit(sess.ctx, env); err != nil {
		sess.reply(sess.storageReply("commit message", err))
		return
	}
	rcpts := make([]string, len(tx.rcpts))
	for i, r := range tx.rcpts {
		rcpts[i] = r.Address
	}
	sess.log.Info("message accepted", "id", draft.ID(), "from", tx.from, "rcpts", rcpts, "size", scan.n, "tls", sess.tls != nil)
	sess.reply(smtp.Replyf(250, "2.0.0", "OK queued as %s", draft.ID()))
}

// storageReply maps a storage failure: full disk is 452 4.3.1, anything else 451 4.3.0.
func (sess *session) storageReply(what string, err error) *smtp.Reply {
	if errors.Is(err, store.ErrStorageFull) {
		sess.log.Error(what+": storage full", "err", err)
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
		sess.log.Info("timeout during data transfer")
		sess.reply(smtp.NewReply(421, "4.4.2", sess.srv.Hostname+" timeout exceeded, closing connection"))
		return
	}
	sess.log.Info("connection lost during data transfer", "err", err)
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
	ip := "[" + sess.ip + "]"
	if strings.Contains(sess.ip, ":") {
		ip = "[IPv6:" + sess.ip + "]"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Received: from %s (%s)\r\n\tby %s (yubin) with %s", sanitizeHelo(sess.helo), ip, sess.srv.Hostname, with)
	if st := sess.tls; st != nil {
		fmt.Fprintf(&b, "\r\n\t(%s %s)", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite))
	}
	fmt.Fprintf(&b, "\r\n\tid %s", id)
	if len(tx.rcpts) == 1 {
		fmt.Fprintf(&b, "\r\n\tfor <%s>", tx.rcpts[0].Address)
	}
	fmt.Fprintf(&b, ";\r\n\t%s\r\n", sess.srv.Now().Format("Mon, 02 Jan 2006 15:04:05 -0700"))
	return b.String()
}

// contentScanner sits between the client's data and the draft. It enforces the size limit
// (past it, bytes are read and dropped, not stored), counts Received headers in the header
// section for loop detection, and for BDAT (which has no dot terminator to protect) checks
// that every line ends in CRLF. It never fails a Write, so the transfer is always read to its
// end; the verdict is read from its fields afterwards.
type contentScanner struct {
	w        io.Writer
	max      int64
	n        int64
	over     bool
	werr     error
	inHeader bool
	col      int // bytes seen in the current header line
	pfx      [9]byte
	received int
	checkEOL bool
	prevCR   bool
	bareEOL  bool
}

var receivedPrefix = []byte("received:")

func (c *contentScanner) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	if c.n > c.max {
		c.over = true
	}
	if c.inHeader {
		c.scanHeader(p)
	}
	if c.checkEOL && !c.bareEOL {
		c.scanEOL(p)
	}
	if !c.over && c.werr == nil {
		if _, err := c.w.Write(p); err != nil {
			c.werr = err
		}
	}
	return len(p), nil
}

func (c *contentScanner) scanHeader(p []byte) {
	for _, b := range p {
		if b == '\n' {
			if c.col == 0 || c.col == 1 && c.pfx[0] == '\r' {
				c.inHeader = false // the empty line ends the header section
				return
			}
			if c.col >= len(receivedPrefix) && bytes.EqualFold(c.pfx[:], receivedPrefix) {
				c.received++
			}
			c.col = 0
			continue
		}
		if c.col < len(c.pfx) {
			c.pfx[c.col] = b
		}
		c.col++
	}
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

// finish reports a CR left dangling at the very end of a BDAT transfer.
func (c *contentScanner) finish() {
	if c.checkEOL && c.prevCR {
		c.bareEOL = true
	}
}
