package imapserver

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"io"
	"maps"
	"mime/quotedprintable"
	"strings"

	"github.com/emersion/go-imap/v2"
	goimapserver "github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-message"
	_ "github.com/emersion/go-message/charset" // RFC 2047 words in any charset for ENVELOPE
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"

	"yubin/internal/store"
)

// fetchChunk is how many messages one FETCH reads from the database at a time: rows are
// read and released before anything is written, so no read transaction stays open while a
// slow client drains its socket.
const fetchChunk = 256

// Fetch implements FETCH and UID FETCH (RFC 9051 6.4.5).
func (s *session) Fetch(w *goimapserver.FetchWriter, numSet imap.NumSet, options *imap.FetchOptions) (err error) {
	s.wire.startBatch()
	defer func() {
		if e := s.wire.endBatch(); err == nil {
			err = e
		}
	}()
	v := s.sel
	refs := v.resolve(numSet)
	needMeta := options.Envelope || options.BodyStructure != nil
	setSeen := false
	for _, bs := range options.BodySection {
		if len(bs.Part) > 0 || bs.Specifier != imap.PartSpecifierNone {
			needMeta = true
		}
		setSeen = setSeen || !bs.Peek
	}
	for _, bs := range options.BinarySection {
		needMeta = needMeta || len(bs.Part) > 0
		setSeen = setSeen || !bs.Peek
	}
	if len(options.BinarySectionSize) > 0 {
		needMeta = true
	}
	setSeen = setSeen && !v.readOnly
	cw := &cacheWriter{s: s, fresh: map[string]store.MessageMeta{}}
	defer cw.wait()
	if needMeta && metaColumns(options) == store.MetaEnvelope {
		return s.fetchEnvelopes(w, refs, options, cw)
	}
	for len(refs) > 0 {
		n := min(fetchChunk, len(refs))
		chunk := refs[:n]
		refs = refs[n:]
		if err := s.fetchChunk(w, chunk, options, needMeta, setSeen, cw.fresh); err != nil {
			return err
		}
		if len(cw.fresh) >= cacheBatch {
			cw.flush()
		}
	}
	return nil
}

// envChunk is one chunk of a FETCH of envelopes, loaded ahead of writing.
type envChunk struct {
	refs    []msgRef
	entries []store.MessageEntry
	metas   []*meta
	fresh   map[string]store.MessageMeta
	z       zones
	err     error
}

// fetchEnvelopes is Fetch for ENVELOPE with any of FLAGS, UID, INTERNALDATE and RFC822.SIZE,
// which is how clients list a mailbox. It loads (and on first sight parses) the next chunk
// while it writes the current one, so that parsing a large mailbox the first time overlaps
// with answering.
func (s *session) fetchEnvelopes(w *goimapserver.FetchWriter, refs []msgRef, options *imap.FetchOptions, cw *cacheWriter) error {
	load := func() chan envChunk {
		if len(refs) == 0 {
			return nil
		}
		n := min(fetchChunk, len(refs))
		c := envChunk{refs: refs[:n], fresh: map[string]store.MessageMeta{}, z: zones{}}
		refs = refs[n:]
		ch := make(chan envChunk, 1)
		go func() {
			c.entries, c.metas, c.err = s.envelopeEntries(refUIDs(c.refs), c.z, c.fresh)
			ch <- c
		}()
		return ch
	}
	next := load()
	for next != nil {
		c := <-next
		next = load()
		err := c.err
		if err != nil {
			err = s.internal("fetch", err)
		}
		maps.Copy(cw.fresh, c.fresh)
		if len(cw.fresh) >= cacheBatch {
			cw.flush()
		}
		j := 0
		for _, ref := range c.refs {
			if err != nil {
				break
			}
			for j < len(c.entries) && c.entries[j].UID < ref.uid {
				j++
			}
			if j == len(c.entries) || c.entries[j].UID != ref.uid {
				continue // expunged meanwhile
			}
			err = s.fetchOne(w, ref, &c.entries[j], c.metas[j], c.z, options, false)
		}
		if err != nil {
			if next != nil {
				<-next // nothing of the session is used once Fetch returns
			}
			return err
		}
	}
	return nil
}

