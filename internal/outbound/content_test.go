package outbound

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"

	"yubin/internal/smtp"
)

// refNormalize is the plain definition: CRLF, a bare CR and a bare LF each end a line
// written as CRLF; a last line without an ending gets one.
func refNormalize(p []byte) (out []byte, lines, longest int, eightBit bool) {
	line := 0
	end := func() {
		out = append(out, '\r', '\n')
		lines++
		longest = max(longest, line)
		line = 0
	}
	for i := 0; i < len(p); i++ {
		switch c := p[i]; c {
		case '\r':
			if i+1 < len(p) && p[i+1] == '\n' {
				i++
			}
			end()
		case '\n':
			end()
		default:
			out = append(out, c)
			line++
			eightBit = eightBit || c >= 0x80
		}
	}
	if line > 0 {
		end()
	}
	return out, lines, longest, eightBit
}

// FuzzNormalizer: whatever the content and however it is split into reads, the normalizer
// gives the reference's bytes, line count, size and 8-bit verdict.
func FuzzNormalizer(f *testing.F) {
	for _, s := range []string{"", "a\r\nb\r\n", "a\nb\rc\r\n", "x\r", "\r\r\n\n", "é\r\n" + string(bytes.Repeat([]byte{'a'}, 1200)),
		".\r\n..\r\n", "a\n.b\r.c\r\n.", "\r.\n.", ".", "x.\r\n. .\r\n",
		"a\rb\r\n\n", "x\r\n\ry\r\n\n.z\r\n", "ok\r\n.ok\r\nbare\rcr\r\n"} {
		f.Add([]byte(s), uint8(3))
	}
	f.Fuzz(func(t *testing.T, p []byte, split uint8) {
		want, lines, _, eightBit := refNormalize(p)
		var n normalizer
		var got []byte
		step := int(split)%7 + 1
		for i := 0; i < len(p); i += step {
			got = n.append(got, p[i:min(i+step, len(p))])
		}
		got = n.finish(got)
		if !bytes.Equal(got, want) {
			t.Fatalf("normalized %q:\n got %q\nwant %q", p, got, want)
		}
		if n.info.lines != lines || n.info.size != int64(len(want)) || n.info.eightBit != eightBit {
			t.Fatalf("info %+v, want lines %d size %d eightBit %v", n.info, lines, len(want), eightBit)
		}

		// Stuffing as it goes gives what smtp's DATA writer sends for the normal form, up to
		// its end of data, and the same counts.
		var wire bytes.Buffer
		dw := smtp.NewDataWriter(&wire)
		dw.Write(want)
		dw.Close()
		wantStuffed := bytes.TrimSuffix(wire.Bytes(), []byte(".\r\n"))
		ns := normalizer{stuff: true}
		got = got[:0]
		for i := 0; i < len(p); i += step {
			got = ns.append(got, p[i:min(i+step, len(p))])
		}
		got = ns.finish(got)
		if !bytes.Equal(got, wantStuffed) {
			t.Fatalf("stuffed %q:\n got %q\nwant %q", p, got, wantStuffed)
		}
		if ns.info != n.info {
			t.Fatalf("stuffed info %+v, unstuffed %+v", ns.info, n.info)
		}

		// Counting only (prepare's scan) measures the same and writes nothing.
		nc := normalizer{count: true}
		for i := 0; i < len(p); i += step {
			if out := nc.append(nil, p[i:min(i+step, len(p))]); len(out) != 0 {
				t.Fatalf("counting normalizer wrote %q", out)
			}
		}
		if out := nc.finish(nil); len(out) != 0 || nc.info != n.info {
			t.Fatalf("counting normalizer: wrote %q, info %+v, want %+v", out, nc.info, n.info)
		}
		checkNormalizeContent(t, p, wantStuffed, n.info)
	})
}

// streamed is content read from a stream (a file): Read only.
type streamed struct{ r *bytes.Reader }

func (s streamed) Read(p []byte) (int, error) { return s.r.Read(p) }
func (streamed) Close() error                 { return nil }

// held is content in memory that offers its bytes (see inMemory).
type held struct {
	streamed
	b []byte
}

func (h held) Bytes() []byte { return h.b }

// checkNormalizeContent runs normalizeContent over p read from a stream and from memory,
// stuffing and counting only: each gives wantStuffed and info.
func checkNormalizeContent(t *testing.T, p, wantStuffed []byte, info contentInfo) {
	t.Helper()
	for _, src := range []struct {
		name string
		open func() (io.ReadCloser, error)
	}{
		{"streamed", func() (io.ReadCloser, error) { return streamed{bytes.NewReader(p)}, nil }},
		{"in memory", func() (io.ReadCloser, error) { return held{streamed{bytes.NewReader(p)}, p}, nil }},
	} {
		var got []byte
		var lastInfo contentInfo
		gotInfo, err := normalizeContent(src.open, true, func(chunk []byte, sofar contentInfo, last bool) error {
			got = append(got, chunk...)
			lastInfo = sofar
			return nil
		})
		if err != nil || !bytes.Equal(got, wantStuffed) || gotInfo != info || lastInfo != info {
			t.Fatalf("%s: normalizeContent of %d bytes: %v, %d bytes (equal %v), info %+v, want %+v",
				src.name, len(p), err, len(got), bytes.Equal(got, wantStuffed), gotInfo, info)
		}
		counted, err := normalizeContent(src.open, false, nil)
		if err != nil || counted != info {
			t.Fatalf("%s: counting: %v, info %+v, want %+v", src.name, err, counted, info)
		}
	}
}

// Content larger than normalizeContent's buffer, with line endings and dots to stuff on
// either side of its pieces' boundaries, comes out the same from a stream and from memory.
func TestNormalizeContentLarge(t *testing.T) {
	var p []byte
	for i := 0; len(p) < 200<<10; i++ {
		switch i % 5 {
		case 0:
			p = append(p, ".dot\r\n"...)
		case 1:
			p = append(p, "bare lf\n.x"...)
		case 2:
			p = append(p, bytes.Repeat([]byte("y"), 997+i%13)...)
			p = append(p, "\r"...)
		default:
			p = append(p, "line\r\n"...)
		}
	}
	for _, cut := range []int{len(p), 32 << 10, 32<<10 + 1, 64<<10 - 1} {
		q := p[:cut]
		want, lines, _, _ := refNormalize(q)
		var wire bytes.Buffer
		dw := smtp.NewDataWriter(&wire)
		dw.Write(want)
		dw.Close()
		var n normalizer
		n.finish(n.append(nil, q))
		if n.info.lines != lines || n.info.size != int64(len(want)) {
			t.Fatalf("info %+v, want %d lines, %d bytes", n.info, lines, len(want))
		}
		checkNormalizeContent(t, q, bytes.TrimSuffix(wire.Bytes(), []byte(".\r\n")), n.info)
	}
}

// BenchmarkNormalize is the relay's two passes over a 100 KiB message of 80-octet CRLF lines
// (smtp-source's): prepare's count, then the dot-stuffed copy DATA sends.
func BenchmarkNormalize(b *testing.B) {
	var p []byte
	for i := 0; len(p) < 100<<10; i++ {
		p = append(p, fmt.Sprintf("%d%s\r\n", i%10, strings.Repeat("X", 77))...)
	}
	open := func() (io.ReadCloser, error) { return held{streamed{bytes.NewReader(p)}, p}, nil }
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		info, err := normalizeContent(open, false, nil)
		if err != nil {
			b.Fatal(err)
		}
		copyContentStuffed(io.Discard, open, info, true)
	}
}
