// Command imap-bench measures yubin's IMAP server against Debian's Dovecot on the same
// 10,000 messages in the same run (run it with bench/imap.sh, as root, which installs
// dovecot-imapd). Dovecot runs as a separate loopback instance with its own configuration
// under a temporary directory; the system's Dovecot is never touched.
//
// Operations (each timed ROUNDS times on a fresh connection, median reported):
//
//	select    SELECT INBOX
//	fetchall  FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)
//	search    UID SEARCH HEADER Message-ID <one message's id>
//	bodies    UID FETCH of 100 whole bodies (BODY.PEEK[]), spread over the mailbox
//
// The first round of fetchall and search is also reported on its own ("cold"): both
// servers parse every message once and cache what they parsed (Dovecot's index cache,
// yubin's message_meta and mailbox_search).
//
// -only yubin|dovecot measures one server; -cpuprofile writes a CPU profile of the yubin
// measurements (not of filling the store), for go tool pprof.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"yubin/internal/directory"
	"yubin/internal/imapserver"
	"yubin/internal/store"
)

func main() {
	n := flag.Int("n", 10000, "messages in the mailbox")
	rounds := flag.Int("rounds", 5, "timed rounds per operation")
	dovecot := flag.String("dovecot", "/usr/sbin/dovecot", "dovecot binary")
	out := flag.String("out", "", "also write the table to this file")
	keep := flag.Bool("keep", false, "keep the temporary directory (logs, both mail stores)")
	only := flag.String("only", "", "measure only this server (yubin or dovecot)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the yubin measurements (not the filling) to this file")
	flag.Parse()

	dir, err := os.MkdirTemp("", "yubin-imap-bench-")
	if err != nil {
		log.Fatal(err)
	}
	if !*keep {
		defer os.RemoveAll(dir)
	} else {
		log.Printf("data in %s", dir)
	}
	msgs := makeMessages(*n)

	var yAddr, dAddr string
	if *only != "dovecot" {
		var stopY func()
		yAddr, stopY = startYubin(dir, msgs)
		defer stopY()
	}
	if *only != "yubin" {
		var stopD func()
		dAddr, stopD = startDovecot(*dovecot, dir, msgs)
		defer stopD()
	}

	ops := []string{"select", "fetchall (cold)", "fetchall", "search (cold)", "search", "bodies"}
	results := map[string]map[string]time.Duration{"yubin": {}, "dovecot": {}}
	for _, srv := range []struct{ name, addr, user, pass string }{
		{"yubin", yAddr, "user@example.test", "bench-password"},
		{"dovecot", dAddr, "bench", "bench-password"},
	} {
		if *only != "" && *only != srv.name {
			continue
		}
		if *cpuprofile != "" && srv.name == "yubin" {
			f, err := os.Create(*cpuprofile)
			if err != nil {
				log.Fatal(err)
			}
			pprof.StartCPUProfile(f)
		}
		res := results[srv.name]
		res["select"] = median(*rounds, func() time.Duration { return timeOp(srv.addr, srv.user, srv.pass, "", "SELECT INBOX") })
		res["fetchall (cold)"] = timeOp(srv.addr, srv.user, srv.pass, "SELECT INBOX", "FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)")
		res["fetchall"] = median(*rounds, func() time.Duration {
			return timeOp(srv.addr, srv.user, srv.pass, "SELECT INBOX", "FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE ENVELOPE)")
		})
		id := fmt.Sprintf("<bench%d@example.net>", *n*2/3)
		search := "UID SEARCH HEADER Message-ID " + strconv.Quote(id)
		res["search (cold)"] = timeOp(srv.addr, srv.user, srv.pass, "SELECT INBOX", search)
		res["search"] = median(*rounds, func() time.Duration { return timeOp(srv.addr, srv.user, srv.pass, "SELECT INBOX", search) })
		var uids []string
		for i := range 100 {
			uids = append(uids, strconv.Itoa(1+i*(*n/100)))
		}
		res["bodies"] = median(*rounds, func() time.Duration {
			return timeOp(srv.addr, srv.user, srv.pass, "SELECT INBOX", "UID FETCH "+strings.Join(uids, ",")+" BODY.PEEK[]")
		})
		if *cpuprofile != "" && srv.name == "yubin" {
			pprof.StopCPUProfile()
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "IMAP, %d messages in INBOX, median of %d rounds (cold: first run)\n\n", *n, *rounds)
	fmt.Fprintf(&b, "| operation | yubin | Dovecot | yubin/Dovecot |\n|---|---:|---:|---:|\n")
	for _, op := range ops {
		y, d := results["yubin"][op], results["dovecot"][op]
		fmt.Fprintf(&b, "| %s | %.1f ms | %.1f ms | %.2f |\n", op, ms(y), ms(d), float64(y)/float64(d))
	}
	fmt.Print(b.String())
	if *out != "" && *only == "" {
		os.WriteFile(*out, []byte(b.String()), 0o644)
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func median(rounds int, f func() time.Duration) time.Duration {
	var ds []time.Duration
	for range rounds {
		ds = append(ds, f())
	}
	slices.Sort(ds)
	return ds[len(ds)/2]
}

// makeMessages builds n plain-text messages of 1-16 KiB with distinct headers.
func makeMessages(n int) [][]byte {
	r := rand.New(rand.NewPCG(1, 2))
	words := strings.Fields("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et dolore magna aliqua")
	msgs := make([][]byte, n)
	for i := range n {
		var b strings.Builder
		fmt.Fprintf(&b, "Return-Path: <sender%d@example.net>\r\n", i%50)
		fmt.Fprintf(&b, "From: Sender %d <sender%d@example.net>\r\nTo: Bench <bench@example.test>\r\n", i%50, i%50)
		fmt.Fprintf(&b, "Subject: Benchmark message %d about %s\r\n", i, words[i%len(words)])
		fmt.Fprintf(&b, "Date: %s\r\n", time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i)*time.Minute).Format(time.RFC1123Z))
		fmt.Fprintf(&b, "Message-ID: <bench%d@example.net>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n", i)
		size := 1024 + r.IntN(15*1024)
		for b.Len() < size {
			line := ""
			for len(line) < 70 {
				line += words[r.IntN(len(words))] + " "
			}
			b.WriteString(line + "\r\n")
		}
		msgs[i] = []byte(b.String())
	}
	return msgs
}

func startYubin(dir string, msgs [][]byte) (string, func()) {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(dir, "yubin"), store.Options{})
	if err != nil {
		log.Fatal(err)
	}
	if err := st.AddDomain(ctx, "example.test"); err != nil {
		log.Fatal(err)
	}
	hash, _ := directory.HashPassword("bench-password", directory.HashParams{Memory: 1024, Time: 1, Threads: 1})
	acct, err := st.AddAccount(ctx, "user@example.test", hash)
	if err != nil {
		log.Fatal(err)
	}
	// Concurrent deliveries share commits (group commit); UIDs follow commit order. As in
	// the app, each delivered message is queued to the background IMAP indexer.
	ix := imapserver.NewIndexer(st, nil)
	ix.Start()
	var idsMu sync.Mutex
	var ids []string
	work := make(chan []byte)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range work {
				b, err := st.NewBlob()
				if err != nil {
					log.Fatal(err)
				}
				b.Write(m)
				id := b.ID()
				if err := st.Deliver(ctx, &store.Commit{Blob: b, Recipients: []store.Recipient{{Address: "user@example.test", AccountID: acct.ID}}}); err != nil {
					log.Fatal(err)
				}
				ix.Queue(id)
				idsMu.Lock()
				ids = append(ids, id)
				idsMu.Unlock()
			}
		}()
	}
	for _, m := range msgs {
		work <- m
	}
	close(work)
	wg.Wait()
	// Mail arrives over time in real life; here, let the indexer catch up with the burst
	// (bounded), as it would between deliveries.
	for deadline := time.Now().Add(120 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if m, err := st.GetMessageMeta(ctx, ids[len(ids)-1:]); err == nil && len(m) == 1 {
			break
		}
	}
	ix.Close()
	d := &directory.Directory{Backend: backend{st}, HashParams: directory.HashParams{Memory: 1024, Time: 1, Threads: 1}}
	srv := &imapserver.Server{Store: st, Directory: d, AllowInsecureAuth: true, Logger: slog.New(slog.DiscardHandler)}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(l)
	return l.Addr().String(), func() {
		srv.Shutdown(context.Background())
		st.Close()
	}
}

