package smtp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"unicode/utf8"
)

// ErrLineTooLong is returned by ReadLine for a line longer than its limit.
// The line has been consumed, so the session can answer 500 and go on.
var ErrLineTooLong = errors.New("smtp: line too long")

// ReadLine reads one command line ending in CRLF and returns it without the
// line ending, in a new slice. A bare LF also ends the line: commands are not
// message content, and RFC 5321 2.3.8's ban on bare LF matters where a
// smuggled line could hide, in DATA (see DataReader).
//
// A line longer than max bytes (without CRLF) is consumed and dropped up to
// and including its LF without being buffered, and ErrLineTooLong returned.
// RFC 5321 4.5.3.1.4 sets 512 octets with CRLF for command lines; extensions
// may raise it, so max is the caller's. End of input before the first byte
// is io.EOF, inside a line io.ErrUnexpectedEOF; other errors pass through.
func ReadLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		frag, err := r.ReadSlice('\n')
		switch err {
		case nil:
			frag = frag[:len(frag)-1]
			// One more than max is allowed here: it may be the CR.
			if len(line)+len(frag) > max+1 {
				return nil, ErrLineTooLong
			}
			line = append(line, frag...)
			if n := len(line); n > 0 && line[n-1] == '\r' {
				line = line[:n-1]
			}
			if len(line) > max {
				return nil, ErrLineTooLong
			}
			if line == nil {
				line = []byte{}
			}
			return line, nil
		case bufio.ErrBufferFull:
			if len(line)+len(frag) > max+1 {
				if err := skipLine(r); err != nil {
					return nil, err
				}
				return nil, ErrLineTooLong
			}
			line = append(line, frag...)
		case io.EOF:
			if len(line)+len(frag) > 0 {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, io.EOF
		default:
			return nil, err
		}
	}
}

// skipLine reads and drops input up to and including the next LF, one
// buffer at a time.
func skipLine(r *bufio.Reader) error {
	for {
		_, err := r.ReadSlice('\n')
		switch err {
		case nil:
			return nil
		case bufio.ErrBufferFull:
			continue
		case io.EOF:
			return io.ErrUnexpectedEOF
		default:
			return err
		}
	}
}

// Command is one command line split into its verb and argument.
type Command struct {
	Verb string // upper-cased, e.g. "MAIL"
	Arg  string // the rest after one space, as sent (trailing spaces trimmed)
}

// maxVerb is the longest verb ParseCommand accepts. SMTP verbs have four
// letters (RFC 5321 4.1.1), extensions a few more (STARTTLS); 20 leaves room.
const maxVerb = 20

// ParseCommand splits a command line (without CRLF) into verb and argument.
// Its errors are *Reply values ready to send: 500 5.5.2 for an empty line, a
// NUL or other control byte (anything below 0x20 except TAB), invalid UTF-8
// (RFC 6531 allows UTF-8, nothing else), or a verb that is not 1 to 20 ASCII
// letters or digits. Unknown verbs are not an error here; the server answers
// them with 500 5.5.1.
func ParseCommand(line []byte) (Command, error) {
	if len(line) == 0 {
		return Command{}, NewReply(500, "5.5.2", "syntax error: empty command")
	}
	for _, c := range line {
		if c == 0 {
			return Command{}, NewReply(500, "5.5.2", "syntax error: NUL byte in command")
		}
		if c < 0x20 && c != '\t' {
			return Command{}, NewReply(500, "5.5.2", "syntax error: control character in command")
		}
	}
	if !utf8.Valid(line) {
		return Command{}, NewReply(500, "5.5.2", "syntax error: invalid UTF-8 in command")
	}
	verb, arg, _ := bytes.Cut(line, []byte{' '})
	if len(verb) == 0 || len(verb) > maxVerb {
		return Command{}, NewReply(500, "5.5.2", "syntax error: bad command verb")
	}
	for _, c := range verb {
		if !isAlnum(c) {
			return Command{}, NewReply(500, "5.5.2", "syntax error: bad command verb")
		}
	}
	return Command{
		Verb: strings.ToUpper(string(verb)),
		Arg:  string(bytes.TrimRight(arg, " \t")),
	}, nil
}

func isAlpha(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
func isAlnum(c byte) bool { return isAlpha(c) || isDigit(c) }
