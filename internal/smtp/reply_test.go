package smtp

import (
	"bufio"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

func TestReplyWriteTo(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		reply *Reply
		want  string
	}{
		{"single", NewReply(250, "", "ok"), "250 ok\r\n"},
		{"single enhanced", NewReply(250, "2.0.0", "ok"), "250 2.0.0 ok\r\n"},
		{"multi", NewReply(250, "", "a\nb\nc"), "250-a\r\n250-b\r\n250 c\r\n"},
		{"multi enhanced", NewReply(250, "2.0.0", "a\nb"), "250-2.0.0 a\r\n250 2.0.0 b\r\n"},
		{"crlf separators", NewReply(550, "5.1.1", "a\r\nb\r\n"), "550-5.1.1 a\r\n550 5.1.1 b\r\n"},
		{"empty text", NewReply(250, "", ""), "250\r\n"},
		{"empty text enhanced", NewReply(250, "2.0.0", ""), "250 2.0.0\r\n"},
		{"empty continuation", &Reply{Code: 250, Lines: []string{"", "x"}}, "250-\r\n250 x\r\n"},
		{"no lines", &Reply{Code: 354}, "354\r\n"},
		{"CR LF in line", &Reply{Code: 250, Lines: []string{"a\rb\nc"}}, "250 a b c\r\n"},
		{"CR LF in enhanced", &Reply{Code: 250, Enhanced: "2.0.0\r\n250", Lines: []string{"x"}}, "250 2.0.0  250 x\r\n"},
		{"formatted", Replyf(421, "4.3.2", "%s shutting down", "mx.example"), "421 4.3.2 mx.example shutting down\r\n"},
	}
	for _, tt := range tests {
		var b strings.Builder
		n, err := tt.reply.WriteTo(&b)
		if err != nil || b.String() != tt.want || n != int64(len(tt.want)) {
			t.Errorf("%s: WriteTo = %d, %v, %q; want %q", tt.name, n, err, b.String(), tt.want)
		}
	}
}

func TestReplyWriteToBadCode(t *testing.T) {
	t.Parallel()
	for _, code := range []int{0, 99, 199, 600, 1000, -250} {
		var b strings.Builder
		if _, err := (&Reply{Code: code, Lines: []string{"x"}}).WriteTo(&b); err == nil || b.Len() != 0 {
			t.Errorf("code %d: err %v, wrote %q", code, err, b.String())
		}
	}
}

func TestReplyError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		reply      *Reply
		want       string
		temp, perm bool
	}{
		{NewReply(550, "5.1.1", "no such user"), "550 5.1.1 no such user", false, true},
		{NewReply(451, "", "try later"), "451 try later", true, false},
		{NewReply(250, "2.0.0", "a\nb"), "250 2.0.0 a; b", false, false},
		{NewReply(354, "", ""), "354", false, false},
	}
	for _, tt := range tests {
		var err error = tt.reply
		var r *Reply
		if !errors.As(err, &r) {
			t.Fatal("errors.As failed")
		}
		if got := err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
		if r.Temporary() != tt.temp || r.Permanent() != tt.perm {
			t.Errorf("%q: Temporary %v Permanent %v", tt.want, r.Temporary(), r.Permanent())
		}
	}
}

