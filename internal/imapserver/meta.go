package imapserver

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"

	"github.com/emersion/go-imap/v2"

	"yubin/internal/store"
)

// What FETCH and SEARCH derive from a message's bytes is computed once and cached in the
// store (message_meta, keyed by the immutable message id): the header block, the MIME
// structure, the finished ENVELOPE (envcache.go) and the text header SEARCH scans. A FETCH
// reads the columns it needs along with the mailbox rows (store.MessagesWithMeta); messages
// not parsed yet are parsed on every CPU, and cached in the background while the FETCH
// goes on.

// meta is what FETCH and SEARCH derive from a message's bytes. A cached entry holds only the
// columns the command asked the store for; the rest is derived from the header on demand.
type meta struct {
	header  []byte
	rootEnc []byte // encoded structure, decoded on first use (ENVELOPE and SEARCH need only the header)
	root    *part
	fields  headerFields // parsed lazily
	envEnc  []byte       // cached ENVELOPE (envcache.go), or nil
	env     *imap.Envelope
}

func (m *meta) structure() *part {
	if m.root == nil {
		root, err := decodeStructure(m.rootEnc)
		if err != nil {
			root = &part{Type: "text", Subtype: "plain", BodyStart: int64(len(m.header))}
		}
		m.root = root
	}
	return m.root
}

func (m *meta) headerFields() headerFields {
	if m.fields == nil {
		m.fields = parseHeaderFields(m.header)
	}
	return m.fields
}

func (m *meta) envelope(z zones) *imap.Envelope {
	if m.env == nil && m.envEnc != nil {
		m.env, _ = decodeEnvelope(m.envEnc, z)
	}
	if m.env == nil {
		m.env = envelope(m.headerFields())
	}
	return m.env
}

// storeMeta is the store's cache entry for a freshly parsed message.
func (m *meta) storeMeta() store.MessageMeta {
	env := m.envelope(zones{})
	var structure []byte // empty: not parsed yet
	if m.root != nil {
		structure = encodeStructure(m.root)
	}
	return store.MessageMeta{
		Header:    m.header,
		Structure: structure,
		Envelope:  encodeEnvelope(env),
		Search:    searchText(m.headerFields()),
	}
}

// cacheBatch is how many fresh parses a FETCH collects before caching them: each write is a
// durable transaction, so a first FETCH of a large mailbox should not pay one per chunk.
const cacheBatch = 2048

// cacheWriter stores a FETCH's fresh parses in the store's cache, one batch at a time in the
// background while the FETCH goes on parsing and answering; the FETCH waits for the last
// batch before it completes, so the next command finds everything cached. A failure only
// costs a parse later.
type cacheWriter struct {
	s     *session
	fresh map[string]store.MessageMeta // being filled
	done  chan struct{}                // closed when the batch in flight is written; nil: none
}

func (c *cacheWriter) flush() {
	c.waitInFlight()
	if len(c.fresh) == 0 {
		return
	}
	batch := c.fresh
	c.fresh = map[string]store.MessageMeta{}
	c.done = make(chan struct{})
	go func(done chan struct{}) {
		defer close(done)
		if err := c.s.srv.Store.PutMessageMeta(c.s.ctx, batch); err != nil {
			c.s.log.Warn("imap: caching message structure failed", "err", err)
		}
	}(c.done)
}

func (c *cacheWriter) waitInFlight() {
	if c.done != nil {
		<-c.done
		c.done = nil
	}
}

// wait writes what is left and waits for it.
func (c *cacheWriter) wait() {
	c.flush()
	c.waitInFlight()
}

