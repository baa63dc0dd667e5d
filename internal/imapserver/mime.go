package imapserver

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"strings"
)

// A message is never loaded whole: parseStructure reads it once, line by line, and records
// where each MIME part's header and body start and end. FETCH then serves any section,
// and any partial range of it, straight from the stored blob through an io.SectionReader,
// so a 50 MB message costs a 64 KiB buffer. The structure is cached in the store
// (message_meta), keyed by the immutable message id.

// part is one node of a message's MIME tree. Offsets are from the start of the blob.
type part struct {
	HdrStart  int64 `json:"h"`
	BodyStart int64 `json:"b"`
	BodyEnd   int64 `json:"e"`
	Lines     int64 `json:"l,omitempty"`

	Type        string            `json:"t"` // lower case, e.g. "text"
	Subtype     string            `json:"s"` // lower case, e.g. "plain"
	Params      map[string]string `json:"p,omitempty"`
	ID          string            `json:"id,omitempty"`
	Description string            `json:"d,omitempty"`
	Encoding    string            `json:"enc,omitempty"`
	Disposition string            `json:"dsp,omitempty"`
	DispParams  map[string]string `json:"dp,omitempty"`
	Language    []string          `json:"lang,omitempty"`
	Location    string            `json:"loc,omitempty"`

	Children []*part `json:"c,omitempty"` // multipart
	Message  *part   `json:"m,omitempty"` // message/rfc822: the embedded message
}

func (p *part) isMultipart() bool { return p.Type == "multipart" }
func (p *part) isMessage() bool   { return p.Type == "message" && p.Subtype == "rfc822" }

// Limits that keep a hostile message from costing much: deeper nesting is served as opaque
// bodies, and header lines past maxHeaderBytes end the header.
const (
	maxMIMEDepth   = 20
	maxMIMEParts   = 5000
	maxHeaderBytes = 1 << 20
	scanBufSize    = 64 << 10
)

// lineScanner reads lines with their offsets. A line longer than its buffer comes in chunks;
// only a chunk at the start of a line can be a boundary.
type lineScanner struct {
	br      *bufio.Reader
	off     int64 // offset of the next byte to read
	lfs     int64 // line feeds read before off
	line    []byte
	lineOff int64
	lineLFs int64 // line feeds before the current line
	atStart bool  // the current line starts a line
	nextBOL bool  // the next read starts a line
	peeked  bool
	err     error
	parts   int

	// The line before the current one: the length of its line break and whether it was
	// empty, which says where a body that ends at the current line ends.
	prevEOL   int64
	prevEmpty bool

	perLine bool // tests: skip every body line by line (the reference for skipToEnd)

	// src is the whole input when it is in memory (a message from the store's cache or
	// stored inside the database): skipToEnd counts the rest there instead of copying it
	// through br, and br need only hold a line or a header's worth.
	src []byte
}

// byteSource is a reader whose whole content is in memory (the store's memReader).
type byteSource interface{ Bytes() []byte }

// memScanBufSize is the buffer of a scanner over input in memory: lines longer than it come
// in chunks, as for any reader, and bodies with no delimiter to look for are not read
// through it at all.
const memScanBufSize = 4 << 10

// newLineScanner reads r through a buffer fitted to size (0: unknown), so that parsing many
// small messages does not allocate scanBufSize for each.
func newLineScanner(r io.Reader, size int64) *lineScanner {
	n := scanBufSize
	if size > 0 && size < scanBufSize {
		n = max(int(size)+1, 512)
	}
	return &lineScanner{br: bufio.NewReaderSize(r, n), nextBOL: true}
}

// newMemScanner scans src, held in memory, from its start.
func newMemScanner(src []byte) *lineScanner {
	n := min(max(len(src)+1, 512), memScanBufSize)
	return &lineScanner{br: bufio.NewReaderSize(bytes.NewReader(src), n), nextBOL: true, src: src}
}

// next makes the next line current; false at the end of input.
func (sc *lineScanner) next() bool {
	if sc.peeked {
		sc.peeked = false
		return true
	}
	if sc.err != nil {
		return false
	}
	// What the current line says of its end is taken before reading the next one: it is a
	// slice of the reader's buffer, which the read may move or overwrite.
	var prevEOL int64
	var prevEmpty bool
	if sc.line != nil {
		prevEOL = eolLen(sc.line)
		prevEmpty = sc.atStart && int64(len(sc.line)) == prevEOL
	}
	line, err := sc.br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		err = nil
	}
	if len(line) == 0 {
		if err == nil {
			err = io.EOF
		}
		sc.err = err
		return false
	}
	if sc.line != nil {
		sc.prevEOL, sc.prevEmpty = prevEOL, prevEmpty
	}
	sc.line = line
	sc.lineOff = sc.off
	sc.lineLFs = sc.lfs
	sc.atStart = sc.nextBOL
	sc.nextBOL = line[len(line)-1] == '\n'
	sc.off += int64(len(line))
	if sc.nextBOL {
		sc.lfs++
	}
	if err != nil {
		sc.err = err
	}
	return true
}

