package main

// Black-box tests of the built yubin binary: the CLI, serve with a config file, quickstart,
// SIGTERM and SIGKILL.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"yubin/internal/testenv"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// yubinBinary builds the binary once per test run.
func yubinBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "yubin-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "yubin")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// instance is a data directory with a config file, served by the binary on demand.
type instance struct {
	t      *testing.T
	bin    string
	dir    string
	config string
	addr   string
	// subAddr and subsAddr are the submission listeners; socket is the sendmail socket.
	subAddr, subsAddr, socket string
	cmd                       *exec.Cmd
	env                       []string // serve's environment, when not the test's own
	logs                      *bytes.Buffer
	mu                        sync.Mutex
}

func newInstance(t *testing.T) *instance {
	in := &instance{t: t, bin: yubinBinary(t), dir: t.TempDir(), addr: testenv.FreeAddr(t), subAddr: testenv.FreeAddr(t), subsAddr: testenv.FreeAddr(t)}
	sockDir, err := os.MkdirTemp("", "yb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	in.socket = filepath.Join(sockDir, "submit.sock")
	in.config = filepath.Join(in.dir, "yubin.toml")
	cfg := fmt.Sprintf(`hostname = "mx.test"
data_dir = "data"
shutdown_timeout = "10s"

[smtp]
listen = [%q]
max_connections_per_ip = 100

[relay]
dns_servers = ["127.0.0.1:1"]  # loopback only: nothing answers, lookups fail at once

[imap]
listen = []
listen_tls = []

[pop3]
listen = []
listen_tls = []

[submission]
listen = [%q]
listen_tls = [%q]
socket = %q
`, in.addr, in.subAddr, in.subsAddr, in.socket)
	if err := os.WriteFile(in.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	in.cli("", "domain", "add", "example.test")
	in.cli("secret-password\n", "account", "add", "user@example.test", "--password-stdin")
	t.Cleanup(func() {
		if in.cmd != nil && in.cmd.ProcessState == nil {
			in.cmd.Process.Kill()
			in.cmd.Wait()
		}
	})
	return in
}

// cli runs a management command against the instance's config and returns its output.
func (in *instance) cli(stdin string, args ...string) string {
	in.t.Helper()
	out, err := in.cliErr(stdin, args...)
	if err != nil {
		in.t.Fatalf("yubin %v: %v\n%s", args, err, out)
	}
	return out
}

func (in *instance) cliErr(stdin string, args ...string) (string, error) {
	cmd := exec.Command(in.bin, append(args, "--config", in.config)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// start runs "yubin serve" and waits until it accepts connections.
func (in *instance) start() {
	in.t.Helper()
	in.logs = &bytes.Buffer{}
	in.cmd = exec.Command(in.bin, "serve", "--config", in.config)
	in.cmd.Env = in.env
	in.cmd.Stderr = &lockedWriter{w: in.logs, mu: &in.mu}
	if err := in.cmd.Start(); err != nil {
		in.t.Fatal(err)
	}
	// The server opens its listeners one after another, the SMTP port before the sendmail
	// socket: a test may use either as soon as start returns, so it waits for both.
	deadline := time.Now().Add(20 * time.Second)
	for _, l := range []struct{ network, addr string }{{"tcp", in.addr}, {"unix", in.socket}} {
		for {
			c, err := net.DialTimeout(l.network, l.addr, time.Second)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				in.t.Fatalf("yubin did not start listening on %s: %v\n%s", l.addr, err, in.logText())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func (in *instance) logText() string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.logs.String()
}

func (in *instance) kill() {
	in.cmd.Process.Signal(syscall.SIGKILL)
	in.cmd.Wait()
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestCLIManagesWhatIsHosted(t *testing.T) {
	t.Parallel()
	in := newInstance(t)
	if out := in.cli("", "domain", "list"); out != "example.test\n" {
		t.Errorf("domain list: %q", out)
	}
	out := in.cli("", "account", "add", "Second@Example.Test")
	if !regexp.MustCompile(`(?m)^password: \S{16}$`).MatchString(out) {
		t.Errorf("account add without --password-stdin should print a generated password: %q", out)
	}
	if out := in.cli("", "account", "list"); out != "second@example.test\nuser@example.test\n" {
		t.Errorf("account list: %q", out)
	}
	in.cli("", "alias", "add", "team@example.test", "user@example.test", "second@example.test")
	if out := in.cli("", "alias", "list"); out != "team@example.test -> second@example.test, user@example.test\n" {
		t.Errorf("alias list: %q", out)
	}
	if out, err := in.cliErr("", "domain", "remove", "example.test"); err == nil {
		t.Errorf("removing a domain with accounts must fail: %s", out)
	}
	if out, err := in.cliErr("", "account", "add", "user@example.test", "--password-stdin"); err == nil {
		t.Errorf("adding an existing account must fail: %s", out)
	}
	if out, err := in.cliErr("", "account", "add", "x@nothosted.test"); err == nil {
		t.Errorf("adding an account of an unknown domain must fail: %s", out)
	}
	in.cli("new-password-1\n", "account", "passwd", "second@example.test", "--password-stdin")
	in.cli("", "alias", "remove", "team@example.test")
	in.cli("", "account", "remove", "second@example.test")
	if out := in.cli("", "account", "list", "example.test"); out != "user@example.test\n" {
		t.Errorf("account list after remove: %q", out)
	}
	if out := in.cli("", "alias", "list"); out != "" {
		t.Errorf("alias list after remove: %q", out)
	}
	// No password is stored in clear.
	db, err := os.ReadFile(filepath.Join(in.dir, "data", "yubin.db"))
	if err != nil {
		t.Fatal(err)
	}
	wal, _ := os.ReadFile(filepath.Join(in.dir, "data", "yubin.db-wal"))
	if bytes.Contains(append(db, wal...), []byte("secret-password")) || bytes.Contains(append(db, wal...), []byte("new-password-1")) {
		t.Error("a clear-text password is in the database")
	}
	if !bytes.Contains(append(db, wal...), []byte("$argon2id$")) {
		t.Error("no argon2id hash in the database")
	}
}

func TestConfigCheckReportsEveryError(t *testing.T) {
	t.Parallel()
	bin := yubinBinary(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte(`hostname = "mx.test"
data_dir = "d"
colour = "blue"
[log]
level = "loud"
[smtp]
listen = ["127.0.0.1:notaport"]
max_recipients = 10
command_timeout = "5x"
`), 0o600)
	out, err := exec.Command(bin, "config", "check", "--config", bad).CombinedOutput()
	if err == nil {
		t.Fatalf("config check accepted a bad file: %s", out)
	}
	// The TOML decoder stops at a value it cannot decode ("5x"), so check that one alone.
	for _, want := range []string{"command_timeout"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("config check output lacks %q:\n%s", want, out)
		}
	}
	os.WriteFile(bad, []byte(`hostname = "mx.test"
data_dir = "d"
colour = "blue"
[log]
level = "loud"
[smtp]
listen = ["127.0.0.1:notaport"]
max_recipients = 10
`), 0o600)
	out, err = exec.Command(bin, "config", "check", "--config", bad).CombinedOutput()
	if err == nil {
		t.Fatalf("config check accepted a bad file: %s", out)
	}
	for _, want := range []string{"colour: unknown key", "log.level", "smtp.listen[0]", "smtp.max_recipients"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("config check output lacks %q:\n%s", want, out)
		}
	}
	good := filepath.Join(dir, "good.toml")
	os.WriteFile(good, []byte("hostname = \"mx.test\"\n[smtp]\nlisten = [\"127.0.0.1:2525\"]\nmax_message_size = \"10MiB\"\n"), 0o600)
	if out, err := exec.Command(bin, "config", "check", "--config", good).CombinedOutput(); err != nil {
		t.Errorf("config check refused a good file: %v\n%s", err, out)
	}
}

// TestServeSeesCLIChanges: accounts added while the server runs receive mail at once.
func TestServeSeesCLIChanges(t *testing.T) {
	t.Parallel()
	in := newInstance(t)
	in.start()
	c := testenv.Dial(t, in.addr)
	c.Cmd("EHLO client.test", 250)
	c.Cmd("MAIL FROM:<a@example.org>", 250)
	c.CmdEnh("RCPT TO:<late@example.test>", 550, "5.1.1")
	c.CmdEnh("RCPT TO:<x@late.test>", 554, "5.7.1")
	in.cli("", "account", "add", "late@example.test")
	in.cli("", "domain", "add", "late.test")
	in.cli("", "account", "add", "x@late.test")
	c.Cmd("RCPT TO:<late@example.test>", 250)
	c.Cmd("RCPT TO:<x@late.test>", 250)
	c.Cmd("DATA", 354)
	c.Write("Subject: hi\r\n\r\nhello\r\n.\r\n")
	c.Expect(250)
	c.Cmd("QUIT", 221)
	for _, a := range []string{"late@example.test", "x@late.test"} {
		if out := in.cli("", "mail", "list", a); !strings.Contains(out, "\n1 ") {
			t.Errorf("%s has no message 1: %q", a, out)
		}
	}
}

// TestSIGTERMIsGraceful: an idle session gets 421 4.3.2, a session in DATA finishes its
// message (250), and the process exits 0.
func TestSIGTERMIsGraceful(t *testing.T) {
	t.Parallel()
	in := newInstance(t)
	in.start()
	idle := testenv.Dial(t, in.addr)
	idle.Cmd("EHLO idle.test", 250)
	busy := testenv.Dial(t, in.addr)
	busy.Cmd("EHLO busy.test", 250)
	busy.Cmd("MAIL FROM:<a@example.org>", 250)
	busy.Cmd("RCPT TO:<user@example.test>", 250)
	busy.Cmd("DATA", 354)
	busy.Write("Subject: in flight\r\n\r\nfirst half\r\n")
	time.Sleep(100 * time.Millisecond) // let the server read the first half (not a timing assertion)
	in.cmd.Process.Signal(syscall.SIGTERM)
	r := idle.Expect(421)
	if r.Enhanced != "4.3.2" {
		t.Errorf("idle session got %s, want 421 4.3.2", r.Error())
	}
	busy.Write("second half\r\n.\r\n")
	busy.Expect(250)
	busy.Expect(421)
	done := make(chan error, 1)
	go func() { done <- in.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("yubin exited with %v\n%s", err, in.logText())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("yubin did not exit after SIGTERM")
	}
	if out := in.cli("", "mail", "list", "user@example.test"); !strings.Contains(out, "\n1 ") {
		t.Errorf("the message finished during shutdown is not stored: %q", out)
	}
	if _, err := net.DialTimeout("tcp", in.addr, time.Second); err == nil {
		t.Error("still accepting connections after exit")
	}
}

// TestQuickstart runs the README's first command and delivers a message to the demo account.
func TestQuickstart(t *testing.T) {
	t.Parallel()
	bin := yubinBinary(t)
	data := filepath.Join(t.TempDir(), "data")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "quickstart", "--data", data, "--smtp", "127.0.0.1:0", "--submission", "127.0.0.1:0", "--submissions", "127.0.0.1:0",
		"--imap", "127.0.0.1:0", "--imaps", "127.0.0.1:0", "--pop3", "127.0.0.1:0", "--pop3s", "127.0.0.1:0")
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	sc := bufio.NewScanner(stdout)
	var printed strings.Builder
	var addr, password string
	for sc.Scan() && (addr == "" || password == "") {
		line := sc.Text()
		printed.WriteString(line + "\n")
		if m := regexp.MustCompile(`SMTP \(MX\)\s+(\S+) port (\d+)`).FindStringSubmatch(line); m != nil {
			addr = net.JoinHostPort(m[1], m[2])
		}
		if m := regexp.MustCompile(`password\s+(\S+)`).FindStringSubmatch(line); m != nil {
			password = m[1]
		}
	}
	if addr == "" || password == "" {
		t.Fatalf("quickstart did not print the listener and password:\n%s", printed.String())
	}
	go io.Copy(io.Discard, stdout)
	c := testenv.Dial(t, addr)
	c.Cmd("EHLO client.test", 250)
	c.StartTLS()
	c.Cmd("EHLO client.test", 250)
	if r := c.Send("you@example.org", []string{"demo@yubin.test"}, "Subject: first\r\n\r\nhello\r\n.\r\n"); r.Code != 250 {
		t.Fatalf("send: %s", r.Error())
	}
	out, err := exec.Command(bin, "mail", "show", "demo@yubin.test", "1", "--data", data).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Subject: first\r\n\r\nhello\r\n") {
		t.Fatalf("mail show: %v\n%s", err, out)
	}
}