func (s *session) fetchChunk(w *goimapserver.FetchWriter, refs []msgRef, options *imap.FetchOptions, needMeta, setSeen bool, fresh map[string]store.MessageMeta) error {
	v := s.sel
	var cols store.MetaColumns
	if needMeta {
		cols = metaColumns(options)
	}
	if len(options.BodySection) > 0 || len(options.BinarySection) > 0 || len(options.BinarySectionSize) > 0 {
		cols |= store.MetaOpen
	}
	z := zones{}
	var metas []*meta
	entries, err := s.srv.Store.MessagesWithMeta(s.ctx, v.mbox.ID, refUIDs(refs), cols)
	if err != nil {
		return s.internal("fetch", err)
	}
	// RFC 9051 6.4.5: fetching a body without .PEEK sets \Seen, and the new flags are
	// returned with the data.
	var flagsChanged map[uint32]bool
	if setSeen {
		var unseen []uint32
		for _, m := range entries {
			if !hasFlag(m.Flags, `\Seen`) {
				unseen = append(unseen, m.UID)
			}
		}
		if len(unseen) > 0 {
			changed, modseq, err := s.srv.Store.StoreFlags(s.ctx, v.mbox.ID, unseen, store.FlagsAdd, []string{`\Seen`})
			if err != nil {
				return s.internal("fetch", err)
			}
			v.own[modseq] = true
			flagsChanged = map[uint32]bool{}
			j := 0
			for _, c := range changed {
				for j < len(entries) && entries[j].UID < c.UID {
					j++
				}
				if j < len(entries) && entries[j].UID == c.UID {
					entries[j].Flags = c.Flags
					flagsChanged[c.UID] = true
				}
			}
		}
	}
	if needMeta {
		if metas, err = s.entryMeta(entries, cols, z, fresh); err != nil {
			return s.internal("fetch", err)
		}
	}
	j := 0
	for _, ref := range refs {
		for j < len(entries) && entries[j].UID < ref.uid {
			j++
		}
		if j == len(entries) || entries[j].UID != ref.uid {
			continue // expunged meanwhile: RFC 9051 allows sending nothing for it
		}
		var md *meta
		if metas != nil {
			md = metas[j]
		}
		if err := s.fetchOne(w, ref, &entries[j], md, z, options, flagsChanged[ref.uid]); err != nil {
			return err
		}
	}
	return nil
}

// metaColumns says which cached columns a FETCH needs.
func metaColumns(options *imap.FetchOptions) store.MetaColumns {
	var cols store.MetaColumns
	if options.Envelope {
		cols |= store.MetaEnvelope
	}
	if options.BodyStructure != nil || len(options.BinarySection) > 0 || len(options.BinarySectionSize) > 0 {
		cols |= store.MetaStructure
	}
	for _, bs := range options.BodySection {
		if len(bs.Part) > 0 || bs.Specifier != imap.PartSpecifierNone {
			cols |= store.MetaHeader | store.MetaStructure
		}
	}
	return cols
}

func hasFlag(flags []string, f string) bool {
	for _, g := range flags {
		if strings.EqualFold(f, g) {
			return true
		}
	}
	return false
}

// fetchOne writes one FETCH response. Body data is streamed from the blob.
func (s *session) fetchOne(w *goimapserver.FetchWriter, ref msgRef, e *store.MessageEntry, md *meta, z zones, options *imap.FetchOptions, flagsChanged bool) error {
	m := &e.MessageInfo
	var blob store.MessageReader
	if len(options.BodySection) > 0 || len(options.BinarySection) > 0 || len(options.BinarySectionSize) > 0 {
		r, err := e.Open(s.ctx)
		if err != nil {
			return s.internal("fetch", err)
		}
		defer r.Close()
		blob = r
	}
	// Compute what can fail before the response starts.
	type sectionData struct {
		r    io.Reader
		size int64
	}
	bodies := make([]sectionData, len(options.BodySection))
	for i, bs := range options.BodySection {
		r, size, err := bodySection(blob, m.Size, md, bs)
		if err != nil {
			return s.internal("fetch", err)
		}
		bodies[i] = sectionData{r, size}
	}
	binaries := make([]sectionData, len(options.BinarySection))
	for i, bs := range options.BinarySection {
		r, size, err := binarySection(blob, m.Size, md, bs.Part, bs.Partial)
		if err != nil {
			return err
		}
		binaries[i] = sectionData{r, size}
	}
	binarySizes := make([]int64, len(options.BinarySectionSize))
	for i, bs := range options.BinarySectionSize {
		_, size, err := binarySection(blob, m.Size, md, bs.Part, nil)
		if err != nil {
			return err
		}
		binarySizes[i] = size
	}

	rw := w.CreateMessage(ref.seq)
	if options.UID {
		rw.WriteUID(imap.UID(ref.uid))
	}
	if options.Flags || flagsChanged {
		rw.WriteFlags(toFlags(m.Flags))
	}
	if options.InternalDate {
		rw.WriteInternalDate(m.InternalDate)
	}
	if options.RFC822Size {
		rw.WriteRFC822Size(m.Size)
	}
	if options.Envelope {
		rw.WriteEnvelope(md.envelope(z))
	}
	if options.BodyStructure != nil {
		rw.WriteBodyStructure(s.bodyStructure(md.structure(), blob, m.MessageID))
	}
	for i, bs := range options.BodySection {
		wc := rw.WriteBodySection(bs, bodies[i].size)
		if _, err := io.Copy(wc, bodies[i].r); err != nil {
			wc.Close()
			return err
		}
		if err := wc.Close(); err != nil {
			return err
		}
	}
	for i, bs := range options.BinarySection {
		wc := rw.WriteBinarySection(bs, binaries[i].size)
		if _, err := io.Copy(wc, binaries[i].r); err != nil {
			wc.Close()
			return err
		}
		if err := wc.Close(); err != nil {
			return err
		}
	}
	for i, bs := range options.BinarySectionSize {
		rw.WriteBinarySectionSize(bs, uint32(binarySizes[i]))
	}
	return rw.Close()
}

