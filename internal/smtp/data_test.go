package smtp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// readData reads all content from a DataReader over in, using a bufio
// buffer of bufSize and Read calls of readSize bytes, with an underlying
// reader that returns one byte at a time when oneByte is set. When Read
// fails with ErrBareLineEnding it calls Discard. It returns the content, the
// error that ended reading (nil for a clean end), Discard's result and what
// was left unread.
func readData(in string, bufSize, readSize int, oneByte bool) (content string, readErr, discardErr error, rest string) {
	var src io.Reader = strings.NewReader(in)
	if oneByte {
		src = iotest.OneByteReader(src)
	}
	br := bufio.NewReaderSize(src, bufSize)
	d := NewDataReader(br)
	var out bytes.Buffer
	p := make([]byte, readSize)
	for {
		n, err := d.Read(p)
		out.Write(p[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			readErr = err
			discardErr = d.Discard()
			break
		}
	}
	// Discard after the end, or a second time, is a no-op.
	if err := d.Discard(); err != discardErr && !(readErr == nil && err == nil) {
		discardErr = errors.Join(discardErr, err)
	}
	left, _ := io.ReadAll(br)
	return out.String(), readErr, discardErr, string(left)
}

// readerShapes are the ways readData is run for every case: the content
// split at every possible boundary (one byte at a time, tiny buffers and
// tiny reads) and in bulk.
var readerShapes = []struct {
	name              string
	bufSize, readSize int
	oneByte           bool
}{
	{"bulk", 4096, 8192, false},
	{"small buffer", 16, 7, false},
	{"one byte in", 16, 4096, true},
	{"one byte out", 4096, 1, false},
	{"one byte both", 16, 1, true},
	{"two byte out", 16, 2, true},
}

func TestDataReader(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		content string
		err     error  // from Read; then Discard must reach the terminator
		rest    string // left after the terminator
	}{
		{"simple", "a\r\n.\r\n", "a\r\n", nil, ""},
		{"empty", ".\r\n", "", nil, ""},
		{"pipelined next command", "a\r\nb\r\n.\r\nQUIT\r\n", "a\r\nb\r\n", nil, "QUIT\r\n"},
		{"empty line", "\r\n.\r\n", "\r\n", nil, ""},
		{"dot stuffed", "..a\r\n.\r\n", ".a\r\n", nil, ""},
		{"dot line", "..\r\n.\r\n", ".\r\n", nil, ""},
		{"two dots line", "...\r\n.\r\n", "..\r\n", nil, ""},
		{"dot then text", ".a\r\n.\r\n", "a\r\n", nil, ""},
		{"dot inside line", "a.\r\nb.c\r\n.\r\n", "a.\r\nb.c\r\n", nil, ""},
		{"dot lines inside", "a\r\n..\r\nb\r\n..x\r\n.\r\n", "a\r\n.\r\nb\r\n.x\r\n", nil, ""},
		{"terminator needs line start", "a.\r\n.\r\n", "a.\r\n", nil, ""},
		{"no final CRLF is not terminator", "a\r\n.b\r\n.\r\n", "a\r\nb\r\n", nil, ""},
		{"binary-ish bytes", "\x00\x7f\xff\t\r\n.\r\n", "\x00\x7f\xff\t\r\n", nil, ""},
		{"long line", strings.Repeat("x", 10000) + "\r\n.\r\n", strings.Repeat("x", 10000) + "\r\n", nil, ""},

		{"bare LF", "a\nb\r\n.\r\nNEXT", "a", ErrBareLineEnding, "NEXT"},
		{"bare LF at start", "\na\r\n.\r\nNEXT", "", ErrBareLineEnding, "NEXT"},
		{"bare CR", "a\rb\r\n.\r\nNEXT", "a", ErrBareLineEnding, "NEXT"},
		{"bare CR at start", "\rb\r\n.\r\nNEXT", "", ErrBareLineEnding, "NEXT"},
		{"CR CR LF", "a\r\r\n.\r\nNEXT", "a", ErrBareLineEnding, "NEXT"},
		{"dot bare LF", "a\r\n.\nb\r\n.\r\nNEXT", "a\r\n", ErrBareLineEnding, "NEXT"},
		{"bare LF after line", "a\r\nb\nc\r\n.\r\nNEXT", "a\r\nb", ErrBareLineEnding, "NEXT"},
		// SMTP smuggling (CVE-2023-51764): none of these end the data, and
		// after the bare CR or LF only the real CRLF.CRLF does.
		{"smuggle LF.CRLF", "a\n.\r\nMAIL FROM:<x@y>\r\n.\r\nNEXT", "a", ErrBareLineEnding, "NEXT"},
		{"smuggle CRLF.LF", "a\r\n.\nMAIL FROM:<x@y>\r\n.\r\nNEXT", "a\r\n", ErrBareLineEnding, "NEXT"},
		{"smuggle CR.CRLF", "a\r.\r\nMAIL FROM:<x@y>\r\n.\r\nNEXT", "a", ErrBareLineEnding, "NEXT"},
		{"smuggle LF.LF", "a\n.\nMAIL FROM:<x@y>\r\n.\r\nNEXT", "a", ErrBareLineEnding, "NEXT"},
		{"smuggle CRLF.CR", "a\r\n.\rMAIL\r\n.\r\nNEXT", "a\r\n", ErrBareLineEnding, "NEXT"},
		{"smuggle CR.CR", "a\r.\rMAIL\r\n.\r\nNEXT", "a", ErrBareLineEnding, "NEXT"},
		{"discard skips LF.LF and LF.CRLF", "x\ny\n.\n\n.\r\nz\r\n.\r\nNEXT", "x", ErrBareLineEnding, "NEXT"},
		{"discard after CRLF before bad", "x\r\n\n.\r\n\r\n.\r\nNEXT", "x\r\n", ErrBareLineEnding, "NEXT"},
		{"discard terminator right after", "x\n\r\n.\r\nNEXT", "x", ErrBareLineEnding, "NEXT"},

		{"EOF", "a\r\nb", "a\r\nb", io.ErrUnexpectedEOF, ""},
		{"EOF empty", "", "", io.ErrUnexpectedEOF, ""},
		{"EOF after CRLF", "a\r\n", "a\r\n", io.ErrUnexpectedEOF, ""},
		{"EOF after dot", "a\r\n.", "a\r\n", io.ErrUnexpectedEOF, ""},
		{"EOF after stuffed dot", "a\r\n.b", "a\r\nb", io.ErrUnexpectedEOF, ""},
		{"EOF after dot CR", "a\r\n.\r", "a\r\n", io.ErrUnexpectedEOF, ""},
		{"EOF after CR", "a\r", "a", io.ErrUnexpectedEOF, ""},
		{"EOF after LF.LF", "a\n.\n", "a", ErrBareLineEnding, ""},
	}
	for _, tt := range tests {
		for _, s := range readerShapes {
			content, readErr, discardErr, rest := readData(tt.in, s.bufSize, s.readSize, s.oneByte)
			if readErr == io.ErrUnexpectedEOF {
				rest = "" // what is left in the buffer of a dead connection does not matter
			}
			if content != tt.content || readErr != tt.err || rest != tt.rest {
				t.Errorf("%s/%s: got %q, %v, rest %q; want %q, %v, rest %q",
					tt.name, s.name, content, readErr, rest, tt.content, tt.err, tt.rest)
			}
			wantDiscard := error(nil)
			if tt.err == io.ErrUnexpectedEOF || strings.HasPrefix(tt.name, "EOF") {
				wantDiscard = io.ErrUnexpectedEOF
			}
			if tt.err != nil && discardErr != wantDiscard {
				t.Errorf("%s/%s: Discard = %v, want %v", tt.name, s.name, discardErr, wantDiscard)
			}
		}
	}
}

