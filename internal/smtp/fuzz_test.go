package smtp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

// normaliseCRLF is the reference for DataWriter's line endings: CRLF stays,
// a bare CR or bare LF becomes CRLF.
func normaliseCRLF(b []byte) []byte {
	var out []byte
	for i := 0; i < len(b); i++ {
		switch {
		case b[i] == '\r' && i+1 < len(b) && b[i+1] == '\n':
			out = append(out, '\r', '\n')
			i++
		case b[i] == '\r' || b[i] == '\n':
			out = append(out, '\r', '\n')
		default:
			out = append(out, b[i])
		}
	}
	return out
}

// FuzzDataRoundTrip: any content written through DataWriter (in pieces of
// any size) and read back through DataReader (from a reader of any shape)
// is the content with its line endings normalised and a final CRLF added
// when missing; the reader stops exactly at the end of the terminator.
func FuzzDataRoundTrip(f *testing.F) {
	f.Add([]byte("Subject: hi\r\n\r\nbody\r\n"), uint8(0), uint8(0))
	f.Add([]byte(".\r\n..\r\n.x\r\n"), uint8(1), uint8(3))
	f.Add([]byte("a\n.\nb\r.\r\n.\r"), uint8(2), uint8(1))
	f.Add([]byte(""), uint8(5), uint8(7))
	f.Add([]byte("no final newline ."), uint8(7), uint8(2))
	f.Fuzz(func(t *testing.T, content []byte, piece, shape uint8) {
		want := normaliseCRLF(content)
		if len(want) > 0 && !bytes.HasSuffix(want, []byte("\r\n")) {
			want = append(want, '\r', '\n')
		}
		var wire bytes.Buffer
		w := NewDataWriter(&wire)
		step := int(piece) + 1
		for i := 0; i < len(content); i += step {
			if _, err := w.Write(content[i:min(len(content), i+step)]); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		wire.WriteString("NEXT")
		s := readerShapes[int(shape)%len(readerShapes)]
		got, readErr, _, rest := readData(wire.String(), s.bufSize, s.readSize, s.oneByte)
		if readErr != nil || got != string(want) || rest != "NEXT" {
			t.Fatalf("content %q: wire %q read back %q, %v, rest %q; want %q", content, wire.Bytes(), got, readErr, rest, want)
		}
	})
}

// refDecode is an obviously-correct, whole-buffer model of DataReader plus
// Discard: the content it yields, the error Read ends with (nil for the
// terminator), and how many input bytes are consumed in the end (-1 when the
// input runs out).
func refDecode(in []byte) (content []byte, readErr error, consumed int) {
	bol := true
	for i := 0; ; {
		if bol && bytes.HasPrefix(in[i:], []byte(".\r\n")) {
			return content, nil, i + 3
		}
		if bol && i < len(in) && in[i] == '.' {
			i++
		}
		bol = false
		if i >= len(in) {
			return content, io.ErrUnexpectedEOF, -1
		}
		switch c := in[i]; {
		case c == '\r' && i+1 >= len(in):
			return content, io.ErrUnexpectedEOF, -1
		case c == '\r' && in[i+1] == '\n':
			content = append(content, '\r', '\n')
			i += 2
			bol = true
		case c == '\r' || c == '\n':
			// Discard: the first CRLF.CRLF from here. The bad byte cannot
			// be part of one, and no CRLF.CRLF started before it.
			if k := bytes.Index(in[i:], []byte("\r\n.\r\n")); k >= 0 {
				return content, ErrBareLineEnding, i + k + 5
			}
			return content, ErrBareLineEnding, -1
		default:
			content = append(content, c)
			i++
		}
	}
}

// FuzzDataReader: on any input, DataReader with Discard agrees with the
// whole-buffer model refDecode, whatever the shape of the reads.
func FuzzDataReader(f *testing.F) {
	f.Add([]byte("a\r\n..b\r\n.\r\nNEXT"), uint8(0))
	f.Add([]byte("a\n.\r\nMAIL FROM:<x@y>\r\n.\r\nNEXT"), uint8(1))
	f.Add([]byte("a\r.\r\n\r\n.\n\r\n.\r\n"), uint8(2))
	f.Add([]byte(".\r"), uint8(3))
	f.Add([]byte("\r\n.\r\n"), uint8(4))
	// Several lines in one buffer (Read's line-at-a-time path), with what stops it later on.
	f.Add([]byte("a\r\nb\r\nc\nd\r\n.\r\n"), uint8(0))
	f.Add([]byte("x\r\ny\r\n..z\r\n\r\n.\r\nQUIT\r\n"), uint8(0))
	f.Add([]byte("l1\r\nl2\r\n\rbad\r\n.\r\n"), uint8(0))
	f.Add([]byte("l1\r\nl2\r\n\nbad\r\n.\r\n"), uint8(1))
	f.Fuzz(func(t *testing.T, in []byte, shape uint8) {
		wantContent, wantErr, consumed := refDecode(in)
		s := readerShapes[int(shape)%len(readerShapes)]
		got, readErr, discardErr, rest := readData(string(in), s.bufSize, s.readSize, s.oneByte)
		if got != string(wantContent) || readErr != wantErr {
			t.Fatalf("input %q: got %q, %v; want %q, %v", in, got, readErr, wantContent, wantErr)
		}
		if consumed < 0 {
			if readErr != io.ErrUnexpectedEOF && discardErr != io.ErrUnexpectedEOF {
				t.Fatalf("input %q: Read %v, Discard %v; want io.ErrUnexpectedEOF", in, readErr, discardErr)
			}
			return
		}
		if discardErr != nil || rest != string(in[consumed:]) {
			t.Fatalf("input %q: Discard %v, rest %q; want rest %q", in, discardErr, rest, in[consumed:])
		}
	})
}

// FuzzReplyRoundTrip: a reply with printable text, written and read back,
// has the same code, enhanced code and lines.
func FuzzReplyRoundTrip(f *testing.F) {
	f.Add(250, "2.0.0", "ok")
	f.Add(550, "5.1.1", "no such\nuser")
	f.Add(354, "", "go ahead")
	f.Add(421, "4.3.2", "")
	f.Add(250, "", "mx\nPIPELINING\n\nSIZE 100")
	f.Fuzz(func(t *testing.T, code int, enhanced, text string) {
		code = 200 + (code%400+400)%400
		if !ValidEnhanced(code, enhanced) {
			enhanced = ""
		}
		r := NewReply(code, enhanced, text)
		if len(r.Lines) > 20 {
			t.Skip()
		}
		for _, l := range r.Lines {
			if len(l) > 1000 || strings.ContainsFunc(l, func(c rune) bool { return c < 0x20 || c == 0x7f }) {
				t.Skip("not printable text")
			}
		}
		if _, _, ok := cutEnhanced(code, r.Lines[0]); enhanced == "" && ok {
			// Text that starts like an enhanced code reads back as one:
			// the wire form cannot tell them apart.
			t.Skip()
		}
		var wire bytes.Buffer
		if _, err := r.WriteTo(&wire); err != nil {
			t.Fatal(err)
		}
		got, err := ReadReply(bufio.NewReaderSize(iotest.OneByteReader(&wire), 16), 20)
		if err != nil {
			t.Fatalf("%#v: read back: %v", r, err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Fatalf("wrote %#v, read %#v", r, got)
		}
		if wire.Len() != 0 {
			t.Fatalf("left %q unread", wire.Bytes())
		}
	})
}

// FuzzReadReply: whatever ReadReply accepts, it can write and read back
// identically, and it never returns an empty Lines.
func FuzzReadReply(f *testing.F) {
	f.Add([]byte("250-mx\r\n250 2.0.0 ok\r\n"))
	f.Add([]byte("550 5.1.1\r\n"))
	f.Add([]byte("250-\n250\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := ReadReply(bufio.NewReaderSize(bytes.NewReader(in), 16), 10)
		if err != nil {
			return
		}
		if len(r.Lines) == 0 || r.Code < 200 || r.Code > 599 {
			t.Fatalf("bad reply %#v", r)
		}
		var wire bytes.Buffer
		if _, err := r.WriteTo(&wire); err != nil {
			t.Fatal(err)
		}
		again, err := ReadReply(bufio.NewReader(&wire), 10)
		if err != nil || !reflect.DeepEqual(again, r) {
			t.Fatalf("%q: read %#v; rewritten %q read %#v, %v", in, r, wire.String(), again, err)
		}
	})
}

// FuzzParsePathArg: no panic; what parses formats (PathArg.String) to a
// string that parses to the same result, and errors are 501 replies.
func FuzzParsePathArg(f *testing.F) {
	f.Add("FROM:<a@b> SIZE=100 BODY=8BITMIME", true)
	f.Add("TO:<@a,@b:user@c>", false)
	f.Add(`FROM: <"a b>\"c"@[IPv6:::1]> X=δ`, true)
	f.Add("TO:<Postmaster>", false)
	f.Add("FROM:<>", true)
	f.Add("TO:<δοκιμή@παράδειγμα.δοκιμή> NOTIFY=NEVER", false)
	f.Fuzz(func(t *testing.T, arg string, from bool) {
		prefix := "TO:"
		if from {
			prefix = "FROM:"
		}
		pa, err := ParsePathArg(arg, prefix)
		if err != nil {
			var r *Reply
			if !errors.As(err, &r) || r.Code != 501 {
				t.Fatalf("%q: error %v is not a 501 reply", arg, err)
			}
			return
		}
		formatted := prefix + pa.String()
		again, err := ParsePathArg(formatted, prefix)
		if err != nil || !reflect.DeepEqual(again, pa) {
			t.Fatalf("%q parsed to %#v; %q parsed to %#v, %v", arg, pa, formatted, again, err)
		}
		if !strings.Contains(arg, pa.Mailbox) || !strings.Contains(arg, pa.Route) {
			t.Fatalf("%q: mailbox %q or route %q not as sent", arg, pa.Mailbox, pa.Route)
		}
	})
}

// FuzzReadLine: ReadLine never returns a line longer than max, and agrees
// with a model that splits the input at LF: each line without its CRLF or
// LF, ErrLineTooLong when longer than max, io.ErrUnexpectedEOF for an
// unterminated last line, then io.EOF.
func FuzzReadLine(f *testing.F) {
	f.Add([]byte("HELO x\r\nQUIT\r\n"), 512, false)
	f.Add([]byte("123456\r\n12345\n\r\n"), 5, true)
	f.Add([]byte(strings.Repeat("x", 40)+"\r\nok"), 20, false)
	f.Fuzz(func(t *testing.T, in []byte, max int, oneByte bool) {
		max = (max%100 + 100) % 100
		var src io.Reader = bytes.NewReader(in)
		if oneByte {
			src = iotest.OneByteReader(src)
		}
		br := bufio.NewReaderSize(src, 16)
		rest := in
		for {
			line, err := ReadLine(br, max)
			if len(line) > max {
				t.Fatalf("line of %d bytes, max %d", len(line), max)
			}
			i := bytes.IndexByte(rest, '\n')
			switch {
			case len(rest) == 0:
				if err != io.EOF {
					t.Fatalf("at end: %q, %v", line, err)
				}
				return
			case i < 0:
				if err != io.ErrUnexpectedEOF {
					t.Fatalf("unterminated %q: %q, %v", rest, line, err)
				}
				return
			}
			want := bytes.TrimSuffix(rest[:i], []byte("\r"))
			rest = rest[i+1:]
			if len(want) > max {
				if err != ErrLineTooLong {
					t.Fatalf("line %q max %d: %q, %v; want ErrLineTooLong", want, max, line, err)
				}
				continue
			}
			if err != nil || !bytes.Equal(line, want) {
				t.Fatalf("line %q: got %q, %v", want, line, err)
			}
		}
	})
}