// entryMeta returns the parse of each entry (by index): the cached columns, or for a message
// not parsed yet, a parse from its bytes, which it adds to fresh for the cache. Messages are
// parsed on every CPU at once: the first FETCH of a large mailbox is all parsing.
//
// A FETCH that needs no MIME structure (ENVELOPE) reads only the message's header; the
// structure is then cached empty, and filled by the first command that needs it.
func (s *session) entryMeta(entries []store.MessageEntry, cols store.MetaColumns, z zones, fresh map[string]store.MessageMeta) ([]*meta, error) {
	out := make([]*meta, len(entries))
	full := cols&store.MetaStructure != 0
	var todo []int
	for i := range entries {
		e := &entries[i]
		if e.Cached && !(full && len(e.Meta.Structure) == 0) {
			m := &meta{header: e.Meta.Header, rootEnc: e.Meta.Structure}
			if e.Meta.Envelope == nil {
				out[i] = m
				continue
			}
			// A cached envelope that does not decode (an older format) is rebuilt from
			// the message, since its header was not read.
			if env, err := decodeEnvelope(e.Meta.Envelope, z); err == nil {
				m.env = env
				out[i] = m
				continue
			}
		}
		todo = append(todo, i)
	}
	if len(todo) == 0 {
		return out, nil
	}
	caches := make([]*store.MessageMeta, len(entries))
	errs := make([]error, len(entries))
	work := make(chan int)
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(todo)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				e := &entries[i]
				m, err := s.parseEntry(e, full)
				if err != nil {
					errs[i] = err
					continue
				}
				out[i] = m
				if !e.Cached || (full && len(e.Meta.Structure) == 0) {
					c := m.storeMeta()
					caches[i] = &c
				}
			}
		}()
	}
	for _, i := range todo {
		work <- i
	}
	close(work)
	wg.Wait()
	for _, i := range todo {
		if errs[i] != nil {
			return nil, errs[i]
		}
		if c := caches[i]; c != nil {
			fresh[entries[i].MessageID] = *c
		}
	}
	return out, nil
}

// loadMeta returns the parsed header (and with needStructure, the structure) of each message,
// from the store's cache or by reading the message once (and then caching it).
func (s *session) loadMeta(infos []store.MessageInfo, needStructure bool) (map[string]*meta, error) {
	ids := make([]string, 0, len(infos))
	for _, m := range infos {
		ids = append(ids, m.MessageID)
	}
	cached, err := s.srv.Store.GetMessageMeta(s.ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make(map[string]*meta, len(ids))
	fresh := map[string]store.MessageMeta{}
	for _, id := range ids {
		if _, ok := out[id]; ok {
			continue
		}
		if c, ok := cached[id]; ok && !(needStructure && len(c.Structure) == 0) {
			out[id] = &meta{header: c.Header, rootEnc: c.Structure, envEnc: c.Envelope}
			continue
		}
		m, err := s.parseMessage(id)
		if err != nil {
			return nil, err
		}
		out[id] = m
		fresh[id] = m.storeMeta()
	}
	if len(fresh) > 0 {
		if err := s.srv.Store.PutMessageMeta(s.ctx, fresh); err != nil {
			s.log.Warn("imap: caching message structure failed", "err", err)
		}
	}
	return out, nil
}

func (s *session) parseMessage(id string) (*meta, error) {
	r, _, err := s.srv.Store.OpenMessage(s.ctx, id)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return parseReader(r, id, 0, true)
}

func (s *session) parseEntry(e *store.MessageEntry, full bool) (*meta, error) {
	r, err := e.Open(s.ctx)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return parseReader(r, e.MessageID, e.Size, full)
}

// headerReadSize is the buffer for reading only a message's header.
const headerReadSize = 8 << 10

// parseReader parses a message of about size bytes (0: unknown): its header and, when full,
// its MIME structure. The header is the same either way: the bytes up to and including the
// empty line that ends it, at most maxHeaderBytes.
func parseReader(r store.MessageReader, id string, size int64, full bool) (*meta, error) {
	if !full {
		sc := newLineScanner(r, min(size, headerReadSize))
		sc.readHeader(nil)
		if sc.err != nil && !errors.Is(sc.err, io.EOF) {
			return nil, fmt.Errorf("read header of message %s: %w", id, sc.err)
		}
		header := make([]byte, min(sc.off, maxHeaderBytes))
		if _, err := r.ReadAt(header, 0); err != nil && err != io.EOF {
			return nil, fmt.Errorf("read header of message %s: %w", id, err)
		}
		return &meta{header: header}, nil
	}
	root, err := parseStructureSize(r, size)
	if err != nil {
		return nil, fmt.Errorf("parse message %s: %w", id, err)
	}
	hlen := min(root.BodyStart-root.HdrStart, maxHeaderBytes)
	header := make([]byte, hlen)
	if _, err := r.ReadAt(header, root.HdrStart); err != nil && err != io.EOF {
		return nil, fmt.Errorf("read header of message %s: %w", id, err)
	}
	return &meta{header: header, root: root}, nil
}

// IndexMessage parses a stored message completely and returns its cache entry: what a
// store would cache at delivery, so that even the first FETCH or SEARCH of a message needs
// no parse (see the store's putMetaTx).
func IndexMessage(r io.ReaderAt, size int64) (store.MessageMeta, error) {
	var mr store.MessageReader = readerAtReader{io.NewSectionReader(r, 0, size)}
	if m, ok := r.(byteSource); ok && inMemory(m, size) {
		mr = memMessage{bytes.NewReader(m.Bytes()), m.Bytes()}
	}
	m, err := parseReader(mr, "", size, true)
	if err != nil {
		return store.MessageMeta{}, err
	}
	return m.storeMeta(), nil
}

// readerAtReader adapts a SectionReader to store.MessageReader for parseReader.
type readerAtReader struct{ *io.SectionReader }

func (readerAtReader) Close() error { return nil }

// memMessage is a message in memory, read as a store.MessageReader that also gives its bytes
// (byteSource) to the parser.
type memMessage struct {
	*bytes.Reader
	b []byte
}

func (memMessage) Close() error    { return nil }
func (m memMessage) Bytes() []byte { return m.b }

// envCache keeps the size and decoded ENVELOPE of recently fetched messages in memory, keyed
// by the immutable message id, so that listing a large mailbox again reads only its own rows
// (UID, flags, date) from the database: what Dovecot keeps in its memory-mapped index. It
// holds at most envCacheMax messages; when full it forgets arbitrary ones. The envelopes are
// shared between sessions and never modified.
type envCache struct {
	mu sync.Mutex
	m  map[string]memEnvelope
}

type memEnvelope struct {
	size int64
	env  *imap.Envelope
}

const envCacheMax = 50000

func (c *envCache) put(id string, e memEnvelope) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]memEnvelope{}
	}
	if len(c.m) >= envCacheMax {
		for k := range c.m {
			delete(c.m, k)
			if len(c.m) < envCacheMax*7/8 {
				break
			}
		}
	}
	c.m[id] = e
}

