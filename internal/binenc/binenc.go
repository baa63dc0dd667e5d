// Package binenc is the compact record format yubin caches and journals in: signed and
// unsigned varints and length-prefixed byte strings, appended to a []byte and read back by
// a Reader that never panics on malformed input.
package binenc

import "encoding/binary"

// AppendString appends s as a uvarint length followed by its bytes.
func AppendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// AppendBytes appends p as AppendString does.
func AppendBytes(b, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

// Reader reads what the Append functions (and binary.AppendUvarint, AppendVarint) wrote.
// The first malformed value sets Failed; every read after it returns the zero value.
type Reader struct {
	B      []byte // what is left to read
	Failed bool
}

// Uvarint reads an unsigned varint.
func (r *Reader) Uvarint() uint64 { return readNum(r, binary.Uvarint) }

// Varint reads a signed varint.
func (r *Reader) Varint() int64 { return readNum(r, binary.Varint) }

func readNum[T uint64 | int64](r *Reader, read func([]byte) (T, int)) T {
	v, n := read(r.B)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.B = r.B[n:]
	return v
}

func (r *Reader) fail() { r.Failed, r.B = true, nil }

// Bytes reads a length-prefixed byte string; the result aliases the input.
func (r *Reader) Bytes() []byte {
	n := r.Uvarint()
	if n > uint64(len(r.B)) {
		r.fail()
		return nil
	}
	v := r.B[:n:n]
	r.B = r.B[n:]
	return v
}

// String reads a length-prefixed string.
func (r *Reader) String() string { return string(r.Bytes()) }

// Count reads a list length, bounded by the bytes left (every element takes at least one).
func (r *Reader) Count() int {
	n := r.Uvarint()
	if n > uint64(len(r.B)) {
		r.fail()
		return 0
	}
	return int(n)
}
