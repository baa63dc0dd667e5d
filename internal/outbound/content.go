package outbound

import (
	"errors"
	"io"
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
}

// append appends the normal form of p to out.
func (n *normalizer) append(out, p []byte) []byte {
	start := 0 // start of the run of plain bytes not yet copied
	for i := 0; i < len(p); i++ {
		c := p[i]
		if n.prevCR {
			n.prevCR = false
			out = n.endLine(out)
			if c == '\n' {
				start = i + 1
				continue
			}
		}
		switch {
		case c == '\r':
			out = append(out, p[start:i]...)
			start = i + 1
			n.prevCR = true
		case c == '\n':
			out = append(out, p[start:i]...)
			start = i + 1
			out = n.endLine(out)
		default:
			n.lineLen++
			if c >= 0x80 {
				n.info.eightBit = true
			}
		}
	}
	return append(out, p[start:]...)
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
	return append(out, '\r', '\n')
}

// errContentChanged means the content read for sending differs from what
// prepare scanned: the connection is dropped before the data ends, so the
// peer discards the message.
var errContentChanged = errors.New("message content changed while sending")

// copyContent writes the content of open, normalised, to w, and checks
// that it is what prepare saw: its size and no line too long.
func copyContent(w io.Writer, open func() (io.ReadCloser, error), want contentInfo) error {
	rc, err := open()
	if err != nil {
		return err
	}
	defer rc.Close()
	var n normalizer
	buf := make([]byte, 32*1024)
	out := make([]byte, 0, 2*len(buf)+2)
	for {
		k, rerr := rc.Read(buf)
		out = n.append(out[:0], buf[:k])
		if n.info.size > want.size || n.info.longLine != 0 {
			return errContentChanged
		}
		if len(out) > 0 {
			if _, err := w.Write(out); err != nil {
				return err
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	out = n.finish(out[:0])
	if n.info.size != want.size || n.info.longLine != 0 {
		return errContentChanged
	}
	_, err = w.Write(out)
	return err
}