// envelopeEntries is MessagesWithMeta(MetaEnvelope) for a FETCH of envelopes (with any of
// FLAGS, UID, INTERNALDATE, RFC822.SIZE): the mailbox rows alone, completed from envCache,
// and only the messages not in memory read with their cached columns (or parsed).
func (s *session) envelopeEntries(uids []uint32, z zones, fresh map[string]store.MessageMeta) ([]store.MessageEntry, []*meta, error) {
	mbox := s.sel.mbox.ID
	entries, err := s.srv.Store.MessagesWithMeta(s.ctx, mbox, uids, store.MetaEntryOnly)
	if err != nil {
		return nil, nil, err
	}
	metas := make([]*meta, len(entries))
	var missing []uint32
	c := &s.srv.envs
	c.mu.Lock()
	for i := range entries {
		if me, ok := c.m[entries[i].MessageID]; ok {
			entries[i].Size = me.size
			metas[i] = &meta{env: me.env}
		} else {
			missing = append(missing, entries[i].UID)
		}
	}
	c.mu.Unlock()
	if len(missing) == 0 {
		return entries, metas, nil
	}
	more, err := s.srv.Store.MessagesWithMeta(s.ctx, mbox, missing, store.MetaEnvelope)
	if err != nil {
		return nil, nil, err
	}
	mm, err := s.entryMeta(more, store.MetaEnvelope, z, fresh)
	if err != nil {
		return nil, nil, err
	}
	// Both reads are in UID order. An entry expunged between them is dropped.
	outE := entries[:0]
	outM := metas[:0]
	k := 0
	for i := range entries {
		if metas[i] != nil {
			outE, outM = append(outE, entries[i]), append(outM, metas[i])
			continue
		}
		for k < len(more) && more[k].UID < entries[i].UID {
			k++
		}
		if k == len(more) || more[k].UID != entries[i].UID {
			continue
		}
		env := mm[k].envelope(z)
		c.put(more[k].MessageID, memEnvelope{size: more[k].Size, env: env})
		outE, outM = append(outE, more[k]), append(outM, mm[k])
	}
	return outE, outM, nil
}
