package binenc

import (
	"encoding/binary"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	var b []byte
	b = AppendString(b, "héllo")
	b = binary.AppendVarint(b, -42)
	b = binary.AppendUvarint(b, 3)
	b = AppendBytes(b, []byte{0, 1, 2})
	r := &Reader{B: b}
	if s, v, n, p := r.String(), r.Varint(), r.Count(), r.Bytes(); s != "héllo" || v != -42 || n != 3 || string(p) != "\x00\x01\x02" || r.Failed || len(r.B) != 0 {
		t.Fatalf("read %q %d %d %q failed=%v left=%d", s, v, n, p, r.Failed, len(r.B))
	}
}

func TestMalformed(t *testing.T) {
	for _, b := range [][]byte{
		{},            // nothing to read
		{0x80},        // a varint cut short
		{5, 'a', 'b'}, // a string longer than what is left
		{0x7f},        // a length of 127 with nothing after it
	} {
		r := &Reader{B: b}
		_ = r.String()
		if !r.Failed || r.B != nil {
			t.Errorf("%x: failed=%v left=%x, want failed and nothing left", b, r.Failed, r.B)
		}
		if r.Uvarint() != 0 || r.String() != "" || r.Count() != 0 {
			t.Errorf("%x: a read after the failure returned a value", b)
		}
	}
}

func FuzzReader(f *testing.F) {
	f.Add(AppendString(nil, "x"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := &Reader{B: b}
		for !r.Failed && len(r.B) > 0 {
			before := len(r.B)
			r.Count()
			_ = r.String()
			r.Varint()
			if !r.Failed && len(r.B) >= before {
				t.Fatal("a successful read consumed nothing")
			}
		}
	})
}
