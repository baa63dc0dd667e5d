package smtp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// ErrBareLineEnding is returned by DataReader.Read for a CR not followed by
// LF or an LF not preceded by CR. RFC 5321 2.3.8 forbids both outside CRLF;
// accepting them lets an attacker smuggle a second message past a server
// that ends data differently (CVE-2023-51764), so the message is refused.
var ErrBareLineEnding = errors.New("bare CR or LF in data")

// DataReader reads the content of DATA (RFC 5321 4.1.1.4) and undoes the
// transparency procedure of RFC 5321 4.5.2. It yields every line with its
// CRLF; the terminator "<CRLF>.<CRLF>" is consumed and not returned, and then
// Read returns io.EOF. Only "<CRLF>.<CRLF>" ends the data, where the start of
// the data counts as following a CRLF, so input ".\r\n" is empty content. A
// line that starts with "." has that "." removed ("..x" yields ".x").
//
// Lines are never buffered whole: Read works on the bufio.Reader's buffer
// and copies runs of bytes in bulk, so a line of any length streams through
// in bounded memory. Read does not block for more input once it has bytes
// to return.
//
// A bare CR or bare LF makes Read return ErrBareLineEnding. The caller then
// calls Discard to skip the rest of the message and answer. End of input
// before the terminator is io.ErrUnexpectedEOF.
type DataReader struct {
	r         *bufio.Reader
	bol       bool  // the next byte starts a line: start of data or just after CRLF
	pendingLF bool  // Read returned a CR whose LF, already seen in the buffer, is still to come
	err       error // sticky: io.EOF after the terminator, ErrBareLineEnding or an I/O error
}

// NewDataReader returns a reader of the data that follows the 354 reply.
func NewDataReader(r *bufio.Reader) *DataReader {
	return &DataReader{r: r, bol: true}
}

// Read implements io.Reader; see DataReader.
func (d *DataReader) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	n := 0
	if d.pendingLF {
		d.r.Discard(1) // the LF, known to be buffered
		p[0] = '\n'
		n = 1
		d.pendingLF = false
		d.bol = true
	}
	for n < len(p) {
		if d.r.Buffered() == 0 {
			if n > 0 {
				break
			}
			if _, err := d.r.Peek(1); err != nil {
				d.fail(err)
				break
			}
		}
		if d.bol {
			if d.atTerminator(n) {
				break
			}
			continue
		}
		buf, _ := d.r.Peek(d.r.Buffered())
		if buf[0] == '\r' {
			if len(buf) < 2 {
				if n > 0 {
					break
				}
				var err error
				if buf, err = d.r.Peek(2); len(buf) < 2 {
					d.fail(err)
					break
				}
			}
			if buf[1] != '\n' {
				d.err = ErrBareLineEnding
				break
			}
			if len(p)-n >= 2 {
				p[n], p[n+1] = '\r', '\n'
				n += 2
				d.r.Discard(2)
				d.bol = true
				continue
			}
			if n > 0 {
				break
			}
			// No room for the CRLF: return the CR now, the LF next time.
			p[0] = '\r'
			n = 1
			d.r.Discard(1)
			d.pendingLF = true
			break
		}
		// Copy up to the next CR, which the branch above handles. An LF
		// before it is bare.
		seg := buf[:min(len(buf), len(p)-n)]
		end := bytes.IndexByte(seg, '\r')
		if end < 0 {
			end = len(seg)
		}
		if lf := bytes.IndexByte(seg[:end], '\n'); lf >= 0 {
			n += copy(p[n:], seg[:lf])
			d.r.Discard(lf)
			d.err = ErrBareLineEnding
			break
		}
		n += copy(p[n:], seg[:end])
		i := end
		// The whole lines that follow in the buffer, copied here rather than a step of this
		// loop at a time (a 100 KiB message has 1,300 lines): while one ends in CRLF, the
		// next does not start with a dot (atTerminator's case) and there is room. A bare CR
		// or LF stops it at the start of its line, from where the steps above report it.
		for i+2 < len(buf) && buf[i] == '\r' && buf[i+1] == '\n' && buf[i+2] != '.' && len(p)-n >= 2 {
			p[n], p[n+1] = '\r', '\n'
			n += 2
			i += 2
			rest := buf[i:min(len(buf), i+len(p)-n)]
			e := bytes.IndexByte(rest, '\r')
			if e < 0 {
				e = len(rest)
			}
			if bytes.IndexByte(rest[:e], '\n') >= 0 {
				break
			}
			n += copy(p[n:], rest[:e])
			i += e
		}
		d.r.Discard(i)
	}
	if n > 0 {
		return n, nil
	}
	return 0, d.err
}

// atTerminator handles the start of a line, with at least one byte
// buffered: it consumes the terminator (setting io.EOF) or the leading "."
// of a stuffed line, and clears bol. It reports whether Read must stop,
// because it has n bytes to return and deciding would block, or because the
// data ended.
func (d *DataReader) atTerminator(n int) bool {
	buf, _ := d.r.Peek(1)
	if buf[0] != '.' {
		d.bol = false
		return false
	}
	// Peek only as far as needed to decide: ".x" is not the terminator
	// whatever follows.
	const terminatorLine = ".\r\n"
	for need := 2; need <= 3; need++ {
		if d.r.Buffered() < need && n > 0 {
			return true
		}
		buf, err := d.r.Peek(need)
		if len(buf) < need {
			// The input ends (or fails) inside a line: no terminator can
			// follow, and a lone "." or ".\r" is not content.
			d.fail(err)
			return true
		}
		if buf[need-1] != terminatorLine[need-1] {
			break
		}
		if need == 3 {
			d.r.Discard(3)
			d.err = io.EOF
			return true
		}
	}
	// RFC 5321 4.5.2: the first "." of a line with more characters is
	// deleted. What follows is checked as any other line content.
	d.r.Discard(1)
	d.bol = false
	return false
}

