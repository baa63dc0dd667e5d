package app_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"yubin/internal/config"
	"yubin/internal/smtp"
	"yubin/internal/testenv"
)

// sink is a minimal SMTP server that accepts every message and counts them.
type sink struct {
	l     net.Listener
	count atomic.Int64
}

func startSink(tb testing.TB) *sink {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := &sink{l: l}
	tb.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	return s
}

func (s *sink) serve(c net.Conn) {
	defer c.Close()
	br, bw := bufio.NewReader(c), bufio.NewWriter(c)
	bw.WriteString("220 sink ESMTP\r\n")
	bw.Flush()
	for {
		line, err := smtp.ReadLine(br, 4096)
		if err != nil {
			return
		}
		cmd := strings.ToUpper(string(line))
		switch {
		case strings.HasPrefix(cmd, "EHLO"):
			bw.WriteString("250-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
		case strings.HasPrefix(cmd, "DATA"):
			bw.WriteString("354 go\r\n")
			bw.Flush()
			dr := smtp.NewDataReader(br)
			if err := dr.Discard(); err != nil {
				return
			}
			s.count.Add(1)
			bw.WriteString("250 2.0.0 ok\r\n")
		case strings.HasPrefix(cmd, "QUIT"):
			bw.WriteString("221 bye\r\n")
			bw.Flush()
			return
		default:
			bw.WriteString("250 2.0.0 ok\r\n")
		}
		if br.Buffered() == 0 {
			bw.Flush()
		}
	}
}

// BenchmarkRelay measures relaying end to end: messages accepted on the MX listener for an
// alias that forwards to a remote address, queued, and relayed to a sink through a static
// route, as bench/run.sh MODE=relay does with smtp-sink.
func BenchmarkRelay(b *testing.B) {
	for _, size := range []int{1 << 10, 100 << 10} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			sk := startSink(b)
			y := testenv.Start(b, func(c *config.Config) {
				c.SMTP.MaxConnectionsPerIP = 10000
				c.Relay.Routes = map[string]config.Route{"*": {Host: sk.l.Addr().String(), TLS: "none"}}
			})
			y.AddDomain("bench.test")
			y.AddAlias("user@bench.test", "user@sink.test")
			body := "Subject: bench\r\n\r\n" + strings.Repeat(strings.Repeat("x", 62)+"\r\n", size/64) + ".\r\n"
			b.SetBytes(int64(len(body)))
			b.SetParallelism(10)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := sendTo(y.Addr, "user@bench.test", body); err != nil {
						b.Error(err)
						return
					}
				}
			})
			deadline := time.Now().Add(60 * time.Second)
			for sk.count.Load() < int64(b.N) && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			b.StopTimer()
			if n := sk.count.Load(); n < int64(b.N) {
				b.Fatalf("%d of %d relayed", n, b.N)
			}
			ctx := context.Background()
			for {
				if n, _ := y.App.Store.QueueLen(ctx); n == 0 {
					break
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
}

func sendTo(addr, rcpt, body string) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for _, s := range []struct {
		line string
		want int
	}{{"", 220}, {"EHLO bench.test\r\n", 250}, {"MAIL FROM:<bench@example.org>\r\n", 250},
		{"RCPT TO:<" + rcpt + ">\r\n", 250}, {"DATA\r\n", 354}, {body, 250}, {"QUIT\r\n", 221}} {
		if s.line != "" {
			if _, err := c.Write([]byte(s.line)); err != nil {
				return err
			}
		}
		r, err := smtp.ReadReply(br, 100)
		if err != nil {
			return err
		}
		if r.Code != s.want {
			return fmt.Errorf("%q: %s", s.line, r.Error())
		}
	}
	return nil
}