type backend struct{ s *store.Store }

func (b backend) GetDomain(ctx context.Context, name string) (directory.Domain, error) {
	d, err := b.s.GetDomain(ctx, name)
	if err != nil {
		return directory.Domain{}, directory.ErrNotFound
	}
	return directory.Domain{Name: d.Name}, nil
}

func (b backend) GetAccount(ctx context.Context, addr string) (directory.Account, error) {
	a, err := b.s.GetAccount(ctx, addr)
	if err != nil {
		return directory.Account{}, directory.ErrNotFound
	}
	return directory.Account{ID: a.ID, Address: a.Address, PasswordHash: a.PasswordHash}, nil
}

func (b backend) GetAlias(context.Context, string) ([]string, error) {
	return nil, directory.ErrNotFound
}

const dovecotConf = `base_dir = {{dir}}/run
state_dir = {{dir}}/state
log_path = {{dir}}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
first_valid_uid = 100
mail_location = maildir:{{dir}}/Maildir
passdb {
  driver = static
  args = password=bench-password
}
userdb {
  driver = static
  args = uid=65534 gid=65534 home={{dir}}/home
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = {{port}}
  }
  inet_listener imaps {
    port = 0
  }
}
`

func startDovecot(bin, dir string, msgs [][]byte) (string, func()) {
	dd := filepath.Join(dir, "dovecot")
	for _, d := range []string{"run", "state", "home", "Maildir/cur", "Maildir/new", "Maildir/tmp"} {
		if err := os.MkdirAll(filepath.Join(dd, d), 0o755); err != nil {
			log.Fatal(err)
		}
	}
	os.Chmod(dd, 0o755)
	os.Chmod(dir, 0o755)
	base := time.Now().Add(-time.Duration(len(msgs)) * time.Second)
	for i, m := range msgs {
		p := filepath.Join(dd, "Maildir", "cur", fmt.Sprintf("%d.M%dP1.bench,S=%d:2,", base.Unix()+int64(i), i, len(m)))
		if err := os.WriteFile(p, m, 0o600); err != nil {
			log.Fatal(err)
		}
		t := base.Add(time.Duration(i) * time.Second)
		os.Chtimes(p, t, t)
	}
	// Dovecot rescans a maildir whose directory changed within the last seconds (it may still
	// be changing) on every SELECT; date the directories back so that it measures its index,
	// whenever the Dovecot rounds happen to start.
	for _, d := range []string{"Maildir/cur", "Maildir/new", "Maildir/tmp", "Maildir"} {
		os.Chtimes(filepath.Join(dd, d), base, base)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	conf := strings.NewReplacer("{{dir}}", dd, "{{port}}", strconv.Itoa(port)).Replace(dovecotConf)
	confPath := filepath.Join(dd, "dovecot.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		log.Fatal(err)
	}
	// Dovecot never reads mail as root: the mail store belongs to nobody.
	filepath.Walk(dd, func(p string, _ os.FileInfo, _ error) error { return os.Lchown(p, 65534, 65534) })
	cmd := exec.Command(bin, "-F", "-c", confPath)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	stopDovecot = func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if i > 100 {
			logs, _ := os.ReadFile(filepath.Join(dd, "dovecot.log"))
			log.Fatalf("dovecot did not start: %v\n%s", err, logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return addr, stopDovecot
}

// stopDovecot ends the Dovecot instance; fatal calls it so that no instance outlives a failed
// run.
var stopDovecot = func() {}

func fatal(v ...any) {
	stopDovecot()
	log.Fatal(v...)
}

// timeOp logs in on a new connection, runs setup, then times op until its tagged answer
// has been read completely.
func timeOp(addr, user, pass, setup, op string) time.Duration {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		fatal(err)
	}
	defer c.Close()
	br := bufio.NewReaderSize(c, 64<<10)
	readLine(br) // greeting
	run := func(tag, cmd string) {
		fmt.Fprintf(c, "%s %s\r\n", tag, cmd)
		for {
			l := readLine(br)
			if strings.HasPrefix(l, tag+" ") {
				if !strings.HasPrefix(l, tag+" OK") {
					fatalf("%s: %s", cmd, l)
				}
				return
			}
		}
	}
	run("a", fmt.Sprintf("LOGIN %s %s", user, strconv.Quote(pass)))
	if setup != "" {
		run("b", setup)
	}
	start := time.Now()
	run("c", op)
	d := time.Since(start)
	run("z", "LOGOUT")
	return d
}

// readLine reads a response line, consuming the literals it announces.
func readLine(br *bufio.Reader) string {
	var full strings.Builder
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			fatal(err)
		}
		full.WriteString(l)
		t := strings.TrimRight(l, "\r\n")
		if !strings.HasSuffix(t, "}") {
			return full.String()
		}
		i := strings.LastIndexByte(t, '{')
		n, err := strconv.Atoi(strings.TrimSuffix(t[i+1:len(t)-1], "+"))
		if i < 0 || err != nil {
			return full.String()
		}
		io.CopyN(io.Discard, br, int64(n))
	}
}

func fatalf(format string, v ...any) { fatal(fmt.Sprintf(format, v...)) }
