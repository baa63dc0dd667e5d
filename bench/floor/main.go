// Command floor is the lower bound for benchmark case c (one SMTP session, one message at a
// time): a minimal SMTP responder that does nothing per message but what any server that
// acknowledges only durable mail must do, the SMTP dialogue and one fdatasync. It writes the
// same bytes a yubin commit of a 1 KiB message writes to its WAL (six frames: a 24-byte
// header and an 8 KiB page each), overwriting a preallocated file in a ring as yubin's WAL
// does once it starts over. Beyond splitting command lines (with yubin's own parser) it
// parses nothing, checks nothing and keeps nothing readable.
//
// bench/run.sh runs it beside yubin and Postfix on case c (FLOOR=1): the gap between the
// floor and yubin is what yubin's own work costs per message (parsing, directory lookups,
// SQLite), and the floor's ratio to Postfix is the most any design with one fsync per
// message could reach on that machine that day.
//
//	floor -listen 127.0.0.1:25027 -file /tmp/floor.wal
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"strings"
	"sync"

	"yubin/internal/smtp"
)

const (
	frames    = 6    // WAL frames of a yubin mailbox commit of one small message
	frameHead = 24   // SQLite's WAL frame header
	pageSize  = 8192 // yubin's SQLite page size
	ringSize  = 16 << 20
)

func main() {
	listen := flag.String("listen", "127.0.0.1:25027", "address to listen on")
	file := flag.String("file", "", "file to write and fdatasync per message (required)")
	flag.Parse()
	if *file == "" {
		log.Fatal("floor: -file is required")
	}
	j, err := openJournal(*file)
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go serve(c, j)
	}
}

// journal is the ring the messages are "committed" to, one at a time.
type journal struct {
	mu   sync.Mutex
	f    *os.File
	off  int64
	head [frameHead]byte
}

func openJournal(path string) (*journal, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	// Allocated and durable before the first message: commits overwrite, as yubin's WAL
	// does after its first start over.
	if _, err := f.WriteAt(make([]byte, ringSize+frames*(frameHead+pageSize)), 0); err != nil {
		return nil, err
	}
	if err := f.Sync(); err != nil {
		return nil, err
	}
	return &journal{f: f}, nil
}

// commit writes msg into six frames (two writes each, as SQLite does) and fdatasyncs.
func (j *journal) commit(msg []byte) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	page := make([]byte, pageSize)
	for i := 0; i < frames; i++ {
		copy(page, msg)
		if len(msg) > pageSize {
			msg = msg[pageSize:]
		} else {
			msg = nil
		}
		if _, err := j.f.WriteAt(j.head[:], j.off); err != nil {
			return err
		}
		if _, err := j.f.WriteAt(page, j.off+frameHead); err != nil {
			return err
		}
		j.off += frameHead + pageSize
	}
	if j.off >= ringSize {
		j.off = 0
	}
	return fdatasync(j.f)
}

func serve(c net.Conn, j *journal) {
	defer c.Close()
	r := bufio.NewReader(c)
	w := bufio.NewWriter(c)
	say := func(s string) bool {
		w.WriteString(s + "\r\n")
		return w.Flush() == nil
	}
	if !say("220 floor ESMTP") {
		return
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		// yubin's own command parser: the floor's dialogue costs what yubin's does.
		cmd, err := smtp.ParseCommand([]byte(strings.TrimRight(line, "\r\n")))
		if err != nil {
			if !say(err.Error()) {
				return
			}
			continue
		}
		switch cmd.Verb {
		case "EHLO":
			if !say("250-floor\r\n250 PIPELINING") {
				return
			}
		case "DATA":
			if !say("354 end with <CRLF>.<CRLF>") {
				return
			}
			var msg []byte
			for {
				l, err := r.ReadSlice('\n')
				if err != nil {
					return
				}
				if string(l) == ".\r\n" {
					break
				}
				msg = append(msg, l...)
			}
			reply := "250 2.0.0 OK"
			if err := j.commit(msg); err != nil {
				reply = fmt.Sprintf("451 4.3.0 %v", err)
			}
			if !say(reply) {
				return
			}
		case "QUIT":
			say("221 2.0.0 bye")
			return
		default: // HELO, MAIL, RCPT, RSET, NOOP: accepted without a look
			if !say("250 2.0.0 OK") {
				return
			}
		}
	}
}
