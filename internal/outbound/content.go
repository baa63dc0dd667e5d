package outbound

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"sync"
)

// contentInfo describes the content as it goes on the wire, before
// dot-stuffing.
type contentInfo struct {
	size     int64 // octets: lines ending in CRLF, a final CRLF added when missing
	longLine int   // number (1-based) of the first line over maxLine octets, 0 if none
	longLen  int   // its length without CRLF
	lines    int
	eightBit bool // a byte >= 0x80
}

// normalizer turns content into CRLF text: a bare LF and a bare CR each
// become CRLF, and a last line without a line ending gets one. These are the
// rules of smtp.NewDataWriter, so that DATA and BDAT send the same octets
// and the size scan counts them. It measures lines as it goes.
type normalizer struct {
	info    contentInfo
	lineLen int
	prevCR  bool // the last byte seen was a CR whose LF (or not) is still to come
	// stuff doubles a dot that starts a line (RFC 5321 4.5.2), as DATA sends it; the counts
	// in info stay those of the content before stuffing.
	stuff bool
	// count only measures: append returns out as it was, without the normal form.
	count bool
}

// append appends the normal form of p to out. It runs twice over every relayed message, so
// it works a line at a time rather than a byte at a time: whole CRLF lines, the usual
// content, go through lines; anything else (a bare CR or LF, a line split between two
// calls) through general.
func (n *normalizer) append(out, p []byte) []byte {
	if n.prevCR || n.lineLen > 0 {
		// Finish the line the last call left open.
		k := bytes.IndexByte(p, '\n')
		if k < 0 {
			return n.general(out, p)
		}
		out = n.general(out, p[:k+1])
		p = p[k+1:]
	}
	// Now at the start of a line. The whole lines of p, if they are all CRLF lines: as many
	// CRs as LFs, and (checked in lines) each LF right after a CR, leave no bare CR.
	if k := bytes.LastIndexByte(p, '\n'); k > 0 && p[0] != '\n' {
		whole := p[:k+1]
		if bytes.Count(whole, []byte{'\r'}) == bytes.Count(whole, []byte{'\n'}) {
			if !n.info.eightBit && hasHighBit(whole) {
				n.info.eightBit = true
			}
			out = n.lines(out, whole)
			p = p[k+1:]
		}
	}
	return n.general(out, p)
}

// lines appends b, whole lines that hold as many CRs as LFs, from the start of a line. If
// every LF comes right after a CR, those are all the CRs and every line is a CRLF line;
// otherwise some line held a bare CR, and lines undoes what it did and hands all of b to
// general. 8-bit content is the caller's to note.
func (n *normalizer) lines(out, b []byte) []byte {
	start, info := len(out), n.info
	run := 0 // b[run:i] is still to append: copied in runs, not line by line
	for i := 0; i < len(b); {
		k := bytes.IndexByte(b[i:], '\n')
		if k < 1 || b[i+k-1] != '\r' {
			n.info = info
			return n.general(out[:start], b)
		}
		text := k - 1 // the line without its CRLF
		n.info.lines++
		n.info.size += int64(text) + 2
		if text > maxLine && n.info.longLine == 0 {
			n.info.longLine, n.info.longLen = n.info.lines, text
		}
		if n.stuff && b[i] == '.' && !n.count {
			out = append(append(out, b[run:i]...), '.')
			run = i
		}
		i += k + 1
	}
	if n.count {
		return out
	}
	return append(out, b[run:]...)
}

// general appends the normal form of p, whatever it holds, from where the last call left.
func (n *normalizer) general(out, p []byte) []byte {
	for len(p) > 0 {
		if n.prevCR {
			n.prevCR = false
			out = n.endLine(out)
			if p[0] == '\n' {
				p = p[1:]
				continue
			}
		}
		seg, lf := p, false
		if k := bytes.IndexByte(p, '\n'); k >= 0 {
			seg, lf = p[:k], true
		}
		if c := bytes.IndexByte(seg, '\r'); c >= 0 && c < len(seg)-1 {
			// A bare CR inside the line: it ends a line of its own.
			out = n.plain(out, seg[:c])
			out = n.endLine(out)
			p = p[c+1:]
			continue
		}
		crLast := len(seg) > 0 && seg[len(seg)-1] == '\r'
		if crLast {
			seg = seg[:len(seg)-1]
		}
		out = n.plain(out, seg)
		switch {
		case lf:
			out = n.endLine(out)
			p = p[len(seg)+boolInt(crLast)+1:]
		case crLast:
			n.prevCR = true // its LF, or not, comes with the next chunk
			p = nil
		default:
			p = nil
		}
	}
	return out
}