// unread makes next return the current line again.
func (sc *lineScanner) unread() { sc.peeked = true }

func eolLen(l []byte) int64 {
	switch {
	case bytes.HasSuffix(l, []byte("\r\n")):
		return 2
	case bytes.HasSuffix(l, []byte("\n")):
		return 1
	}
	return 0
}

// skipToEnd is skipBody for a body no delimiter can end (a single-part message, the last
// part of one): it runs to the end of input, and only its line feeds and last byte matter,
// so it counts them a buffer at a time instead of a line at a time (a 100 KiB message has
// 1,300 lines).
func (sc *lineScanner) skipToEnd() bodyEnd {
	sc.peeked = false // an unread line belongs to this body, and is counted already
	if sc.src != nil && sc.err == nil {
		// The input is in memory: what br holds and what it has yet to read are both
		// src[off:].
		if rest := sc.src[min(sc.off, int64(len(sc.src))):]; len(rest) > 0 {
			sc.lfs += int64(bytes.Count(rest, []byte{'\n'}))
			sc.off += int64(len(rest))
			sc.nextBOL = rest[len(rest)-1] == '\n'
		}
		sc.br.Reset(bytes.NewReader(nil))
		sc.err = io.EOF
	}
	for sc.err == nil {
		if sc.br.Buffered() == 0 {
			if _, err := sc.br.Peek(1); err != nil {
				sc.err = err
				break
			}
		}
		b, _ := sc.br.Peek(sc.br.Buffered())
		sc.lfs += int64(bytes.Count(b, []byte{'\n'}))
		sc.off += int64(len(b))
		sc.nextBOL = b[len(b)-1] == '\n'
		sc.br.Discard(len(b))
	}
	return sc.endHere()
}

// bodyEnd is where a body ends and how many lines it has.
type bodyEnd struct {
	off    int64
	lfs    int64 // line feeds before off
	endsLF bool  // the byte before off is a line feed
}

// endBeforeLine: a body that ends at the current line (a delimiter) ends before the line
// break that precedes it (RFC 2046 5.1.1).
func (sc *lineScanner) endBeforeLine() bodyEnd {
	e := bodyEnd{off: sc.lineOff - sc.prevEOL, lfs: sc.lineLFs, endsLF: sc.prevEmpty}
	if sc.prevEOL > 0 {
		e.lfs--
	}
	return e
}

// endHere: a body that ends at the current position (the end of input).
func (sc *lineScanner) endHere() bodyEnd {
	return bodyEnd{off: sc.off, lfs: sc.lfs, endsLF: sc.nextBOL}
}

// lines counts the lines of a body that started at start (with startLFs line feeds before
// it): its line feeds, plus one for an unterminated last line.
func (e bodyEnd) lines(start, startLFs int64) int64 {
	if e.off <= start {
		return 0
	}
	n := e.lfs - startLFs
	if !e.endsLF {
		n++
	}
	return n
}

// boundaryOf reports whether the current line is a delimiter of one of the boundaries
// (innermost last): it returns the index and whether it is the closing delimiter.
func (sc *lineScanner) boundaryOf(bounds []string) (int, bool, bool) {
	if len(bounds) == 0 || !sc.atStart || len(sc.line) < 3 || sc.line[0] != '-' || sc.line[1] != '-' {
		return 0, false, false
	}
	l := bytes.TrimRight(sc.line[2:], " \t\r\n")
	for i := len(bounds) - 1; i >= 0; i-- {
		b := bounds[i]
		if !bytes.HasPrefix(l, []byte(b)) {
			continue
		}
		rest := l[len(b):]
		if len(rest) == 0 {
			return i, false, true
		}
		if string(rest) == "--" {
			return i, true, true
		}
	}
	return 0, false, false
}

// parseStructure reads a whole message and returns its MIME tree.
func parseStructure(r io.Reader) (*part, error) {
	return parseStructureSize(r, 0)
}