// fail records an I/O error; the end of input inside data is unexpected.
func (d *DataReader) fail(err error) {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	d.err = err
}

// Discard reads and drops the rest of the data through the terminator
// "<CRLF>.<CRLF>", in bounded memory, and returns nil, or the I/O error that
// stopped it. The caller uses it after ErrBareLineEnding or whenever it
// stops reading early (a size limit, a failed write), so the session stays
// in step with the client. After a bare CR or LF the terminator is still
// only CRLF "." CRLF: ".\n", "\n.\n" and "\n.\r\n" do not end the data, as
// they would not for a server downstream that reads CRLF strictly.
// Discard after the data ended returns nil at once.
func (d *DataReader) Discard() error {
	switch d.err {
	case io.EOF:
		return nil
	case nil, ErrBareLineEnding:
	default:
		return d.err
	}
	// Read consumes a CR only together with its LF (or with pendingLF), so
	// the input so far ends in CRLF exactly when bol or pendingLF is set.
	atStart := d.bol
	if d.pendingLF {
		d.r.Discard(1)
		d.pendingLF = false
		atStart = true
	}
	prevCR := false // the last chunk ended in CR
	for {
		line, err := d.r.ReadSlice('\n')
		switch err {
		case nil:
			if atStart && len(line) == 3 && line[0] == '.' && line[1] == '\r' {
				d.err = io.EOF
				return nil
			}
			// A line of ".\r\n" always fits in one slice: bufio's buffer
			// holds at least 16 bytes.
			n := len(line)
			atStart = n >= 2 && line[n-2] == '\r' || n == 1 && prevCR
			prevCR = false
		case bufio.ErrBufferFull:
			atStart = false
			prevCR = line[len(line)-1] == '\r'
		default:
			d.fail(err)
			return d.err
		}
	}
}

// NewDataWriter returns a writer that applies the transparency procedure of
// RFC 5321 4.5.2 for sending DATA: a "." that starts a line is doubled. The
// input should be CRLF text; a bare LF or bare CR is written as CRLF, so
// nothing we send can be read as a different end of data by a lax or a strict
// peer. Close writes the terminator "<CRLF>.<CRLF>", adding a CRLF first when
// the content does not end with one (empty content is just ".\r\n"). Close
// does not close w. Line-length limits are the caller's business.
func NewDataWriter(w io.Writer) io.WriteCloser {
	return &dataWriter{w: w, bol: true}
}

type dataWriter struct {
	w         io.Writer
	bol       bool // the next byte starts a line
	pendingCR bool // the last input byte was CR; its LF (or not) is still to come
	closed    bool
	buf       []byte
}

// writeChunk bounds the buffer a Write uses, whatever the size of its input.
const writeChunk = 4096

var errWriterClosed = errors.New("smtp: write to closed DataWriter")

func (d *dataWriter) Write(p []byte) (int, error) {
	if d.closed {
		return 0, errWriterClosed
	}
	done := 0
	for done < len(p) {
		chunk := p[done:min(len(p), done+writeChunk)]
		if d.buf == nil {
			// Stuffing at most doubles a chunk (every byte a "." at the
			// start of a line, or a bare LF), plus a pending CRLF.
			d.buf = make([]byte, 0, 2*writeChunk+2)
		}
		d.buf = d.stuff(d.buf[:0], chunk)
		if len(d.buf) > 0 {
			if _, err := d.w.Write(d.buf); err != nil {
				return done, err
			}
		}
		done += len(chunk)
	}
	return done, nil
}

// stuff appends the dot-stuffed, CRLF-normalised form of q to out.
func (d *dataWriter) stuff(out, q []byte) []byte {
	for len(q) > 0 {
		if d.pendingCR {
			d.pendingCR = false
			out = append(out, '\r', '\n')
			d.bol = true
			if q[0] == '\n' {
				q = q[1:]
				continue
			}
		}
		if d.bol && q[0] == '.' {
			out = append(out, '.')
		}
		d.bol = false
		i := indexLineEnd(q)
		if i < 0 {
			return append(out, q...)
		}
		out = append(out, q[:i]...)
		switch {
		case q[i] == '\n':
			q = q[i+1:]
		case i+1 == len(q):
			d.pendingCR = true
			return out
		case q[i+1] == '\n':
			q = q[i+2:]
		default:
			q = q[i+1:]
		}
		out = append(out, '\r', '\n')
		d.bol = true
	}
	return out
}

// indexLineEnd returns the index of the first CR or LF in b, or -1.
func indexLineEnd(b []byte) int {
	lf := bytes.IndexByte(b, '\n')
	search := b
	if lf >= 0 {
		search = b[:lf]
	}
	if cr := bytes.IndexByte(search, '\r'); cr >= 0 {
		return cr
	}
	return lf
}

func (d *dataWriter) Close() error {
	if d.closed {
		return nil
	}
	d.closed = true
	var t []byte
	if d.pendingCR {
		t = append(t, '\r', '\n')
		d.bol = true
	}
	if !d.bol {
		t = append(t, '\r', '\n')
	}
	t = append(t, '.', '\r', '\n')
	_, err := d.w.Write(t)
	return err
}
