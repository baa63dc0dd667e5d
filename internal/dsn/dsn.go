// Package dsn builds delivery status notifications: bounces and delay warnings. A report is an
// RFC 6522 multipart/report with report-type=delivery-status, in three parts:
//
//  1. text/plain for a person: which recipients, what the remote server answered (the exact
//     reply), and what the sender can do about it;
//  2. message/delivery-status (RFC 3464) for programs: Reporting-MTA, Arrival-Date, and per
//     recipient Final-Recipient, Original-Recipient (RFC 3461 ORCPT), Action, Status,
//     Remote-MTA, Diagnostic-Code, Last-Attempt-Date and, for delays, Will-Retry-Until;
//  3. the original message: its header section (text/rfc822-headers), or the whole message
//     (message/rfc822) when the sender asked for RET=FULL and it is under a size cap.
//
// When an address or the original header section is not ASCII, the RFC 6533 types take their
// place (message/global-delivery-status, message/global-headers, message/global) and the
// report must travel with SMTPUTF8 (Message.SMTPUTF8).
//
// This package only builds the message. The queue decides when a report is owed and commits it
// like any other message, with the null reverse-path so that it is never bounced itself.
package dsn

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"yubin/internal/smtp"
)

// Action is the RFC 3464 2.3.3 action of one recipient. yubin reports only failures and
// delays.
type Action string

const (
	Failed  Action = "failed"
	Delayed Action = "delayed"
)

// DefaultMaxFull is the largest original message returned in full under RET=FULL when
// Report.MaxFull is 0. A larger one is returned as its header section.
const DefaultMaxFull = 1 << 20

// maxHeaderSection bounds how much of the original header section is returned.
const maxHeaderSection = 256 << 10

// Recipient is the status of one recipient.
type Recipient struct {
	Address string // the recipient yubin tried (Final-Recipient)
	ORCPT   string // the RFC 3461 ORCPT parameter as received ("rfc822;" xtext), or ""
	Action  Action
	// Reply is the reply that decided the status: the remote server's when RemoteMTA is set,
	// else one yubin made up (a DNS failure, an operator's bounce). nil: none known.
	Reply          *smtp.Reply
	RemoteMTA      string    // host name of the server that gave Reply, or ""
	LastAttempt    time.Time // zero: no attempt was made
	WillRetryUntil time.Time // Delayed: when the queue gives up
	// Expired is true for a failure because the queue lifetime ran out: Reply is then the last
	// temporary failure.
	Expired bool
}

// Report is a delivery status notification for one message.
type Report struct {
	Hostname  string    // this MTA: Reporting-MTA and the From address MAILER-DAEMON@Hostname
	To        string    // the original envelope sender, who receives the report; never ""
	MessageID string    // Message-ID of the report without <>; "" draws a random one
	Date      time.Time // of the report
	EnvID     string    // RFC 3461 ENVID as received (xtext), or ""

	ArrivalDate time.Time // when the original message arrived
	Recipients  []Recipient

	// The original message without the Return-Path line; nil leaves the third part out.
	Original     io.Reader
	OriginalSize int64
	Ret          string // RFC 3461 RET: "FULL" returns the whole message (if <= MaxFull), else headers
	MaxFull      int64  // 0: DefaultMaxFull
}

// Message is a built report.
type Message struct {
	Data []byte // the whole message, CRLF line endings
	// SMTPUTF8: the report has UTF-8 in addresses or headers, so it must be sent with the
	// RFC 6531 SMTPUTF8 parameter. EightBit: it has 8-bit content (BODY=8BITMIME).
	SMTPUTF8, EightBit bool
}