// plain appends bytes that hold no line ending.
func (n *normalizer) plain(out, b []byte) []byte {
	n.lineLen += len(b)
	if !n.info.eightBit && hasHighBit(b) {
		n.info.eightBit = true
	}
	if n.count {
		return out
	}
	if n.stuff && n.lineLen == len(b) && len(b) > 0 && b[0] == '.' {
		out = append(out, '.')
	}
	return append(out, b...)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// hasHighBit reports a byte >= 0x80, eight bytes at a time.
func hasHighBit(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b)&0x8080808080808080 != 0 {
			return true
		}
		b = b[8:]
	}
	for _, c := range b {
		if c >= 0x80 {
			return true
		}
	}
	return false
}

// finish appends what the end of the content needs: the CRLF of a last
// line without one.
func (n *normalizer) finish(out []byte) []byte {
	if n.prevCR || n.lineLen > 0 {
		n.prevCR = false
		out = n.endLine(out)
	}
	return out
}

func (n *normalizer) endLine(out []byte) []byte {
	n.info.lines++
	if n.lineLen > maxLine && n.info.longLine == 0 {
		n.info.longLine, n.info.longLen = n.info.lines, n.lineLen
	}
	n.info.size += int64(n.lineLen) + 2
	n.lineLen = 0
	if n.count {
		return out
	}
	return append(out, '\r', '\n')
}

// errContentChanged means the content read for sending differs from what
// prepare scanned: the connection is dropped before the data ends, so the
// peer discards the message.
var errContentChanged = errors.New("message content changed while sending")

// copyContent writes the content of open, normalised, to w, and checks
// that it is what prepare saw: its size and no line too long.
func copyContent(w io.Writer, open func() (io.ReadCloser, error), want contentInfo) error {
	return copyContentStuffed(w, open, want, false)
}

// copyContentStuffed is copyContent, with a dot that starts a line doubled when stuff is set:
// the content of DATA, before its final ".\r\n", in the same pass as the normalisation.
func copyContentStuffed(w io.Writer, open func() (io.ReadCloser, error), want contentInfo, stuff bool) error {
	_, err := normalizeContent(open, stuff, func(chunk []byte, sofar contentInfo, last bool) error {
		if sofar.size > want.size || last && sofar.size != want.size || sofar.longLine != 0 {
			return errContentChanged
		}
		if len(chunk) == 0 {
			return nil
		}
		_, err := w.Write(chunk)
		return err
	})
	return err
}

// contentBufs are normalizeContent's buffers: what it reads, and its normal form (at most
// twice as long, every byte a bare CR or LF, plus a CR carried over; a bare CR or LF can
// be followed by a dot to double, which still fits: "\r." is 2 bytes in, "\r\n.." 4 out).
// They are pooled: it runs
// twice for every relayed message, and allocating them each time was most of a small
// message's garbage.
type contentBufs struct {
	in  [32 << 10]byte
	out [2*(32<<10) + 2]byte
}

var contentBufPool = sync.Pool{New: func() any { return new(contentBufs) }}

// inMemory is content whose bytes are all in memory (see queue.Delivery.Open): they are
// normalised where they are, without a copy into normalizeContent's buffer. The caller must
// not modify them.
type inMemory interface{ Bytes() []byte }

// normalizeContent reads the content of open through the normalizer and hands each
// normalised chunk to emit (nil: only count), with the counts so far; last marks the final
// chunk. It returns the counts of the whole content.
func normalizeContent(open func() (io.ReadCloser, error), stuff bool, emit func(chunk []byte, sofar contentInfo, last bool) error) (contentInfo, error) {
	rc, err := open()
	if err != nil {
		return contentInfo{}, err
	}
	defer rc.Close()
	n := normalizer{stuff: stuff, count: emit == nil}
	bufs := contentBufPool.Get().(*contentBufs)
	defer contentBufPool.Put(bufs)
	buf, out := bufs.in[:], bufs.out[:0]
	var mem []byte
	if m, ok := rc.(inMemory); ok {
		mem = m.Bytes()
	}
	for {
		var k int
		var rerr error
		if mem != nil {
			// In pieces of the buffer's size, so that a normal form fits in out.
			chunk := mem[:min(len(mem), len(buf))]
			mem = mem[len(chunk):]
			out = n.append(out[:0], chunk)
			if len(mem) == 0 {
				rerr = io.EOF
			}
		} else {
			k, rerr = rc.Read(buf)
			out = n.append(out[:0], buf[:k])
		}
		if emit != nil {
			if err := emit(out, n.info, false); err != nil {
				return n.info, err
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return n.info, rerr
		}
	}
	out = n.finish(out[:0])
	if emit != nil {
		if err := emit(out, n.info, true); err != nil {
			return n.info, err
		}
	}
	return n.info, nil
}