func TestReadReply(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want *Reply
	}{
		{"simple", "250 ok\r\n", &Reply{250, "", []string{"ok"}}},
		{"enhanced", "550 5.1.1 no such user\r\n", &Reply{550, "5.1.1", []string{"no such user"}}},
		{"bare code", "250\r\n", &Reply{250, "", []string{""}}},
		{"bare code enhanced only", "250 2.1.0\r\n", &Reply{250, "2.1.0", []string{""}}},
		{"space only", "250 \r\n", &Reply{250, "", []string{""}}},
		{"empty continuation", "250-\r\n250 ok\r\n", &Reply{250, "", []string{"", "ok"}}},
		{"ehlo lowercase", "250-mx.example\r\n250-pipelining\r\n250 8bitmime\r\n",
			&Reply{250, "", []string{"mx.example", "pipelining", "8bitmime"}}},
		{"multi enhanced", "250-2.0.0 a\r\n250 2.0.0 b\r\n", &Reply{250, "2.0.0", []string{"a", "b"}}},
		{"enhanced on first line only", "550-5.7.1 a\r\n550 b\r\n", &Reply{550, "5.7.1", []string{"a", "b"}}},
		{"different enhanced later kept as text", "550-5.7.1 a\r\n550 5.7.2 b\r\n", &Reply{550, "5.7.1", []string{"a", "5.7.2 b"}}},
		{"class mismatch is text", "250 5.0.0 odd\r\n", &Reply{250, "", []string{"5.0.0 odd"}}},
		{"3xx has no enhanced", "354 2.0.0 go ahead\r\n", &Reply{354, "", []string{"2.0.0 go ahead"}}},
		{"not enhanced: no space", "250 2.0.0x\r\n", &Reply{250, "", []string{"2.0.0x"}}},
		{"not enhanced: 4 digits", "250 2.0.1000 x\r\n", &Reply{250, "", []string{"2.0.1000 x"}}},
		{"enhanced 3 digits", "452 4.5.300 x\r\n", &Reply{452, "4.5.300", []string{"x"}}},
		{"bare LF", "220 hi\n", &Reply{220, "", []string{"hi"}}},
		{"text keeps spaces", "250  two  \r\n", &Reply{250, "", []string{" two  "}}},
	}
	for _, tt := range tests {
		got, err := ReadReply(bufio.NewReader(strings.NewReader(tt.in)), 10)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: got %#v, want %#v", tt.name, got, tt.want)
		}
	}
}

func TestReadReplyErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"two digits", "25 ok\r\n", ErrMalformedReply},
		{"letters", "abc ok\r\n", ErrMalformedReply},
		{"class 1", "150 ok\r\n", ErrMalformedReply},
		{"class 6", "650 ok\r\n", ErrMalformedReply},
		{"four digits", "2500 ok\r\n", ErrMalformedReply},
		{"bad separator", "250+ok\r\n", ErrMalformedReply},
		{"codes differ", "250-a\r\n251 b\r\n", ErrMalformedReply},
		{"bad continuation line", "250-a\r\nhello\r\n", ErrMalformedReply},
		{"too many lines", strings.Repeat("250-x\r\n", 10) + "250 x\r\n", ErrMalformedReply},
		{"line too long", "250 " + strings.Repeat("x", 2045) + "\r\n", ErrMalformedReply},
		{"bare CR in line", "250 a\rb\r\n", ErrMalformedReply},
		{"empty input", "", io.EOF},
		{"eof mid line", "250 o", io.ErrUnexpectedEOF},
		{"eof after continuation", "250-a\r\n", io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		// A small buffer exercises lines longer than the buffer.
		_, err := ReadReply(bufio.NewReaderSize(strings.NewReader(tt.in), 16), 10)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: err %v, want %v", tt.name, err, tt.want)
		}
	}
	// Exactly 2048 bytes is still fine.
	in := "250 " + strings.Repeat("x", 2044) + "\r\n"
	if _, err := ReadReply(bufio.NewReaderSize(strings.NewReader(in), 16), 10); err != nil {
		t.Errorf("2048-byte line: %v", err)
	}
}

func TestReadReplySequence(t *testing.T) {
	t.Parallel()
	// Pipelined replies are read one at a time from the same reader.
	br := bufio.NewReader(strings.NewReader("250 2.1.0 ok\r\n550-5.1.1 no\r\n550 5.1.1 user\r\n354 go\r\n"))
	var got []string
	for {
		r, err := ReadReply(br, 0)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, r.Error())
	}
	want := []string{"250 2.1.0 ok", "550 5.1.1 no; user", "354 go"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestValidEnhanced(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code int
		enh  string
		want bool
	}{
		{250, "2.0.0", true},
		{250, "2.123.456", true},
		{450, "4.2.1", true},
		{550, "5.7.26", true},
		{250, "4.0.0", false},
		{354, "3.0.0", false},
		{250, "2.0", false},
		{250, "2..0", false},
		{250, "2.0.0.0", false},
		{250, "2.1234.0", false},
		{250, "2.a.0", false},
		{250, "", false},
	}
	for _, tt := range tests {
		if got := ValidEnhanced(tt.code, tt.enh); got != tt.want {
			t.Errorf("ValidEnhanced(%d, %q) = %v", tt.code, tt.enh, got)
		}
	}
}