// Build renders the report.
func (r *Report) Build() (*Message, error) {
	if r.Hostname == "" {
		return nil, errors.New("dsn: no hostname")
	}
	if r.To == "" {
		// RFC 5321 4.5.5: a message from the null reverse-path is never answered.
		return nil, errors.New("dsn: no report for the null reverse-path")
	}
	if len(r.Recipients) == 0 {
		return nil, errors.New("dsn: no recipients")
	}
	orig, full, err := r.original()
	if err != nil {
		return nil, fmt.Errorf("dsn: read original message: %w", err)
	}
	global := r.utf8Addresses() // RFC 6533 3: UTF-8 addresses need the global type
	fields := r.statusFields(global)
	hdrUTF8 := !isASCII(string(headerSection(orig)))

	msgID := r.MessageID
	if msgID == "" {
		msgID = randomID(r.Hostname)
	}
	boundary := pickBoundary(msgID, r.Date, orig)

	var buf bytes.Buffer
	w := func(format string, args ...any) { fmt.Fprintf(&buf, format, args...) }
	failed := false
	for _, rc := range r.Recipients {
		failed = failed || rc.Action != Delayed
	}
	subject := "Delayed Mail (still being retried)"
	if failed {
		subject = "Undelivered Mail Returned to Sender"
	}
	w("From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", r.Hostname)
	w("To: <%s>\r\n", r.To)
	w("Subject: %s\r\n", subject)
	w("Date: %s\r\n", r.Date.Format(time.RFC1123Z))
	w("Message-ID: <%s>\r\n", msgID)
	if id := originalMessageID(orig); id != "" {
		w("In-Reply-To: %s\r\nReferences: %s\r\n", id, id)
	}
	// RFC 3834 5: an automatic response; RFC 3464 does not mark reports otherwise.
	w("Auto-Submitted: auto-replied\r\n")
	w("MIME-Version: 1.0\r\n")
	w("Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"%s\"\r\n", boundary)
	w("\r\n")
	w("This is a MIME-encapsulated delivery status notification.\r\n")

	// Part 1: for a person.
	w("\r\n--%s\r\n", boundary)
	writeText(&buf, r.humanText(orig != nil, full))

	// Part 2: for programs.
	w("\r\n--%s\r\n", boundary)
	if global {
		w("Content-Type: message/global-delivery-status\r\n")
		w("Content-Transfer-Encoding: 8bit\r\n")
	} else {
		w("Content-Type: message/delivery-status\r\n")
	}
	w("Content-Description: Delivery report\r\n\r\n")
	buf.WriteString(fields)

	// Part 3: the original.
	if orig != nil {
		w("\r\n--%s\r\n", boundary)
		switch {
		case full && hdrUTF8:
			w("Content-Type: message/global\r\n") // RFC 6532 3.7
		case full:
			w("Content-Type: message/rfc822\r\n")
		case hdrUTF8:
			w("Content-Type: message/global-headers\r\n") // RFC 6533 6.3
		default:
			w("Content-Type: text/rfc822-headers\r\n") // RFC 6522 4
		}
		if !isASCII(string(orig)) {
			w("Content-Transfer-Encoding: 8bit\r\n")
		}
		if full {
			w("Content-Description: Undelivered message\r\n\r\n")
		} else {
			w("Content-Description: Undelivered message headers\r\n\r\n")
		}
		buf.Write(orig)
		if len(orig) > 0 && !bytes.HasSuffix(orig, []byte("\r\n")) {
			buf.WriteString("\r\n")
		}
	}
	w("\r\n--%s--\r\n", boundary)

	m := &Message{Data: buf.Bytes()}
	m.SMTPUTF8 = global || hdrUTF8 || !isASCII(r.To)
	m.EightBit = !isASCII(buf.String())
	return m, nil
}

// utf8Addresses reports whether an address or the envelope id is not ASCII.
func (r *Report) utf8Addresses() bool {
	if !isASCII(decodeOr(r.EnvID)) {
		return true
	}
	for _, rc := range r.Recipients {
		if !isASCII(rc.Address) || !isASCII(decodeOr(rc.ORCPT)) {
			return true
		}
	}
	return false
}