// clip applies a partial range <offset.size> to [start, end).
func clip(start, end int64, p *imap.SectionPartial) (int64, int64) {
	if p == nil {
		return start, end
	}
	s := min(start+p.Offset, end)
	e := min(s+p.Size, end)
	return s, e
}

// bodySection returns a reader for a BODY[...] section and its size (RFC 9051 6.4.5).
// Sections that are byte ranges of the blob are streamed; only HEADER.FIELDS is built in
// memory (from the header, which is bounded).
func bodySection(blob io.ReaderAt, size int64, md *meta, bs *imap.FetchItemBodySection) (io.Reader, int64, error) {
	rng := func(start, end int64) (io.Reader, int64, error) {
		s, e := clip(start, end, bs.Partial)
		return io.NewSectionReader(blob, s, e-s), e - s, nil
	}
	mem := func(b []byte) (io.Reader, int64, error) {
		s, e := clip(0, int64(len(b)), bs.Partial)
		return bytes.NewReader(b[s:e]), e - s, nil
	}
	if len(bs.Part) == 0 && bs.Specifier == imap.PartSpecifierNone {
		return rng(0, size)
	}
	root := md.structure()
	target := root
	if len(bs.Part) > 0 {
		target = root.find(bs.Part)
		if target == nil {
			return mem(nil)
		}
	}
	switch bs.Specifier {
	case imap.PartSpecifierNone:
		return rng(target.BodyStart, target.BodyEnd)
	case imap.PartSpecifierMIME:
		return rng(target.HdrStart, target.BodyStart)
	}
	msg := root
	if len(bs.Part) > 0 {
		if !target.isMessage() || target.Message == nil {
			return mem(nil)
		}
		msg = target.Message
	}
	if bs.Specifier == imap.PartSpecifierText {
		return rng(msg.BodyStart, msg.BodyEnd)
	}
	if len(bs.HeaderFields) == 0 && len(bs.HeaderFieldsNot) == 0 {
		return rng(msg.HdrStart, msg.BodyStart)
	}
	hdr := md.header
	if msg != root {
		hdr = make([]byte, min(msg.BodyStart-msg.HdrStart, maxHeaderBytes))
		if _, err := blob.ReadAt(hdr, msg.HdrStart); err != nil && err != io.EOF {
			return nil, 0, err
		}
	}
	fields := parseHeaderFields(hdr)
	if len(bs.HeaderFields) > 0 {
		return mem(fields.filter(bs.HeaderFields, true))
	}
	return mem(fields.filter(bs.HeaderFieldsNot, false))
}

// binarySection returns a BINARY[...] section (RFC 3516, RFC 9051 6.4.5): the part's content
// with its transfer encoding removed. The size has to be known before the literal, so the
// part is decoded twice (once counting) rather than held in memory.
func binarySection(blob io.ReaderAt, size int64, md *meta, path []int, partial *imap.SectionPartial) (io.Reader, int64, error) {
	if len(path) == 0 {
		s, e := clip(0, size, partial)
		return io.NewSectionReader(blob, s, e-s), e - s, nil
	}
	target := md.structure().find(path)
	if target == nil || target.isMultipart() {
		return bytes.NewReader(nil), 0, nil
	}
	open := func() (io.Reader, error) {
		raw := io.NewSectionReader(blob, target.BodyStart, target.BodyEnd-target.BodyStart)
		switch target.Encoding {
		case "", "7bit", "8bit", "binary":
			return raw, nil
		case "base64":
			return base64.NewDecoder(base64.StdEncoding, raw), nil
		case "quoted-printable":
			return quotedprintable.NewReader(raw), nil
		}
		return nil, no(imap.ResponseCodeUnknownCTE, "Unknown Content-Transfer-Encoding")
	}
	r, err := open()
	if err != nil {
		return nil, 0, err
	}
	n, err := io.Copy(io.Discard, bufio.NewReader(r))
	if err != nil {
		return nil, 0, no(imap.ResponseCodeUnknownCTE, "Content cannot be decoded")
	}
	r, _ = open()
	s, e := clip(0, n, partial)
	if _, err := io.CopyN(io.Discard, r, s); err != nil {
		return nil, 0, err
	}
	return io.LimitReader(r, e-s), e - s, nil
}

