package store

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// BlobWriter streams one message into a temp file in tmp/. It is used by one
// goroutine at a time. Finish it with Store.Deliver or Abort.
type BlobWriter struct {
	s    *Store
	id   string
	tmp  string // absolute path of the temp file
	f    *os.File
	w    *bufio.Writer
	size int64
	done bool // closed: delivered, failed or aborted

	// A buffered blob (NewBufferedBlob) keeps up to InlineMax bytes in mem and has no file
	// until it grows past that. Deliver stores a message that stayed small inside the
	// database (messages.data): no file to create, fsync, rename and fsync the directory of,
	// so a whole batch of commits costs one WAL fsync.
	buffered bool
	mem      []byte
}

// InlineMax is the largest message a buffered blob keeps in memory and Deliver stores inside
// the database. Larger messages become files.
const InlineMax = 128 << 10

const blobBufferSize = 64 << 10

// NewBlob creates a temp file for a new message and assigns its message id.
func (s *Store) NewBlob() (*BlobWriter, error) {
	for range 3 {
		id := s.ids.next(s.now())
		tmp := filepath.Join(s.dir, tmpDirName, id)
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrExist) {
			continue // another process drew the same id in the same millisecond
		}
		if err != nil {
			return nil, fmt.Errorf("new blob %s: %w", id, classify(err))
		}
		s.setLive(id, true)
		return &BlobWriter{s: s, id: id, tmp: tmp, f: f, w: bufio.NewWriterSize(f, blobBufferSize)}, nil
	}
	return nil, errors.New("new blob: could not draw an unused message id")
}

// NewBufferedBlob is NewBlob for the SMTP path: the message stays in memory while it is small
// (see InlineMax) and is then stored inside the database; a larger one spills to a temp file.
// Only Deliver may commit a buffered blob.
func (s *Store) NewBufferedBlob() (*BlobWriter, error) {
	id := s.ids.next(s.now())
	s.setLive(id, true)
	return &BlobWriter{s: s, id: id, tmp: filepath.Join(s.dir, tmpDirName, id), buffered: true}, nil
}

// smallMem is what a buffered blob grows by plain appends; past it, it takes a recycled
// InlineMax buffer, so that a large message does not grow by reallocation and copying and a
// small one does not hold (or zero) 128 KiB.
const smallMem = 8 << 10

// memBufs recycles the in-memory buffers of buffered blobs (InlineMax each), so that a
// message does not grow its buffer by reallocation and copying.
var memBufs = sync.Pool{New: func() any { b := make([]byte, 0, InlineMax); return &b }}

// releaseMem gives a buffered blob's memory back once nobody reads it any more.
func (b *BlobWriter) releaseMem() {
	if cap(b.mem) == InlineMax {
		m := b.mem[:0]
		memBufs.Put(&m)
	}
	b.mem = nil
}

// spill moves a buffered blob's bytes into its temp file.
func (b *BlobWriter) spill() error {
	f, err := os.OpenFile(b.tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("new blob %s: %w", b.id, classify(err))
	}
	b.f, b.w = f, bufio.NewWriterSize(f, blobBufferSize)
	if _, err := b.w.Write(b.mem); err != nil {
		return fmt.Errorf("write blob %s: %w", b.id, classify(err))
	}
	b.releaseMem()
	return nil
}

// inline reports whether the blob's bytes are all in memory.
func (b *BlobWriter) inline() bool { return b.buffered && b.f == nil }

// ID returns the message id: 16 characters of lower-case base32hex, sortable
// by creation time.
func (b *BlobWriter) ID() string { return b.id }

// Size returns the number of bytes written so far.
func (b *BlobWriter) Size() int64 { return b.size }

// Write appends p to the message. An error caused by a full disk satisfies
// errors.Is(err, ErrStorageFull).
func (b *BlobWriter) Write(p []byte) (int, error) {
	if b.inline() && !b.done {
		if n := len(b.mem) + len(p); n <= InlineMax {
			if n > cap(b.mem) && n > smallMem {
				big := (*memBufs.Get().(*[]byte))[:0]
				b.mem = append(big, b.mem...)
			}
			b.mem = append(b.mem, p...)
			b.size += int64(len(p))
			return len(p), nil
		}
		if err := b.spill(); err != nil {
			return 0, err
		}
	}
	if b.done {
		return 0, fmt.Errorf("write blob %s: %w", b.id, os.ErrClosed)
	}
	n, err := b.w.Write(p)
	b.size += int64(n)
	if err != nil {
		return n, fmt.Errorf("write blob %s: %w", b.id, classify(err))
	}
	return n, nil
}