// statusFields renders the RFC 3464 2.1 delivery-status content: the per-message fields, then
// a block per recipient, each block ending with an empty line. Unless global, the content is
// ASCII: other bytes in a reply or host name become '?'.
func (r *Report) statusFields(global bool) string {
	var b strings.Builder
	field := func(name, value string) {
		if !global {
			value = asciiOnly(value)
		}
		b.WriteString(foldField(name, value))
	}
	field("Reporting-MTA", "dns; "+clean(r.Hostname))
	if r.EnvID != "" {
		// RFC 3464 2.2.1: the ENVID with its xtext encoding removed.
		field("Original-Envelope-Id", decodeOr(r.EnvID))
	}
	if !r.ArrivalDate.IsZero() {
		field("Arrival-Date", r.ArrivalDate.Format(time.RFC1123Z))
	}
	for _, rc := range r.Recipients {
		b.WriteString("\r\n")
		field("Final-Recipient", addressField("rfc822", rc.Address))
		if rc.ORCPT != "" {
			typ, val, ok := strings.Cut(rc.ORCPT, ";")
			if !ok {
				typ, val = "rfc822", rc.ORCPT
			}
			field("Original-Recipient", addressField(strings.TrimSpace(typ), decodeOr(strings.TrimSpace(val))))
		}
		field("Action", string(rc.Action))
		field("Status", rc.status())
		if rc.RemoteMTA != "" {
			field("Remote-MTA", "dns; "+clean(rc.RemoteMTA))
		}
		if rc.Reply != nil {
			// RFC 3464 2.3.6: "smtp" is for a reply from a remote SMTP server; what
			// yubin made up itself carries its own diagnostic type.
			typ := "smtp"
			if rc.RemoteMTA == "" {
				typ = "X-Yubin"
			}
			field("Diagnostic-Code", typ+"; "+clean(rc.Reply.Error()))
		}
		if !rc.LastAttempt.IsZero() {
			field("Last-Attempt-Date", rc.LastAttempt.Format(time.RFC1123Z))
		}
		if rc.Action == Delayed && !rc.WillRetryUntil.IsZero() {
			field("Will-Retry-Until", rc.WillRetryUntil.Format(time.RFC1123Z))
		}
	}
	return b.String()
}

// addressField renders "type; address". RFC 6533 3: a non-ASCII address is of type utf-8.
func addressField(typ, addr string) string {
	addr = clean(addr)
	if !isASCII(addr) {
		typ = "utf-8"
	}
	return typ + "; " + addr
}

// status returns the RFC 3463 status code: the reply's enhanced code, else one derived from
// its basic code (x.0.0), else 5.0.0 for a failure and 4.0.0 for a delay.
func (rc Recipient) status() string {
	if rc.Reply != nil && smtp.ValidEnhanced(rc.Reply.Code, rc.Reply.Enhanced) {
		return rc.Reply.Enhanced
	}
	if rc.Expired {
		// RFC 3463 3.5: X.4.7, delivery time expired. Class 4, persistent transient failure,
		// as the last reply was; RFC 3463 2 allows it for an abandoned message.
		return "4.4.7"
	}
	if rc.Reply != nil {
		if c := rc.Reply.Code / 100; c == 2 || c == 4 || c == 5 {
			return fmt.Sprintf("%d.0.0", c)
		}
	}
	if rc.Action == Delayed {
		return "4.0.0"
	}
	return "5.0.0"
}

// original returns what part 3 carries: the whole message (full) or its header section, with
// CRLF line endings; nil when there is no original.
func (r *Report) original() (data []byte, full bool, err error) {
	if r.Original == nil {
		return nil, false, nil
	}
	max := r.MaxFull
	if max <= 0 {
		max = DefaultMaxFull
	}
	if strings.EqualFold(r.Ret, "FULL") && r.OriginalSize <= max {
		b, err := io.ReadAll(io.LimitReader(r.Original, max+1))
		if err != nil {
			return nil, false, err
		}
		if int64(len(b)) <= max {
			return toCRLF(b), true, nil
		}
		return toCRLF(headerSection(b)), false, nil
	}
	br := bufio.NewReader(io.LimitReader(r.Original, maxHeaderSection))
	var h []byte
	for {
		line, err := br.ReadBytes('\n')
		if err == io.EOF {
			// Cut off: keep complete lines only, unless the message has no line end at all.
			if len(line) > 0 && len(h) == 0 {
				h = append(h, line...)
			}
			break
		}
		if err != nil {
			return nil, false, err
		}
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			break
		}
		h = append(h, line...)
	}
	return toCRLF(h), false, nil
}