// envelope builds the ENVELOPE structure (RFC 9051 7.5.2) from header fields.
func envelope(fields headerFields) *imap.Envelope {
	var h mail.Header
	for i := len(fields) - 1; i >= 0; i-- {
		h.AddRaw(fields[i].raw)
	}
	env := &imap.Envelope{}
	env.Date, _ = parseDate(h.Get("Date"))
	if subj, err := h.Subject(); err == nil {
		env.Subject = subj
	} else {
		env.Subject = h.Get("Subject")
	}
	env.From = addressList(h, "From")
	env.Sender = addressList(h, "Sender")
	env.ReplyTo = addressList(h, "Reply-To")
	env.To = addressList(h, "To")
	env.Cc = addressList(h, "Cc")
	env.Bcc = addressList(h, "Bcc")
	env.InReplyTo, _ = h.MsgIDList("In-Reply-To")
	env.MessageID, _ = h.MessageID()
	return env
}

func addressList(h mail.Header, key string) []imap.Address {
	list, err := h.AddressList(key)
	if err != nil {
		return nil
	}
	var out []imap.Address
	for _, a := range list {
		mbox, host, ok := strings.Cut(a.Address, "@")
		if i := strings.LastIndexByte(a.Address, '@'); i >= 0 {
			mbox, host, ok = a.Address[:i], a.Address[i+1:], true
		}
		if !ok {
			continue
		}
		out = append(out, imap.Address{Name: a.Name, Mailbox: mbox, Host: host})
	}
	return out
}

// bodyStructure converts a parsed MIME tree into go-imap's BODYSTRUCTURE (always the
// extended form; the library writes the short BODY form from it).
func (s *session) bodyStructure(p *part, blob io.ReaderAt, id string) imap.BodyStructure {
	if p.isMultipart() && len(p.Children) > 0 {
		mp := &imap.BodyStructureMultiPart{
			Subtype: p.Subtype,
			Extended: &imap.BodyStructureMultiPartExt{
				Params:      p.Params,
				Disposition: disposition(p),
				Language:    p.Language,
				Location:    p.Location,
			},
		}
		for _, c := range p.Children {
			mp.Children = append(mp.Children, s.bodyStructure(c, blob, id))
		}
		return mp
	}
	typ, sub := p.Type, p.Subtype
	if p.isMultipart() {
		typ, sub = "text", "plain" // a multipart without parts is served as its raw body
	}
	sp := &imap.BodyStructureSinglePart{
		Type:        typ,
		Subtype:     sub,
		Params:      p.Params,
		ID:          p.ID,
		Description: p.Description,
		Encoding:    p.Encoding,
		Size:        uint32(p.BodyEnd - p.BodyStart),
		Extended: &imap.BodyStructureSinglePartExt{
			Disposition: disposition(p),
			Language:    p.Language,
			Location:    p.Location,
		},
	}
	switch {
	case p.isMessage() && p.Message != nil:
		sp.MessageRFC822 = &imap.BodyStructureMessageRFC822{
			Envelope:      s.embeddedEnvelope(p.Message, blob, id),
			BodyStructure: s.bodyStructure(p.Message, blob, id),
			NumLines:      p.Lines,
		}
	case typ == "text":
		sp.Text = &imap.BodyStructureText{NumLines: p.Lines}
	}
	return sp
}

// embeddedEnvelope reads the header of an attached message for its ENVELOPE.
func (s *session) embeddedEnvelope(p *part, blob io.ReaderAt, id string) *imap.Envelope {
	if blob == nil {
		r, _, err := s.srv.Store.OpenMessage(s.ctx, id)
		if err != nil {
			return &imap.Envelope{}
		}
		defer r.Close()
		blob = r
	}
	hdr := make([]byte, min(p.BodyStart-p.HdrStart, maxHeaderBytes))
	if _, err := blob.ReadAt(hdr, p.HdrStart); err != nil && err != io.EOF {
		return &imap.Envelope{}
	}
	return envelope(parseHeaderFields(hdr))
}

func disposition(p *part) *imap.BodyStructureDisposition {
	if p.Disposition == "" {
		return nil
	}
	return &imap.BodyStructureDisposition{Value: p.Disposition, Params: p.DispParams}
}

// parseMailHeader parses a header block for go-message (used by SEARCH).
func parseMailHeader(hdr []byte) mail.Header {
	h, err := textproto.ReadHeader(bufio.NewReader(io.MultiReader(bytes.NewReader(hdr), strings.NewReader("\r\n"))))
	if err != nil {
		return mail.Header{}
	}
	return mail.Header{Header: message.Header{Header: h}}
}
