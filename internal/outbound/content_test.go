package outbound

import (
	"bytes"
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
		".\r\n..\r\n", "a\n.b\r.c\r\n.", "\r.\n.", ".", "x.\r\n. .\r\n"} {
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
	})
}