// headerSection returns the header lines of msg, without the empty line that ends them.
func headerSection(msg []byte) []byte {
	for i := 0; i < len(msg); {
		j := bytes.IndexByte(msg[i:], '\n')
		if j < 0 {
			return msg
		}
		if len(bytes.TrimRight(msg[i:i+j+1], "\r\n")) == 0 {
			return msg[:i]
		}
		i += j + 1
	}
	return msg
}

// toCRLF turns bare LF line endings into CRLF.
func toCRLF(b []byte) []byte {
	if bytes.Count(b, []byte("\n")) == bytes.Count(b, []byte("\r\n")) {
		return b
	}
	out := make([]byte, 0, len(b)+64)
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out
}

// originalMessageID returns the Message-ID field of the original header section if it is a
// plain "<...>", for In-Reply-To and References (so mail clients thread the report).
func originalMessageID(orig []byte) string {
	h := headerSection(orig)
	lines := strings.Split(string(h), "\r\n")
	for i, l := range lines {
		name, val, ok := strings.Cut(l, ":")
		if !ok || !strings.EqualFold(strings.TrimSpace(name), "Message-ID") {
			continue
		}
		for _, cont := range lines[i+1:] {
			if cont == "" || (cont[0] != ' ' && cont[0] != '\t') {
				break
			}
			val += cont
		}
		val = strings.TrimSpace(val)
		if len(val) > 2 && len(val) < 500 && val[0] == '<' && val[len(val)-1] == '>' &&
			!strings.ContainsAny(val, " \t\"") && isASCII(val) && clean(val) == val {
			return val
		}
		return ""
	}
	return ""
}

// pickBoundary derives the MIME boundary from the report's identity, so that the same report
// renders the same bytes (golden files), and makes sure the included original does not
// contain it.
func pickBoundary(msgID string, date time.Time, content []byte) string {
	for i := 0; ; i++ {
		sum := sha256.Sum256(fmt.Appendf(nil, "%s %d %d", msgID, date.UnixNano(), i))
		// "=_" never occurs in quoted-printable or base64 text.
		b := "=_report_" + hex.EncodeToString(sum[:10])
		if !bytes.Contains(content, []byte(b)) {
			return b
		}
	}
}

func randomID(host string) string {
	var b [15]byte
	rand.Read(b[:])
	return strings.ToLower(base32.StdEncoding.EncodeToString(b[:])) + "@" + host
}

// clean makes s safe inside a header field: control characters (CR and LF included) become
// '?', invalid UTF-8 becomes U+FFFD.
func clean(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\t' || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

func asciiOnly(s string) string {
	if isASCII(s) {
		return s
	}
	return strings.Map(func(r rune) rune {
		if r >= utf8.RuneSelf {
			return '?'
		}
		return r
	}, s)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// foldField renders "Name: value\r\n", folded at spaces so that lines stay near 78
// characters (RFC 5322 2.2.3). A word too long for 998 octets is cut.
func foldField(name, value string) string {
	const soft, hard = 78, 998
	var b strings.Builder
	line := name + ":"
	words := strings.Split(value, " ")
	for i, w := range words {
		for len(w) > hard-2 {
			// No space to fold at: cut (this changes the value, which is better than an
			// illegal line).
			if line != "" {
				b.WriteString(line + "\r\n")
			}
			b.WriteString(" " + w[:hard-2] + "\r\n")
			w, line = w[hard-2:], ""
		}
		switch {
		case line == "":
			line = " " + w
		case i > 0 && w != "" && len(line)+1+len(w) > soft && strings.TrimSpace(line) != name+":":
			b.WriteString(line + "\r\n")
			line = " " + w
		default:
			line += " " + w
		}
	}
	b.WriteString(line + "\r\n")
	return b.String()
}