// ReadBack flushes what was written and returns a reader over it from offset, for a second
// pass over the content before the commit (DKIM signing). Writing may not resume after it.
func (b *BlobWriter) ReadBack(offset int64) (io.ReadCloser, error) {
	if b.done {
		return nil, fmt.Errorf("read back %s: blob already closed", b.id)
	}
	if b.inline() {
		return io.NopCloser(bytes.NewReader(b.mem[min(offset, int64(len(b.mem))):])), nil
	}
	if err := b.w.Flush(); err != nil {
		return nil, fmt.Errorf("read back %s: %w", b.id, classify(err))
	}
	f, err := os.Open(b.tmp)
	if err != nil {
		return nil, fmt.Errorf("read back %s: %w", b.id, err)
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// Insert rewrites the blob with p inserted at offset: a header that can only be made after
// the whole message was seen (a DKIM signature). The message id and temp file name stay;
// writing may continue after it.
func (b *BlobWriter) Insert(offset int64, p []byte) error {
	if b.done {
		return fmt.Errorf("insert into %s: blob already closed", b.id)
	}
	if b.inline() {
		b.mem = slices.Insert(b.mem, int(min(offset, int64(len(b.mem)))), p...)
		b.size += int64(len(p))
		if len(b.mem) > InlineMax {
			return b.spill()
		}
		return nil
	}
	if err := b.w.Flush(); err != nil {
		return fmt.Errorf("insert into %s: %w", b.id, classify(err))
	}
	next := b.tmp + ".new"
	nf, err := os.OpenFile(next, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("insert into %s: %w", b.id, classify(err))
	}
	fail := func(err error) error {
		nf.Close()
		os.Remove(next)
		return fmt.Errorf("insert into %s: %w", b.id, classify(err))
	}
	old, err := os.Open(b.tmp)
	if err != nil {
		return fail(err)
	}
	defer old.Close()
	nw := bufio.NewWriterSize(nf, blobBufferSize)
	if _, err := io.CopyN(nw, old, offset); err != nil {
		return fail(err)
	}
	if _, err := nw.Write(p); err != nil {
		return fail(err)
	}
	if _, err := io.Copy(nw, old); err != nil {
		return fail(err)
	}
	if err := nw.Flush(); err != nil {
		return fail(err)
	}
	if err := os.Rename(next, b.tmp); err != nil {
		return fail(err)
	}
	b.f.Close()
	b.f, b.w = nf, bufio.NewWriterSize(nf, blobBufferSize)
	b.size += int64(len(p))
	return nil
}

// Abort closes and removes the temp file. It does nothing when the blob was
// already passed to Deliver or aborted, so it can be deferred.
func (b *BlobWriter) Abort() error {
	if b.done {
		return nil
	}
	b.done = true
	defer b.s.setLive(b.id, false)
	if b.inline() {
		b.releaseMem()
		return nil
	}
	b.f.Close()
	if err := os.Remove(b.tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("abort blob %s: %w", b.id, err)
	}
	return nil
}

// finish flushes, fsyncs and closes the temp file and renames it to
// blobs/<day>/<id>. It returns the path relative to the store directory
// (slash separated, as stored in messages.blob_path). On error the temp file
// is removed.
func (b *BlobWriter) finish(day string) (string, error) {
	if b.inline() {
		b.done = true
		return "", nil // Deliver stores b.mem in the database
	}
	b.done = true
	fail := func(op string, err error) (string, error) {
		b.f.Close()
		os.Remove(b.tmp)
		return "", fmt.Errorf("%s blob %s: %w", op, b.id, classify(err))
	}
	if err := b.w.Flush(); err != nil {
		return fail("flush", err)
	}
	if err := b.f.Sync(); err != nil {
		return fail("fsync", err)
	}
	if err := b.f.Close(); err != nil {
		return fail("close", err)
	}
	dayDir := filepath.Join(b.s.dir, blobsDirName, day)
	if err := os.MkdirAll(dayDir, 0o700); err != nil {
		return fail("store", err)
	}
	dst := filepath.Join(dayDir, b.id)
	// Never replace another message's file: a failed commit removes dst.
	if _, err := os.Lstat(dst); err == nil {
		return fail("store", fmt.Errorf("%s: %w", dst, os.ErrExist))
	}
	if err := os.Rename(b.tmp, dst); err != nil {
		return fail("store", err)
	}
	return blobsDirName + "/" + day + "/" + b.id, nil
}

func dayOf(t time.Time) string { return t.UTC().Format("20060102") }

// MessageReader reads a stored message: its blob file, or the bytes of a small message stored
// inside the database. Callers must not assume either.
type MessageReader interface {
	io.Reader
	io.ReaderAt
	io.Seeker
	io.Closer
}

// OpenMessage opens the stored bytes of a message for reading and returns them with their
// size. The caller closes the reader.
func (s *Store) OpenMessage(ctx context.Context, messageID string) (MessageReader, int64, error) {
	if data, ok := s.mc.get(messageID); ok {
		return newMemReader(data), int64(len(data)), nil
	}
	var rel string
	var data []byte
	err := s.rrow(ctx, `SELECT blob_path, data FROM messages WHERE id = ?`, messageID).Scan(&rel, &data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, 0, fmt.Errorf("open message %s: %w", messageID, ErrNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("open message %s: %w", messageID, err)
	}
	if rel == "" {
		return newMemReader(data), int64(len(data)), nil
	}
	f, err := os.Open(filepath.Join(s.dir, filepath.FromSlash(rel)))
	if err != nil {
		return nil, 0, fmt.Errorf("open message %s: %w", messageID, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("open message %s: %w", messageID, err)
	}
	return f, fi.Size(), nil
}

// setLive records that this process owns the blob id (being written or
// committed), so CleanupOrphans leaves its files alone whatever their age.
func (s *Store) setLive(id string, live bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if live {
		s.live[id] = struct{}{}
	} else {
		delete(s.live, id)
	}
}

func (s *Store) isLive(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.live[id]
	return ok
}

// idSource draws message ids: 45 bits of Unix milliseconds then 35 random
// bits, 80 bits as 16 characters of base32hex (RFC 4648 section 7), whose
// alphabet keeps the ASCII order, so ids sort by time. Within one
// millisecond the random part counts up, so ids from one process are unique
// and ordered; between processes 35 random bits make a clash unlikely, and
// NewBlob's O_EXCL catches it.
type idSource struct {
	mu       sync.Mutex
	lastMS   uint64
	lastRand uint64
}

const (
	idTimeBits = 45
	idRandBits = 35
	idAlphabet = "0123456789abcdefghijklmnopqrstuv"
)

func (g *idSource) next(now time.Time) string {
	ms := uint64(now.UnixMilli()) & (1<<idTimeBits - 1)
	g.mu.Lock()
	var r uint64
	if ms <= g.lastMS {
		// Same millisecond (or the clock went back): count up from the last id.
		ms = g.lastMS
		r = g.lastRand + 1
		if r >= 1<<idRandBits {
			ms++
			r = randomBits()
		}
	} else {
		r = randomBits()
	}
	g.lastMS, g.lastRand = ms, r
	g.mu.Unlock()

	var b [16]byte
	for i := 8; i >= 0; i-- {
		b[i] = idAlphabet[ms&31]
		ms >>= 5
	}
	for i := 15; i >= 9; i-- {
		b[i] = idAlphabet[r&31]
		r >>= 5
	}
	return string(b[:])
}

// randomBits returns idRandBits random bits, leaving half the range free so
// counting up within a millisecond rarely overflows.
func randomBits() uint64 {
	var b [8]byte
	rand.Read(b[:]) // never returns an error (Go >= 1.24)
	return binary.BigEndian.Uint64(b[:]) & (1<<(idRandBits-1) - 1)
}

// memReader is a MessageReader over bytes held in memory.
type memReader struct {
	*bytes.Reader
	b []byte
}

func newMemReader(b []byte) memReader { return memReader{bytes.NewReader(b), b} }

func (memReader) Close() error { return nil }

// Bytes returns the whole message, which nobody changes (a stored message is immutable):
// a reader that needs it in memory uses it instead of a copy. The caller must not modify it.
func (m memReader) Bytes() []byte { return m.b }
