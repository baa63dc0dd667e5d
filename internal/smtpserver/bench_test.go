package smtpserver_test

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"

	"yubin/internal/config"
	"yubin/internal/smtp"
	"yubin/internal/testenv"
)

// BenchmarkDelivery measures the whole receive path as smtp-source drives it: a new
// connection per message, EHLO, MAIL, RCPT, DATA of 1 KiB, QUIT, with parallel clients; the
// message is durable in the INBOX when the 250 arrives. Compare runs with benchstat.
func BenchmarkDelivery(b *testing.B) {
	y := testenv.Start(b, func(c *config.Config) { c.SMTP.MaxConnectionsPerIP = 10000 })
	body := "Subject: bench\r\n\r\n" + strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n", 16) + ".\r\n"
	b.SetBytes(int64(len(body)))
	b.SetParallelism(10) // with GOMAXPROCS 2: 20 clients, as bench/run.sh case a
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := sendOne(y.Addr, body); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkDeliveryLarge is case b of bench/run.sh: 100 KiB messages from 10 clients.
func BenchmarkDeliveryLarge(b *testing.B) {
	y := testenv.Start(b, func(c *config.Config) { c.SMTP.MaxConnectionsPerIP = 10000 })
	body := "Subject: bench\r\n\r\n" + strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n", 1600) + ".\r\n"
	b.SetBytes(int64(len(body)))
	b.SetParallelism(5)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := sendOne(y.Addr, body); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkDeliverySequential is case c of bench/run.sh: one client, one message after the
// other, so nothing can share an fsync; it measures latency per message.
func BenchmarkDeliverySequential(b *testing.B) {
	y := testenv.Start(b)
	body := "Subject: bench\r\n\r\n" + strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n", 16) + ".\r\n"
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	for range b.N {
		if err := sendOne(y.Addr, body); err != nil {
			b.Fatal(err)
		}
	}
}

func sendOne(addr, body string) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	br := bufio.NewReader(c)
	step := func(line string, want int) error {
		if line != "" {
			if _, err := c.Write([]byte(line)); err != nil {
				return err
			}
		}
		r, err := smtp.ReadReply(br, 100)
		if err != nil {
			return err
		}
		if r.Code != want {
			return fmt.Errorf("%q: %s", line, r.Error())
		}
		return nil
	}
	for _, s := range []struct {
		line string
		want int
	}{{"", 220}, {"EHLO bench.test\r\n", 250}, {"MAIL FROM:<bench@example.org>\r\n", 250},
		{"RCPT TO:<user@example.test>\r\n", 250}, {"DATA\r\n", 354}, {body, 250}, {"QUIT\r\n", 221}} {
		if err := step(s.line, s.want); err != nil {
			return err
		}
	}
	return nil
}
