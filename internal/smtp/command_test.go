package smtp

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestReadLine(t *testing.T) {
	t.Parallel()
	type result struct {
		line string
		err  error
	}
	tests := []struct {
		name string
		in   string
		max  int
		want []result // then the reader must be at io.EOF
	}{
		{"crlf", "HELO x\r\nQUIT\r\n", 512, []result{{"HELO x", nil}, {"QUIT", nil}}},
		{"bare LF", "HELO x\nQUIT\n", 512, []result{{"HELO x", nil}, {"QUIT", nil}}},
		{"empty line", "\r\n\n", 512, []result{{"", nil}, {"", nil}}},
		{"CR inside kept", "A\rB\r\n", 512, []result{{"A\rB", nil}}},
		{"exactly max", "12345\r\n", 5, []result{{"12345", nil}}},
		{"exactly max bare LF", "12345\n", 5, []result{{"12345", nil}}},
		{"max plus one", "123456\r\nNOOP\r\n", 5, []result{{"", ErrLineTooLong}, {"NOOP", nil}}},
		{"too long then next", strings.Repeat("x", 1000) + "\r\nQUIT\r\n", 512,
			[]result{{"", ErrLineTooLong}, {"QUIT", nil}}},
		{"too long bare LF", strings.Repeat("x", 1000) + "\nQUIT\r\n", 512,
			[]result{{"", ErrLineTooLong}, {"QUIT", nil}}},
		{"too long at EOF", strings.Repeat("x", 1000), 512, []result{{"", io.ErrUnexpectedEOF}}},
		{"EOF mid line", "QUI", 512, []result{{"", io.ErrUnexpectedEOF}}},
		{"EOF after CR", "QUIT\r", 512, []result{{"", io.ErrUnexpectedEOF}}},
	}
	readers := map[string]func(string) *bufio.Reader{
		"default": func(s string) *bufio.Reader { return bufio.NewReader(strings.NewReader(s)) },
		"small":   func(s string) *bufio.Reader { return bufio.NewReaderSize(strings.NewReader(s), 16) },
		"one byte": func(s string) *bufio.Reader {
			return bufio.NewReaderSize(iotest.OneByteReader(strings.NewReader(s)), 16)
		},
	}
	for _, tt := range tests {
		for rname, newReader := range readers {
			br := newReader(tt.in)
			for i, w := range tt.want {
				line, err := ReadLine(br, tt.max)
				if string(line) != w.line || !errors.Is(err, w.err) {
					t.Errorf("%s/%s: line %d: got %q, %v; want %q, %v", tt.name, rname, i, line, err, w.line, w.err)
				}
			}
			if line, err := ReadLine(br, tt.max); err != io.EOF {
				t.Errorf("%s/%s: at end got %q, %v; want io.EOF", tt.name, rname, line, err)
			}
		}
	}
}

// The rest of a too-long line is dropped, not buffered: a huge line costs no
// more memory than a short one.
// (Not parallel: AllocsPerRun refuses.)
func TestReadLineLongBounded(t *testing.T) {
	const size = 50 << 20
	// AllocsPerRun runs the function twice: a warm-up and the measured run.
	in := io.MultiReader(
		io.LimitReader(infiniteX{}, size),
		strings.NewReader("\r\n"),
		io.LimitReader(infiniteX{}, size),
		strings.NewReader("\r\nQUIT\r\n"))
	br := bufio.NewReaderSize(in, 4096)
	allocs := testing.AllocsPerRun(1, func() {
		if _, err := ReadLine(br, 512); err != ErrLineTooLong {
			t.Fatalf("err %v", err)
		}
	})
	if allocs > 5 {
		t.Errorf("%v allocations for a %d-byte line", allocs, size)
	}
	if line, err := ReadLine(br, 512); string(line) != "QUIT" || err != nil {
		t.Errorf("next line %q, %v", line, err)
	}
}

type infiniteX struct{}

func (infiniteX) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}

func TestParseCommand(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in       string
		verb     string
		arg      string
		wantCode string // enhanced code of the error, "" for success
	}{
		{"HELO mx.example", "HELO", "mx.example", ""},
		{"helo mx.example", "HELO", "mx.example", ""},
		{"MaIl FROM:<a@b>", "MAIL", "FROM:<a@b>", ""},
		{"QUIT", "QUIT", "", ""},
		{"quit   ", "QUIT", "", ""},
		{"NOOP \t", "NOOP", "", ""},
		{"RCPT TO:<a@b>  ", "RCPT", "TO:<a@b>", ""},
		{"MAIL  FROM:<a@b>", "MAIL", " FROM:<a@b>", ""},
		{"EHLO\tx", "", "", "5.5.2"},
		{"XYZZY foo", "XYZZY", "foo", ""},
		{"STARTTLS", "STARTTLS", "", ""},
		{"X1234567890123456789 a", "X1234567890123456789", "a", ""},
		{"X12345678901234567890 a", "", "", "5.5.2"},
		{"MAIL FROM:<δοκιμή@παράδειγμα.δοκιμή>", "MAIL", "FROM:<δοκιμή@παράδειγμα.δοκιμή>", ""},
		{"NOOP a\tb", "NOOP", "a\tb", ""},
		{"", "", "", "5.5.2"},
		{" ", "", "", "5.5.2"},
		{" HELO x", "", "", "5.5.2"},
		{"HE-LO x", "", "", "5.5.2"},
		{"HÉLO x", "", "", "5.5.2"},
		{"HELO x\x00y", "", "", "5.5.2"},
		{"\x00", "", "", "5.5.2"},
		{"HELO x\ry", "", "", "5.5.2"},
		{"HELO x\ny", "", "", "5.5.2"},
		{"HELO \x1b[31m", "", "", "5.5.2"},
		{"HELO \xff\xfe", "", "", "5.5.2"},
		{"HELO \xc3", "", "", "5.5.2"},
	}
	for _, tt := range tests {
		cmd, err := ParseCommand([]byte(tt.in))
		if tt.wantCode == "" {
			if err != nil || cmd.Verb != tt.verb || cmd.Arg != tt.arg {
				t.Errorf("ParseCommand(%q) = %+v, %v; want %q %q", tt.in, cmd, err, tt.verb, tt.arg)
			}
			continue
		}
		var r *Reply
		if !errors.As(err, &r) || r.Code != 500 || r.Enhanced != tt.wantCode {
			t.Errorf("ParseCommand(%q) = %+v, %v; want 500 %s", tt.in, cmd, err, tt.wantCode)
		}
	}
}
