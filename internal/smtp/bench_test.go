package smtp

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/textproto"
	"strings"
	"testing"
)

// benchMessage returns a dot-stuffed DATA stream of about size bytes of
// 78-character lines, some starting with ".", and the terminator.
func benchMessage(size int) []byte {
	var b bytes.Buffer
	b.WriteString("From: a@b.example\r\nTo: c@d.example\r\nSubject: benchmark\r\n\r\n")
	for i := 0; b.Len() < size; i++ {
		if i%20 == 0 {
			b.WriteString("..")
		}
		fmt.Fprintf(&b, "%04d %s\r\n", i, strings.Repeat("lorem ipsum ", 6))
	}
	b.WriteString(".\r\n")
	return b.Bytes()
}

func BenchmarkDataReader(b *testing.B) {
	for _, size := range []int{1 << 10, 100 << 10} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			msg := benchMessage(size)
			src := bytes.NewReader(msg)
			br := bufio.NewReaderSize(src, 4096)
			buf := make([]byte, 32<<10)
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				src.Reset(msg)
				br.Reset(src)
				d := NewDataReader(br)
				for {
					_, err := d.Read(buf)
					if err == io.EOF {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// BenchmarkDataReaderTextproto measures the standard library's DotReader
// (which also turns CRLF into LF) on the same input, as the peer to compare
// BenchmarkDataReader with.
func BenchmarkDataReaderTextproto(b *testing.B) {
	for _, size := range []int{1 << 10, 100 << 10} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			msg := benchMessage(size)
			src := bytes.NewReader(msg)
			br := bufio.NewReaderSize(src, 4096)
			buf := make([]byte, 32<<10)
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				src.Reset(msg)
				br.Reset(src)
				d := textproto.NewReader(br).DotReader()
				if _, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{d}, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDataWriter(b *testing.B) {
	msg := benchMessage(100 << 10)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		w := NewDataWriter(io.Discard)
		w.Write(msg)
		w.Close()
	}
}

func BenchmarkParsePathArg(b *testing.B) {
	args := []struct{ arg, prefix string }{
		{"FROM:<sender.name+tag@mail.example.org> SIZE=12345 BODY=8BITMIME", "FROM:"},
		{"TO:<recipient@example.com> NOTIFY=SUCCESS,FAILURE", "TO:"},
		{`FROM:<"quoted name"@[IPv6:2001:db8::1]>`, "FROM:"},
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, a := range args {
			if _, err := ParsePathArg(a.arg, a.prefix); err != nil {
				b.Fatal(err)
			}
		}
	}
}
