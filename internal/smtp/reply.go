package smtp

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Reply is one SMTP reply. It is also the one protocol error type: it
// implements error, and the server maps errors to replies with errors.As.
type Reply struct {
	Code     int      // 3 digits, 200..599
	Enhanced string   // RFC 3463 "x.y.z" or "" (then no enhanced code is written)
	Lines    []string // text lines, without code; at least one (may be "")
}

// NewReply returns a reply whose text may span several lines separated by
// "\n" (a "\r\n" separator and one trailing newline are tolerated).
func NewReply(code int, enhanced string, text string) *Reply {
	text = strings.TrimSuffix(strings.TrimSuffix(text, "\n"), "\r")
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimSuffix(l, "\r")
	}
	return &Reply{Code: code, Enhanced: enhanced, Lines: lines}
}

// Replyf is NewReply with a formatted text.
func Replyf(code int, enhanced, format string, args ...any) *Reply {
	return NewReply(code, enhanced, fmt.Sprintf(format, args...))
}

// Error returns the reply on one line, e.g. "550 5.1.1 no such user"; the
// lines of a multi-line reply are joined with "; ".
func (r *Reply) Error() string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(r.Code))
	if r.Enhanced != "" {
		b.WriteByte(' ')
		b.WriteString(r.Enhanced)
	}
	if text := strings.Join(r.Lines, "; "); text != "" {
		b.WriteByte(' ')
		b.WriteString(text)
	}
	return b.String()
}

// Temporary reports whether the reply is a transient failure (4xx): the same
// request may succeed later.
func (r *Reply) Temporary() bool { return r.Code/100 == 4 }

// Permanent reports whether the reply is a permanent failure (5xx).
func (r *Reply) Permanent() bool { return r.Code/100 == 5 }

// WriteTo writes the reply in one Write call, e.g.
// "250-2.0.0 a\r\n250 2.0.0 b\r\n". RFC 2034 3: the enhanced code, when set,
// is repeated on every line. CR and LF inside the text or the enhanced code
// are written as spaces, so a reply can never inject a line of its own.
// A code outside 200..599 is an error and nothing is written.
func (r *Reply) WriteTo(w io.Writer) (int64, error) {
	if r.Code < 200 || r.Code > 599 {
		return 0, fmt.Errorf("smtp: reply code %d out of range", r.Code)
	}
	n, err := w.Write(r.appendWire(nil))
	return int64(n), err
}

// appendWire appends the wire form of r (whose code is valid) to b.
func (r *Reply) appendWire(b []byte) []byte {
	lines := r.Lines
	if len(lines) == 0 {
		lines = []string{""}
	}
	for i, l := range lines {
		b = strconv.AppendInt(b, int64(r.Code), 10)
		sep := byte(' ')
		if i < len(lines)-1 {
			sep = '-'
		}
		// RFC 5321 4.2: the text is optional; "250\r\n" and "250-\r\n" are
		// valid, so no separator is followed by nothing.
		if r.Enhanced == "" && l == "" {
			if sep == '-' {
				b = append(b, '-')
			}
			b = append(b, '\r', '\n')
			continue
		}
		b = append(b, sep)
		if r.Enhanced != "" {
			b = appendNoCRLF(b, r.Enhanced)
			if l != "" {
				b = append(b, ' ')
			}
		}
		b = appendNoCRLF(b, l)
		b = append(b, '\r', '\n')
	}
	return b
}

func appendNoCRLF(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\r' || c == '\n' {
			c = ' '
		}
		b = append(b, c)
	}
	return b
}

// ErrMalformedReply is wrapped by the errors ReadReply returns for a reply
// that breaks the syntax of RFC 5321 4.2.
var ErrMalformedReply = errors.New("smtp: malformed reply")

// DefaultMaxReplyLines is the limit ReadReply uses when given maxLines <= 0.
const DefaultMaxReplyLines = 100

// maxReplyLine is the longest reply line ReadReply accepts, without CRLF.
// RFC 5321 4.5.3.1.5 says 512 octets; EHLO replies of real servers exceed it.
const maxReplyLine = 2048