// parseStructureSize is parseStructure for a message of about size bytes (0: unknown).
func parseStructureSize(r io.Reader, size int64) (*part, error) {
	if m, ok := r.(byteSource); ok && inMemory(m, size) {
		return parseScanner(newMemScanner(m.Bytes()))
	}
	return parseScanner(newLineScanner(r, size))
}

// inMemory reports whether a message of size bytes is better parsed from m's bytes: all of
// them, and more than a small scanner's buffer (below that, the buffer fitted to the size
// copies the message once and costs no more).
func inMemory(m byteSource, size int64) bool {
	return int64(len(m.Bytes())) == size && size > memScanBufSize
}

func parseScanner(sc *lineScanner) (*part, error) {
	root, _ := sc.parsePart(nil, 0, "")
	if sc.err != nil && !errors.Is(sc.err, io.EOF) {
		return nil, sc.err
	}
	return root, nil
}

// parsePart parses one entity starting at the scanner's position and stops before a
// delimiter line of an enclosing multipart (or at the end). defaultType is "message/rfc822"
// inside multipart/digest.
func (sc *lineScanner) parsePart(bounds []string, depth int, defaultType string) (*part, bodyEnd) {
	sc.parts++
	p := &part{HdrStart: sc.off}
	hdr, ended := sc.readHeader(bounds)
	p.BodyStart = sc.off
	startLFs := sc.lfs
	p.setHeader(hdr, defaultType)
	var end bodyEnd
	switch {
	case ended:
		end = bodyEnd{off: p.BodyStart, lfs: startLFs}
	case p.isMultipart() && p.Params["boundary"] != "" && depth < maxMIMEDepth && sc.parts < maxMIMEParts:
		end = sc.parseMultipart(p, bounds, depth)
	case p.isMessage() && depth < maxMIMEDepth && sc.parts < maxMIMEParts:
		p.Message, end = sc.parsePart(bounds, depth+1, "")
	default:
		end = sc.skipBody(bounds)
	}
	// The line break before a delimiter belongs to the delimiter, even when it was taken
	// for the empty line that ends this entity's header.
	p.BodyStart = max(min(p.BodyStart, end.off), p.HdrStart)
	p.BodyEnd = max(end.off, p.BodyStart)
	if p.Type == "text" || p.isMessage() {
		p.Lines = end.lines(p.BodyStart, startLFs)
	}
	return p, end
}

// readHeader reads header lines up to and including the empty line. ended is true when an
// enclosing delimiter (or the end) came first: the entity has no body.
func (sc *lineScanner) readHeader(bounds []string) (hdr []byte, ended bool) {
	var buf bytes.Buffer
	for sc.next() {
		if _, _, ok := sc.boundaryOf(bounds); ok {
			sc.unread()
			return buf.Bytes(), true
		}
		if sc.atStart && (string(sc.line) == "\r\n" || string(sc.line) == "\n") {
			return buf.Bytes(), false
		}
		if buf.Len() < maxHeaderBytes {
			buf.Write(sc.line)
		}
	}
	return buf.Bytes(), true
}

// skipBody reads up to the next enclosing delimiter (left unread) or the end.
func (sc *lineScanner) skipBody(bounds []string) bodyEnd {
	if len(bounds) == 0 && !sc.perLine {
		return sc.skipToEnd()
	}
	for sc.next() {
		if _, _, ok := sc.boundaryOf(bounds); ok {
			sc.unread()
			return sc.endBeforeLine()
		}
	}
	return sc.endHere()
}

func (sc *lineScanner) parseMultipart(p *part, bounds []string, depth int) bodyEnd {
	b := p.Params["boundary"]
	inner := append(bounds[:len(bounds):len(bounds)], b)
	me := len(inner) - 1
	sc.skipBody(inner) // the preamble
	if !sc.next() {
		return sc.endHere()
	}
	if i, closing, _ := sc.boundaryOf(inner); i != me {
		sc.unread() // an enclosing delimiter: no parts at all
		return sc.endBeforeLine()
	} else if closing {
		return sc.epilogue(bounds)
	}
	childType := ""
	if p.Subtype == "digest" {
		childType = "message/rfc822"
	}
	for {
		child, _ := sc.parsePart(inner, depth+1, childType)
		p.Children = append(p.Children, child)
		if !sc.next() {
			return sc.endHere()
		}
		i, closing, _ := sc.boundaryOf(inner)
		if i != me {
			sc.unread()
			return sc.endBeforeLine()
		}
		if closing || sc.parts >= maxMIMEParts {
			return sc.epilogue(bounds)
		}
	}
}