// Discard works at any point, not only after an error: after part of the
// content, or before any Read.
func TestDataReaderDiscardEarly(t *testing.T) {
	t.Parallel()
	const in = "line one\r\n..two\r\n.\r\nNEXT\r\n"
	for _, after := range []int{0, 1, 5, 9, 10, 11, 12, 16} {
		for _, s := range readerShapes {
			var src io.Reader = strings.NewReader(in)
			if s.oneByte {
				src = iotest.OneByteReader(src)
			}
			br := bufio.NewReaderSize(src, s.bufSize)
			d := NewDataReader(br)
			if _, err := io.ReadFull(d, make([]byte, after)); err != nil {
				t.Fatalf("read %d: %v", after, err)
			}
			if err := d.Discard(); err != nil {
				t.Errorf("%s: Discard after %d bytes: %v", s.name, after, err)
			}
			if n, err := d.Read(make([]byte, 10)); n != 0 || err != io.EOF {
				t.Errorf("%s: Read after Discard = %d, %v", s.name, n, err)
			}
			if rest, _ := io.ReadAll(br); string(rest) != "NEXT\r\n" {
				t.Errorf("%s: after %d bytes, rest %q", s.name, after, rest)
			}
		}
	}
}

// Read returns what it has rather than wait for more input.
func TestDataReaderDoesNotBlock(t *testing.T) {
	t.Parallel()
	pr, pw := io.Pipe()
	d := NewDataReader(bufio.NewReader(pr))
	go pw.Write([]byte("abc\r\n"))
	p := make([]byte, 100)
	n, err := d.Read(p)
	if err != nil || string(p[:n]) != "abc\r\n" {
		t.Fatalf("Read = %q, %v", p[:n], err)
	}
	go pw.Write([]byte(".\r\n"))
	if n, err := d.Read(p); n != 0 || err != io.EOF {
		t.Fatalf("Read = %q, %v; want EOF", p[:n], err)
	}
}

