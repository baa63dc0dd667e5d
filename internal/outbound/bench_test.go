package outbound

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"

	"yubin/internal/smtp"
)

// startSink runs an SMTP server that accepts everything, for benchmarks.
func startSink(tb testing.TB, exts ...string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	tb.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	ehloReply := "250-sink\r\n"
	for i, e := range exts {
		sep := "-"
		if i == len(exts)-1 {
			sep = " "
		}
		ehloReply += "250" + sep + e + "\r\n"
	}
	if len(exts) == 0 {
		ehloReply = "250 sink\r\n"
	}
	wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { sinkSession(nc, ehloReply) })
		}
	})
	return ln.Addr().String()
}

func sinkSession(nc net.Conn, ehloReply string) {
	defer nc.Close()
	br := bufio.NewReader(nc)
	bw := bufio.NewWriter(nc)
	bw.WriteString("220 sink ESMTP\r\n")
	bw.Flush()
	for {
		line, err := smtp.ReadLine(br, 1000)
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(string(line), " ")
		switch strings.ToUpper(verb) {
		case "EHLO":
			bw.WriteString(ehloReply)
		case "DATA":
			bw.WriteString("354 go\r\n")
			bw.Flush()
			if _, err := io.Copy(io.Discard, smtp.NewDataReader(br)); err != nil {
				return
			}
			bw.WriteString("250 2.0.0 ok\r\n")
		case "BDAT":
			n, _ := strconv.Atoi(strings.Fields(arg)[0])
			if _, err := br.Discard(n); err != nil {
				return
			}
			bw.WriteString("250 2.0.0 ok\r\n")
		case "QUIT":
			bw.WriteString("221 bye\r\n")
			bw.Flush()
			return
		default:
			bw.WriteString("250 ok\r\n")
		}
		if br.Buffered() == 0 {
			bw.Flush()
		}
	}
}

func BenchmarkDeliver(b *testing.B) {
	body := "Subject: bench\r\n\r\n" + strings.Repeat(strings.Repeat("x", 76)+"\r\n.dot line\r\n", 100)
	for _, tc := range []struct {
		name string
		exts []string
	}{
		{"DATA", nil},
		{"PIPELINING", []string{"PIPELINING", "8BITMIME"}},
		{"CHUNKING", []string{"PIPELINING", "CHUNKING"}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			addr := startSink(b, tc.exts...)
			c := &Client{Hostname: clientName, Routes: map[string]Route{"*": {Host: addr}}, Logger: slog.New(slog.DiscardHandler)}
			d := delivery("b@example.test", "c@example.test")
			d.Open = content(body)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				res := c.Deliver(b.Context(), d)
				if r := res.Rcpts[0].Reply; r == nil || r.Code != 250 {
					b.Fatalf("reply %v", r)
				}
			}
		})
	}
}