// epilogue skips what follows a closing delimiter up to an enclosing delimiter; it belongs to
// the multipart's body.
func (sc *lineScanner) epilogue(bounds []string) bodyEnd {
	after := sc.endHere()
	end := sc.skipBody(bounds)
	if end.off < after.off {
		return after
	}
	return end
}

// setHeader fills the content fields from a header block (RFC 2045, RFC 2183, RFC 3066).
func (p *part) setHeader(hdr []byte, defaultType string) {
	fields := parseHeaderFields(hdr)
	ct := fields.get("Content-Type")
	mt, params, err := mime.ParseMediaType(ct)
	if ct == "" || err != nil || !strings.Contains(mt, "/") {
		mt, params = "text/plain", map[string]string{"charset": "us-ascii"}
		if defaultType != "" {
			mt, params = defaultType, nil
		}
	}
	p.Type, p.Subtype, _ = strings.Cut(strings.ToLower(mt), "/")
	p.Params = params
	p.ID = fields.get("Content-Id")
	p.Description = fields.get("Content-Description")
	p.Encoding = strings.ToLower(strings.TrimSpace(fields.get("Content-Transfer-Encoding")))
	if d := fields.get("Content-Disposition"); d != "" {
		if v, dp, err := mime.ParseMediaType(d); err == nil {
			p.Disposition, p.DispParams = v, dp
		}
	}
	if l := fields.get("Content-Language"); l != "" {
		for _, t := range strings.Split(l, ",") {
			if t = strings.TrimSpace(t); t != "" {
				p.Language = append(p.Language, t)
			}
		}
	}
	p.Location = fields.get("Content-Location")
}

// find resolves a section part number path (RFC 9051 6.4.5) to a node. A non-multipart
// entity has one part, itself; a message/rfc822 part's numbers continue into the embedded
// message.
func (p *part) find(path []int) *part {
	cur := p
	for _, n := range path {
		if cur.isMessage() && cur.Message != nil && cur != p {
			cur = cur.Message
		}
		switch {
		case cur.isMultipart() && len(cur.Children) > 0:
			if n < 1 || n > len(cur.Children) {
				return nil
			}
			cur = cur.Children[n-1]
		case n == 1:
			// the body of a single-part entity
		default:
			return nil
		}
	}
	return cur
}

func encodeStructure(p *part) []byte {
	b, _ := json.Marshal(p)
	return b
}

func decodeStructure(b []byte) (*part, error) {
	var p part
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// headerFields is a parsed header block: each field's name and raw value (unfolded lines
// kept as they are, with the line break).
type headerFields []headerField

type headerField struct {
	name string
	raw  []byte // the whole field, name and line breaks included
}

func parseHeaderFields(hdr []byte) headerFields {
	var out headerFields
	for len(hdr) > 0 {
		// A field runs to a line break not followed by white space.
		end := 0
		for {
			i := bytes.IndexByte(hdr[end:], '\n')
			if i < 0 {
				end = len(hdr)
				break
			}
			end += i + 1
			if end >= len(hdr) || (hdr[end] != ' ' && hdr[end] != '\t') {
				break
			}
		}
		raw := hdr[:end]
		hdr = hdr[end:]
		name, _, ok := bytes.Cut(raw, []byte(":"))
		if !ok {
			continue
		}
		out = append(out, headerField{name: strings.TrimSpace(string(name)), raw: raw})
	}
	return out
}

// value returns a field's value unfolded, without the name and surrounding white space.
func (f headerField) value() string {
	_, v, _ := bytes.Cut(f.raw, []byte(":"))
	s := strings.ReplaceAll(string(v), "\r\n", "")
	s = strings.ReplaceAll(s, "\n", "")
	return strings.TrimSpace(s)
}

// get returns the value of the first field with the name (case-insensitive), or "".
func (h headerFields) get(name string) string {
	for _, f := range h {
		if strings.EqualFold(f.name, name) {
			return f.value()
		}
	}
	return ""
}

// filter returns the fields whose names are (keep) or are not (!keep) in names, followed by
// the empty line, as BODY[HEADER.FIELDS (...)] and BODY[HEADER.FIELDS.NOT (...)] serve them.
func (h headerFields) filter(names []string, keep bool) []byte {
	var buf bytes.Buffer
	for _, f := range h {
		in := false
		for _, n := range names {
			if strings.EqualFold(n, f.name) {
				in = true
				break
			}
		}
		if in == keep {
			buf.Write(f.raw)
			if !bytes.HasSuffix(f.raw, []byte("\n")) {
				buf.WriteString("\r\n")
			}
		}
	}
	buf.WriteString("\r\n")
	return buf.Bytes()
}