// A huge single line streams through: memory stays bounded by the buffers.
// (Not parallel: AllocsPerRun refuses.)
func TestDataReaderLargeLine(t *testing.T) {
	const size = 100 << 20
	run := func() {
		in := io.MultiReader(io.LimitReader(infiniteX{}, size), strings.NewReader("\r\n.\r\n"))
		d := NewDataReader(bufio.NewReaderSize(in, 512))
		n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{d}, make([]byte, 777))
		if err != nil || n != size+2 {
			t.Fatalf("copied %d, %v", n, err)
		}
	}
	if allocs := testing.AllocsPerRun(1, run); allocs > 20 {
		t.Errorf("%v allocations streaming one %d-byte line", allocs, size)
	}
}

func TestDataWriter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   []string // written in these pieces
		want string
	}{
		{"empty", nil, ".\r\n"},
		{"line", []string{"a\r\n"}, "a\r\n.\r\n"},
		{"no final CRLF", []string{"a"}, "a\r\n.\r\n"},
		{"dot stuffing", []string{".a\r\n..\r\n.\r\nb.\r\n"}, "..a\r\n...\r\n..\r\nb.\r\n.\r\n"},
		{"leading dot", []string{"."}, "..\r\n.\r\n"},
		{"bare LF", []string{"a\nb\n"}, "a\r\nb\r\n.\r\n"},
		{"bare CR", []string{"a\rb"}, "a\r\nb\r\n.\r\n"},
		{"final bare CR", []string{"a\r"}, "a\r\n.\r\n"},
		{"CRLF split across writes", []string{"a\r", "\n.b\r", "\n"}, "a\r\n..b\r\n.\r\n"},
		{"CR then dot across writes", []string{"a\r", ".b"}, "a\r\n..b\r\n.\r\n"},
		{"dot after LF across writes", []string{"a\n", ".", ".\r\n"}, "a\r\n...\r\n.\r\n"},
		{"smuggling normalised", []string{"a\n.\r\nb\r.\r\n"}, "a\r\n..\r\nb\r\n..\r\n.\r\n"},
		{"empty writes", []string{"", "a", "", "\r\n", ""}, "a\r\n.\r\n"},
		{"CRLF only", []string{"\r\n"}, "\r\n.\r\n"},
		{"big", []string{strings.Repeat(".x\r\n", 3000)}, strings.Repeat("..x\r\n", 3000) + ".\r\n"},
	}
	for _, tt := range tests {
		var b bytes.Buffer
		w := NewDataWriter(&b)
		for _, piece := range tt.in {
			if n, err := w.Write([]byte(piece)); n != len(piece) || err != nil {
				t.Fatalf("%s: Write = %d, %v", tt.name, n, err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if b.String() != tt.want {
			t.Errorf("%s: wrote %q, want %q", tt.name, b.String(), tt.want)
		}
		if err := w.Close(); err != nil || b.String() != tt.want {
			t.Errorf("%s: second Close: %v, %q", tt.name, err, b.String())
		}
		if _, err := w.Write([]byte("x")); err == nil {
			t.Errorf("%s: Write after Close succeeded", tt.name)
		}
	}
}

type failWriter struct{ err error }

func (f failWriter) Write([]byte) (int, error) { return 0, f.err }

func TestDataWriterError(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	w := NewDataWriter(failWriter{boom})
	if _, err := w.Write([]byte("a\r\n")); err != boom {
		t.Errorf("Write error %v", err)
	}
	if err := w.Close(); err != boom {
		t.Errorf("Close error %v", err)
	}
}
