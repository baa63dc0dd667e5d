package queue

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"yubin/internal/dsn"
	"yubin/internal/smtp"
)

// Deliverer sends one message to one destination domain (package outbound, adapted by app).
// It returns a result for every recipient of d; it never returns an error of its own: a
// failure it cannot attribute to the peer (DNS, connection refused, a local problem) is a
// reply it makes up, 4xx when it may pass, 5xx when it never will.
type Deliverer interface {
	Deliver(ctx context.Context, d *Delivery) Result
}

// Delivery is one message for one destination domain: every due recipient of the message at
// that domain, so that one SMTP transaction carries them all.
type Delivery struct {
	MessageID  string // yubin's message id, for logs
	From       string // envelope sender, "" for the null sender
	Recipients []Recipient
	Domain     string // the destination domain, lower-cased
	Size       int64  // of the content Open returns (for SIZE=)
	// Open returns the content to send: the stored message without yubin's Return-Path line.
	// It may be called more than once (one call per connection attempt). Content held in
	// memory comes with a method Bytes() []byte that returns all of it, for readers that
	// would otherwise copy it; they must not modify it.
	Open     func() (io.ReadCloser, error)
	SMTPUTF8 bool   // RFC 6531: the message needs SMTPUTF8
	EightBit bool   // RFC 6152: BODY=8BITMIME
	Ret      string // RFC 3461 RET: "FULL", "HDRS" or ""
	EnvID    string // RFC 3461 ENVID, decoded (not xtext), or ""
}

// Recipient is one envelope recipient with its RFC 3461 parameters.
type Recipient struct {
	Address string
	Notify  string // "" (not given), "NEVER", or a comma list of SUCCESS, FAILURE, DELAY
	ORCPT   string // "addr-type;address" decoded (not xtext), e.g. "rfc822;bob@example.org", or ""
}

// decodeParam removes the xtext encoding of a stored ENVID, or of the address of a stored
// ORCPT ("rfc822;bob+2Bx@example.org" gives "rfc822;bob+x@example.org"). A value that is not
// valid xtext is passed on as it is.
func decodeParam(s string, orcpt bool) string {
	typ, val := "", s
	if orcpt {
		var ok bool
		if typ, val, ok = strings.Cut(s, ";"); !ok {
			return s
		}
		typ += ";"
	}
	d, err := dsn.DecodeXtext(val)
	if err != nil {
		return s
	}
	return typ + d
}

// Result is the outcome of one Deliver call.
type Result struct {
	Rcpts    []RcptResult
	Attempts []Attempt // every connection attempt, in order
}

// RcptResult is the final reply for one recipient: 2xx delivered, 4xx try again later, 5xx
// never. A recipient missing from Result.Rcpts, or with a nil Reply, counts as a temporary
// failure.
type RcptResult struct {
	Address string
	Reply   *smtp.Reply
	MX      string // host that gave Reply; "" when the reply was made up locally
}

// Attempt is one connection attempt, for the operator's timeline (yubin queue show).
type Attempt struct {
	Time  time.Time
	MX    string // host name
	IP    string // address connected to, "" if none
	TLS   string // e.g. "TLS1.3 verified", "none"
	Reply string // the reply or error that ended the attempt, one line
}

// maxReturnPathLine bounds the Return-Path line intake writes: "Return-Path: <" + a path of
// at most 256 octets (RFC 5321 4.5.3.1.3) + ">\r\n", with room to spare.
const maxReturnPathLine = 4096

// returnPathLen returns the length of the Return-Path line that starts a stored message (see
// package intake), or 0 when there is none.
func returnPathLen(r io.ReaderAt, size int64) (int64, error) {
	buf := make([]byte, min(size, maxReturnPathLine))
	n, err := r.ReadAt(buf, 0)
	if err != nil && err != io.EOF {
		return 0, err
	}
	return returnPathLine(buf[:n])
}

// returnPathLine is returnPathLen over the first bytes of the message (up to
// maxReturnPathLine of them, or all when it is shorter).
func returnPathLine(buf []byte) (int64, error) {
	buf = buf[:min(len(buf), maxReturnPathLine)]
	const name = "return-path:"
	if len(buf) < len(name) || !strings.EqualFold(string(buf[:len(name)]), name) {
		return 0, nil
	}
	i := bytes.IndexByte(buf, '\n')
	if i < 0 {
		return 0, fmt.Errorf("Return-Path line longer than %d bytes", maxReturnPathLine)
	}
	return int64(i + 1), nil
}

// content is the stored message without its Return-Path line.
type content struct {
	*io.SectionReader
	io.Closer
	mem []byte // the same bytes, when the store holds them in memory; nil otherwise
}

// openContent opens message id for relaying and returns it with its size.
func openContent(ctx context.Context, st Store, id string) (*content, int64, error) {
	mr, size, err := st.OpenMessage(ctx, id)
	if err != nil {
		return nil, 0, err
	}
	var skip int64
	var mem []byte
	if m, ok := mr.(interface{ Bytes() []byte }); ok && int64(len(m.Bytes())) == size {
		mem = m.Bytes()
		skip, err = returnPathLine(mem)
	} else {
		skip, err = returnPathLen(mr, size)
	}
	if err != nil {
		mr.Close()
		return nil, 0, fmt.Errorf("message %s: %w", id, err)
	}
	if mem != nil {
		mem = mem[skip:]
	}
	return &content{io.NewSectionReader(mr, skip, size-skip), mr, mem}, size - skip, nil
}

// memContent is content held in memory, offered whole by Bytes (see Delivery.Open).
type memContent struct {
	*bytes.Reader
	b []byte
}

func newMemContent(b []byte) memContent { return memContent{bytes.NewReader(b), b} }

func (memContent) Close() error    { return nil }
func (m memContent) Bytes() []byte { return m.b }
