package outbound

import (
	"fmt"
	"io"
	"strings"

	"yubin/internal/address"
	"yubin/internal/smtp"
)

// message is what prepare learns about a Delivery before any connection.
type message struct {
	d        *Delivery
	from     string // the reverse-path as sent, "" for <>
	needUTF8 bool   // SMTPUTF8 is needed: the Delivery says so or an address is not ASCII
	content  contentInfo
}

// maxLine is the longest text line SMTP carries, without its CRLF
// (RFC 5321 4.5.3.1.6: 1000 octets with CRLF; RFC 5322 2.1.1).
const maxLine = 998

// prepare checks what would go on the wire before anything does: the
// addresses (RFC 5321 4.1.2) and the content, which is read once to find
// its exact size as sent and any line too long for SMTP. A recipient whose
// address is broken gets its reply here; a failure for the whole message is
// returned.
//
// A line over 998 octets is a permanent failure, not folded: folding a body
// line changes the message (and breaks its DKIM signatures), and a message
// we cannot send unchanged is better returned to its sender with the reason
// than altered in transit.
func prepare(d *Delivery, rcpts []*rcptState) (*message, *smtp.Reply) {
	m := &message{d: d, needUTF8: d.SMTPUTF8}
	if d.From != "" {
		a, err := address.Parse(d.From, address.Options{AllowUTF8: true})
		if err != nil {
			return nil, smtp.Replyf(553, "5.1.7", "invalid sender address %q: %v", d.From, err)
		}
		m.from = a.String()
		m.needUTF8 = m.needUTF8 || !a.IsASCII()
	}
	for _, r := range rcpts {
		a, err := address.Parse(r.Address, address.Options{AllowUTF8: true})
		if err != nil {
			r.reply = smtp.Replyf(553, "5.1.3", "invalid recipient address %q: %v", r.Address, err)
			continue
		}
		r.wire = a.String()
		m.needUTF8 = m.needUTF8 || !a.IsASCII()
	}
	if d.Open == nil {
		return nil, smtp.NewReply(451, "4.3.0", "outbound: the delivery has no content")
	}
	info, err := scan(d.Open)
	if err != nil {
		return nil, smtp.Replyf(451, "4.3.0", "reading the message: %v", err)
	}
	if info.longLine > 0 {
		return nil, smtp.Replyf(554, "5.6.3",
			"line %d of the message is %d octets long; SMTP allows at most %d (RFC 5321 4.5.3.1.6), and yubin does not rewrite messages in transit",
			info.longLine, info.longLen, maxLine)
	}
	m.content = info
	return m, nil
}

// scan reads the content once through the same normalisation as sending.
func scan(open func() (io.ReadCloser, error)) (contentInfo, error) {
	info, err := normalizeContent(open, false, nil)
	if err != nil {
		return contentInfo{}, err
	}
	return info, nil
}

// mailParams returns the parameters of MAIL for a peer with extensions
// ext (RFC 5321 4.1.1.2 and the extensions' RFCs), using each only when the
// peer announced it.
func (m *message) mailParams(ext extensions) []smtp.Param {
	var ps []smtp.Param
	if ext.has("SIZE") {
		ps = append(ps, smtp.Param{Key: "SIZE", Value: fmt.Sprint(m.size())})
	}
	if m.d.EightBit && ext.has("8BITMIME") {
		// RFC 6152. A peer without 8BITMIME gets the 8-bit content as it is,
		// as most MTAs do: converting to 7 bit would break DKIM signatures.
		ps = append(ps, smtp.Param{Key: "BODY", Value: "8BITMIME"})
	}
	if m.needUTF8 && ext.has("SMTPUTF8") {
		ps = append(ps, smtp.Param{Key: "SMTPUTF8"})
	}
	if m.d.RequireTLS && ext.has("REQUIRETLS") {
		ps = append(ps, smtp.Param{Key: "REQUIRETLS"})
	}
	if ext.has("DSN") {
		// RFC 3461 4.3, 4.4.
		if ret := strings.ToUpper(m.d.Ret); ret == "FULL" || ret == "HDRS" {
			ps = append(ps, smtp.Param{Key: "RET", Value: ret})
		}
		if id := m.d.EnvID; id != "" && len(id) <= 100 && printableASCII(id) {
			ps = append(ps, smtp.Param{Key: "ENVID", Value: xtext(id)})
		}
	}
	return ps
}

// size is what SIZE= announces: the content as sent, or the size the
// Delivery gives when larger.
func (m *message) size() int64 {
	return max(m.content.size, m.d.Size)
}

// rcptParams returns the DSN parameters of RCPT (RFC 3461 4.1, 4.2) when
// the peer offers DSN.
func rcptParams(r *rcptState, ext extensions) []smtp.Param {
	if !ext.has("DSN") {
		return nil
	}
	var ps []smtp.Param
	if n := strings.ToUpper(r.Notify); validNotify(n) {
		ps = append(ps, smtp.Param{Key: "NOTIFY", Value: n})
	}
	if typ, addr, ok := strings.Cut(r.ORCPT, ";"); ok && validAtom(typ) && addr != "" {
		if printableASCII(addr) {
			ps = append(ps, smtp.Param{Key: "ORCPT", Value: typ + ";" + xtext(addr)})
		} else {
			// RFC 6533 3: a UTF-8 address goes as addr-type "utf-8" in
			// utf-8-addr-xtext, readable by any DSN peer.
			ps = append(ps, smtp.Param{Key: "ORCPT", Value: "utf-8;" + utf8AddrXtext(addr)})
		}
	}
	return ps
}

// validNotify reports whether n is "NEVER" or a list of SUCCESS, FAILURE
// and DELAY (RFC 3461 4.1).
func validNotify(n string) bool {
	if n == "NEVER" {
		return true
	}
	if n == "" {
		return false
	}
	for v := range strings.SplitSeq(n, ",") {
		if v != "SUCCESS" && v != "FAILURE" && v != "DELAY" {
			return false
		}
	}
	return true
}

func validAtom(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isAlnum(s[i]) && s[i] != '-' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// xtext encodes s as RFC 3461 4: "+" and "=", and anything outside
// "!".."~", become "+" and two upper-case hex digits.
func xtext(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '!' || c > '~' || c == '+' || c == '=' {
			fmt.Fprintf(&b, "+%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// utf8AddrXtext encodes s as RFC 6533 3's utf-8-addr-xtext: printable
// ASCII except "+", "=" and "\" as is, everything else as \x{HEX}.
func utf8AddrXtext(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r > ' ' && r <= '~' && r != '+' && r != '=' && r != '\\' {
			b.WriteRune(r)
			continue
		}
		fmt.Fprintf(&b, `\x{%X}`, r)
	}
	return b.String()
}
