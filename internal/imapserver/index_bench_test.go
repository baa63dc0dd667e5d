package imapserver

import (
	"bytes"
	"strings"
	"testing"
)

// BenchmarkIndexMessage: the IMAP indexer's parse of one new message, as benchmark cases c
// and b deliver them (smtp-source's 1 KiB and 100 KiB messages: a few headers and a plain
// body), and of a typical multipart message.
func BenchmarkIndexMessage(b *testing.B) {
	plain := "Return-Path: <bench@bench.test>\r\nReceived: from localhost (localhost [127.0.0.1])\r\n" +
		"\tby yubin-bench.localhost with ESMTP id 0123456789abcdef\r\n\tfor <user@bench.test>; Sat, 5 Dec 2026 22:00:00 +0000\r\n" +
		"From: <bench@bench.test>\r\nTo: <user@bench.test>\r\nDate: Sat, 5 Dec 2026 22:00:00 +0000\r\n" +
		"Message-Id: <20261205220000.1@localhost>\r\nSubject: smtp-source test\r\n\r\n" +
		strings.Repeat("La de da de da 1.\r\n", 50)
	multi := "From: Alice Example <alice@example.org>\r\nTo: Bob <bob@example.test>, carol@example.test\r\n" +
		"Subject: =?utf-8?q?caf=C3=A9_menu?=\r\nDate: Fri, 27 Nov 2026 10:00:00 +0000\r\nMessage-ID: <m1@example.org>\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"b1\"\r\n\r\n" +
		"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + strings.Repeat("plain text line\r\n", 40) +
		"--b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>" + strings.Repeat("html text line ", 40) + "</p>\r\n--b1--\r\n"
	plain100k := plain + strings.Repeat("1XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX\r\n", 1280)
	for _, c := range []struct{ name, msg string }{{"plain1k", plain}, {"multipart", multi}, {"plain100k", plain100k}} {
		b.Run(c.name, func(b *testing.B) {
			r := bytes.NewReader([]byte(c.msg))
			b.SetBytes(int64(len(c.msg)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := IndexMessage(r, int64(len(c.msg))); err != nil {
					b.Fatal(err)
				}
			}
		})
		// As the indexer reads new mail: from the store's cache, in memory.
		b.Run(c.name+"-mem", func(b *testing.B) {
			r := memMessage{bytes.NewReader([]byte(c.msg)), []byte(c.msg)}
			b.SetBytes(int64(len(c.msg)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := IndexMessage(r, int64(len(c.msg))); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