// ReadReply reads one reply, as a client does. It is tolerant of what real
// servers send: a bare code without text ("250"), an empty continuation
// ("250-"), a bare LF line ending and no enhanced code (Enhanced is ""). An
// enhanced code is recognised only when its class matches the reply code
// (2.x.x for 2xx, ...) and it is followed by a space or the end of the line;
// it is taken from the first line and stripped from the later lines that
// repeat it. A CR inside a line, a line longer than 2048 bytes, a line that
// does not start with a 3-digit code 200..599, codes that differ between
// lines and more than maxLines lines are errors wrapping ErrMalformedReply. End of input before
// the first byte is io.EOF, inside the reply io.ErrUnexpectedEOF.
func ReadReply(r *bufio.Reader, maxLines int) (*Reply, error) {
	if maxLines <= 0 {
		maxLines = DefaultMaxReplyLines
	}
	var rep *Reply
	for i := 0; ; i++ {
		line, err := readReplyLine(r)
		if err != nil {
			if err == io.EOF && i > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if i >= maxLines {
			return nil, fmt.Errorf("%w: more than %d lines", ErrMalformedReply, maxLines)
		}
		code, last, text, err := parseReplyLine(line)
		if err != nil {
			return nil, err
		}
		if rep == nil {
			rep = &Reply{Code: code}
			if enh, rest, ok := cutEnhanced(code, text); ok {
				rep.Enhanced, text = enh, rest
			}
		} else {
			if code != rep.Code {
				return nil, fmt.Errorf("%w: code %d after %d in one reply", ErrMalformedReply, code, rep.Code)
			}
			if rep.Enhanced != "" {
				if enh, rest, ok := cutEnhanced(code, text); ok && enh == rep.Enhanced {
					text = rest
				}
			}
		}
		rep.Lines = append(rep.Lines, text)
		if last {
			return rep, nil
		}
	}
}

// readReplyLine reads one line without its line ending, at most maxReplyLine
// bytes. It returns io.EOF only when no byte was read.
func readReplyLine(r *bufio.Reader) (string, error) {
	var line []byte
	for {
		frag, err := r.ReadSlice('\n')
		if len(line)+len(frag) > maxReplyLine+2 {
			return "", fmt.Errorf("%w: line longer than %d bytes", ErrMalformedReply, maxReplyLine)
		}
		line = append(line, frag...)
		switch err {
		case nil:
			line = line[:len(line)-1]
			if n := len(line); n > 0 && line[n-1] == '\r' {
				line = line[:n-1]
			}
			if len(line) > maxReplyLine {
				return "", fmt.Errorf("%w: line longer than %d bytes", ErrMalformedReply, maxReplyLine)
			}
			// A CR inside a line is no line ending anywhere; a reply
			// carrying one is broken or hostile.
			if bytes.IndexByte(line, '\r') >= 0 {
				return "", fmt.Errorf("%w: bare CR in line %s", ErrMalformedReply, quoteShort(string(line)))
			}
			return string(line), nil
		case bufio.ErrBufferFull:
			continue
		case io.EOF:
			if len(line) > 0 {
				return "", io.ErrUnexpectedEOF
			}
			return "", io.EOF
		default:
			return "", err
		}
	}
}

// parseReplyLine splits a reply line into its code, whether it is the last
// line and its text. RFC 5321 4.2: Reply-code [ ("-" / SP) textstring ].
func parseReplyLine(line string) (code int, last bool, text string, err error) {
	if len(line) < 3 || line[0] < '2' || line[0] > '5' || !isDigit(line[1]) || !isDigit(line[2]) {
		return 0, false, "", fmt.Errorf("%w: line %s does not start with a code 200..599", ErrMalformedReply, quoteShort(line))
	}
	code = int(line[0]-'0')*100 + int(line[1]-'0')*10 + int(line[2]-'0')
	if len(line) == 3 {
		return code, true, "", nil
	}
	switch line[3] {
	case ' ':
		return code, true, line[4:], nil
	case '-':
		return code, false, line[4:], nil
	}
	return 0, false, "", fmt.Errorf("%w: line %s has no space or '-' after the code", ErrMalformedReply, quoteShort(line))
}

// cutEnhanced splits an RFC 3463 status code off the start of text when its
// class matches the class of the reply code and it is followed by a space
// or the end of the text.
func cutEnhanced(code int, text string) (enh, rest string, ok bool) {
	end := strings.IndexByte(text, ' ')
	if end < 0 {
		end = len(text)
	}
	if !ValidEnhanced(code, text[:end]) {
		return "", text, false
	}
	if end == len(text) {
		return text, "", true
	}
	return text[:end], text[end+1:], true
}

// ValidEnhanced reports whether enh is an RFC 3463 status code whose class
// matches the class of the reply code: class "." 1*3digit "." 1*3digit, with
// class 2 for 2xx, 4 for 4xx and 5 for 5xx (3xx replies have none).
func ValidEnhanced(code int, enh string) bool {
	class := code / 100
	if class != 2 && class != 4 && class != 5 {
		return false
	}
	if len(enh) < 5 || enh[0] != byte('0'+class) || enh[1] != '.' {
		return false
	}
	subject, detail, ok := strings.Cut(enh[2:], ".")
	return ok && digits1to3(subject) && digits1to3(detail)
}

func digits1to3(s string) bool {
	if len(s) < 1 || len(s) > 3 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// quoteShort quotes s for an error message, cut to a readable length.
func quoteShort(s string) string {
	const max = 64
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}
