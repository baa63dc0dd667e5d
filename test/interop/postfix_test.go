package interop

// A real peer: Debian's Postfix, run as a private instance on loopback for the length of one
// test. yubin relays to it (MX lookup in the fake DNS, delivery into a Maildir that the test
// reads), and it relays to yubin (relay_transport to yubin's MX listener, read back from the
// INBOX). The instance has its own configuration, queue, data and mail directories under a
// temporary directory and its own port, so it runs beside bench/postfix.sh's
// "postfix-yubin-bench" and never touches the machine's /etc/postfix or port 25.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"yubin/internal/config"
	"yubin/internal/testenv"
)

// pfName tags the test instance: its host name, its log lines and its temporary directory.
// bench/postfix.sh uses "postfix-yubin-bench".
const pfName = "postfix-yubin-test"

// needRoot: Postfix's master must start as root (it drops to the postfix user). Tests run as
// root in CI, so there a missing privilege is a failure, not a skip.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test runs Postfix and must run as root under CI=true")
	}
	t.Skip("running Postfix needs root")
}

// postfixInstance is one private Postfix.
type postfixInstance struct {
	t    *testing.T
	dir  string // everything lives below: conf/, spool/, data/, mail/, maillog
	conf string
	addr string // 127.0.0.1:port of its smtpd
	mail string // virtual_mailbox_base
}

// startPostfix configures and starts an instance whose smtpd listens on 127.0.0.1:port. It
// delivers postfix.test (bob@postfix.test only) into a Maildir and relays example.test to
// relayTo ("127.0.0.1:port", yubin's MX listener). Both sides offer and use STARTTLS when the
// peer does (security level "may"), as on the Internet.
func startPostfix(t *testing.T, port int, relayTo string) *postfixInstance {
	t.Helper()
	needRoot(t)
	pf := testenv.NeedTool(t, "postfix")
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("virtual(8) delivers as nobody: %v", err)
	}
	if _, err := user.Lookup("postfix"); err != nil {
		t.Fatalf("the postfix package creates the postfix user: %v", err)
	}
	// Not t.TempDir: Postfix's daemons run as the postfix user and the Maildir belongs to
	// nobody, so every directory on the way must be searchable by them (t.TempDir's parent
	// is 0700).
	dir, err := os.MkdirTemp("", pfName+"-")
	if err != nil {
		t.Fatal(err)
	}
	in := &postfixInstance{t: t, dir: dir, conf: filepath.Join(dir, "conf"), addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		mail: filepath.Join(dir, "mail")}
	t.Cleanup(func() {
		in.stop()
		if t.Failed() {
			t.Logf("Postfix log (%s):\n%s", filepath.Join(dir, "maillog"), in.maillog())
		}
		os.RemoveAll(dir)
	})
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"conf", "spool", "data", "mail"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// data_directory belongs to the postfix user, the Maildir base to the delivery user.
	if out, err := exec.Command("chown", "postfix:postfix", filepath.Join(dir, "data")).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v %s", err, out)
	}
	uid, _ := strconv.Atoi(nobody.Uid)
	gid, _ := strconv.Atoi(nobody.Gid)
	if err := os.Chown(in.mail, uid, gid); err != nil {
		t.Fatal(err)
	}
	keyFile, certFile := filepath.Join(in.conf, "key.pem"), filepath.Join(in.conf, "cert.pem")
	writeSelfSigned(t, keyFile, certFile, pfName+".localhost")

	mainCf := []string{
		"# written by yubin test/interop/postfix_test.go; loopback only",
		"compatibility_level = 3.6",
		"syslog_name = " + pfName,
		"queue_directory = " + filepath.Join(dir, "spool"),
		"data_directory = " + filepath.Join(dir, "data"),
		// Logs go to a file of the instance (no syslog daemon in CI); Postfix only writes
		// under the listed prefixes.
		"maillog_file = " + filepath.Join(dir, "maillog"),
		"maillog_file_prefixes = " + dir,
		"myhostname = " + pfName + ".localhost",
		"mydestination =",
		"inet_interfaces = 127.0.0.1",
		"inet_protocols = ipv4",
		"mynetworks = 127.0.0.0/8",
		"alias_maps =",
		"alias_database =",
		"local_recipient_maps =",
		"smtpd_recipient_restrictions = permit_mynetworks, reject",
		"smtpd_tls_security_level = may",
		"smtpd_tls_chain_files = " + keyFile + ", " + certFile,
		"smtp_tls_security_level = may",
		// Only IP literals as next hops: Postfix resolves nothing.
		"smtp_dns_support_level = disabled",
		// A deferred message is retried within seconds, not Postfix's default 5 minutes.
		"queue_run_delay = 1s",
		"minimal_backoff_time = 1s",
		"maximal_backoff_time = 2s",
		// Receive: postfix.test into a Maildir, one mailbox.
		"virtual_mailbox_domains = postfix.test",
		"virtual_mailbox_base = " + in.mail,
		"virtual_mailbox_maps = inline:{ bob@postfix.test=bob/ }",
		"virtual_uid_maps = static:" + nobody.Uid,
		"virtual_gid_maps = static:" + nobody.Gid,
		"virtual_minimum_uid = 1",
		// Relay: example.test to yubin's MX listener.
		"relay_domains = example.test",
		"relay_transport = relay:[127.0.0.1]:" + mustPort(t, relayTo),
	}
	masterCf := fmt.Sprintf(`%s inet n - n - - smtpd
pickup    unix  n - n 60   1 pickup
cleanup   unix  n - n -    0 cleanup
qmgr      unix  n - n 300  1 qmgr
rewrite   unix  - - n -    - trivial-rewrite
bounce    unix  - - n -    0 bounce
defer     unix  - - n -    0 bounce
trace     unix  - - n -    0 bounce
verify    unix  - - n -    1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -    - proxymap
smtp      unix  - - n -    - smtp
relay     unix  - - n -    - smtp
tlsmgr    unix  - - n 1000? 1 tlsmgr
showq     unix  n - n -    - showq
error     unix  - - n -    - error
retry     unix  - - n -    - error
discard   unix  - - n -    - discard
virtual   unix  - n n -    - virtual
anvil     unix  - - n -    1 anvil
scache    unix  - - n -    1 scache
postlog   unix-dgram n - n - 1 postlogd
`, in.addr)
	if err := os.WriteFile(filepath.Join(in.conf, "main.cf"), []byte(strings.Join(mainCf, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(in.conf, "master.cf"), []byte(masterCf), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := in.postfix(pf, "start"); err != nil {
		t.Fatalf("postfix -c %s start: %v\n%s\n%s", in.conf, err, out, in.maillog())
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", in.addr, time.Second)
		if err == nil {
			c.Close()
			return in
		}
		if time.Now().After(deadline) {
			t.Fatalf("Postfix does not listen on %s: %v\n%s", in.addr, err, in.maillog())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func mustPort(t *testing.T, hostport string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// postfix runs the postfix command on the instance. Its output goes to a file, not a pipe:
// the master daemon it starts would otherwise hold the pipe open.
func (in *postfixInstance) postfix(bin string, args ...string) (string, error) {
	f, err := os.CreateTemp(in.dir, "cmd-*.out")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	cmd := exec.Command(bin, append([]string{"-c", in.conf}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	err = cmd.Run()
	out, _ := os.ReadFile(f.Name())
	return string(out), err
}

// masterPID is the instance's master process, 0 when none runs.
func (in *postfixInstance) masterPID() int {
	b, err := os.ReadFile(filepath.Join(in.dir, "spool", "pid", "master.pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 || syscall.Kill(pid, 0) != nil {
		return 0
	}
	return pid
}

// stop stops the instance and waits for its master to exit (it ends its children first).
func (in *postfixInstance) stop() {
	pid := in.masterPID()
	if pid == 0 {
		return
	}
	if bin, err := exec.LookPath("postfix"); err == nil {
		in.postfix(bin, "stop")
	}
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if syscall.Kill(pid, 0) != nil {
			return
		}
	}
	in.t.Errorf("Postfix master %d did not stop; killing it", pid)
	syscall.Kill(pid, syscall.SIGKILL)
}

func (in *postfixInstance) maillog() string {
	b, _ := os.ReadFile(filepath.Join(in.dir, "maillog"))
	return string(b)
}

// maildir returns the files delivered to a mailbox so far.
func (in *postfixInstance) maildir(box string) []string {
	files, _ := filepath.Glob(filepath.Join(in.mail, box, "new", "*"))
	return files
}

// writeSelfSigned writes a throwaway key and certificate for Postfix's smtpd.
func writeSelfSigned(t *testing.T, keyFile, certFile, host string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: host},
		DNSNames:     []string{host},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
}

// pfBody is a body that exercises transparency (RFC 5321 4.5.2) on both sides and is long
// enough to span many TCP segments.
func pfBody(tag string) []string {
	lines := append([]string{}, dotBody...)
	for i := range 1000 {
		l := fmt.Sprintf("%s line %04d %s", tag, i, strings.Repeat("0123456789", 6))
		if i%7 == 0 {
			l = "." + l
		}
		lines = append(lines, l)
	}
	return append(lines, "end of "+tag)
}

// TestPostfix: yubin and Postfix relay to each other over SMTP with STARTTLS, each checked by
// reading the receiving side's mailbox.
func TestPostfix(t *testing.T) {
	t.Parallel()
	needRoot(t)
	testenv.NeedTool(t, "postfix")
	pfPort := testenv.FreePort(t)
	y := testenv.Start(t, func(c *config.Config) {
		c.Relay.Port = pfPort
		c.Relay.RetryFirst = config.Duration(time.Second)
	})
	y.DNS.AddMX("postfix.test", 10, "mx.postfix.test")
	y.DNS.AddA("mx.postfix.test", "127.0.0.1")
	pf := startPostfix(t, pfPort, y.Addr)

	t.Run("yubin to Postfix", func(t *testing.T) {
		content := pfContent("User <user@example.test>", "bob@postfix.test", "to postfix", pfBody("outbound"))
		c := testenv.Dial(t, y.SubmissionAddr)
		c.Cmd("EHLO client.test", 250)
		c.StartTLS()
		c.Cmd("EHLO client.test", 250)
		c.CmdEnh("AUTH PLAIN AHVzZXJAZXhhbXBsZS50ZXN0AHBhc3N3b3JkMTIz", 235, "2.7.0") // user@example.test / password123
		if r := c.Send("user@example.test", []string{"bob@postfix.test"}, dotStuff(content)); r.Code != 250 {
			t.Fatalf("submission: %s", r.Error())
		}
		c.Cmd("QUIT", 221)
		waitForLong(t, "delivery into Postfix's Maildir", 60*time.Second, func() bool { return len(pf.maildir("bob")) > 0 })
		files := pf.maildir("bob")
		if len(files) != 1 {
			t.Fatalf("%d messages in the Maildir, want 1: %v", len(files), files)
		}
		got, err := os.ReadFile(files[0])
		if err != nil {
			t.Fatal(err)
		}
		// Postfix stores a Maildir message with LF line endings.
		want := bytes.ReplaceAll(content, []byte("\r\n"), []byte("\n"))
		if !bytes.HasSuffix(got, want) {
			t.Errorf("the Maildir message does not end with the submitted content (%d vs %d bytes); first 1500 bytes:\n%s",
				len(got), len(want), got[:min(len(got), 1500)])
		}
		head, _, _ := bytes.Cut(got, []byte("\n\n"))
		for _, w := range []string{
			"Return-Path: <user@example.test>\n",
			"Delivered-To: bob@postfix.test\n",
			"Received: from mx.test (",                          // Postfix saw yubin's EHLO name
			"by " + pfName + ".localhost (Postfix) with ESMTPS", // over STARTTLS
			"by mx.test (yubin) with ESMTPSA",                   // yubin's own Received, relayed
		} {
			if !bytes.Contains(head, []byte(w)) {
				t.Errorf("the Maildir message's header lacks %q:\n%s", w, head)
			}
		}
		if n := bytes.Count(head, []byte("Return-Path:")); n != 1 {
			t.Errorf("%d Return-Path fields; yubin must not relay its own:\n%s", n, head)
		}
		waitForLong(t, "yubin's queue to empty", 20*time.Second, func() bool {
			n, _ := y.App.Store.QueueLen(context.Background())
			return n == 0
		})
	})

	t.Run("Postfix to yubin", func(t *testing.T) {
		content := pfContent("Alice <alice@postfix.test>", "user@example.test", "from postfix", pfBody("inbound"))
		c := testenv.Dial(t, pf.addr)
		c.Cmd("EHLO client.test", 250)
		if r := c.Send("alice@postfix.test", []string{"user@example.test"}, dotStuff(content)); r.Code != 250 {
			t.Fatalf("injecting into Postfix: %s", r.Error())
		}
		c.Cmd("QUIT", 221)
		waitForLong(t, "Postfix's relay into yubin's INBOX", 60*time.Second, func() bool {
			return len(y.Messages("user@example.test", "INBOX")) > 0
		})
		msgs := y.Messages("user@example.test", "INBOX")
		if len(msgs) != 1 {
			t.Fatalf("%d messages in the INBOX, want 1", len(msgs))
		}
		got := msgs[0]
		if !bytes.HasSuffix(got, content) {
			t.Errorf("the stored message does not end with what was given to Postfix; first 1500 bytes:\n%s", got[:min(len(got), 1500)])
		}
		if !bytes.HasPrefix(got, []byte("Return-Path: <alice@postfix.test>\r\n")) {
			t.Errorf("Return-Path is not Postfix's envelope sender:\n%s", got[:min(len(got), 600)])
		}
		// Under yubin's Return-Path and Received: Postfix's Received, then the content.
		afterYubin := testenv.Body(got)
		head, _, _ := bytes.Cut(got, []byte("\r\n\r\n"))
		for _, w := range []string{
			"from " + pfName + ".localhost (", // yubin's Received names Postfix's EHLO
			"by mx.test (yubin) with ESMTPS",  // Postfix used STARTTLS
		} {
			if !bytes.Contains(head, []byte(w)) {
				t.Errorf("header lacks %q:\n%s", w, head)
			}
		}
		pfReceived, _, _ := bytes.Cut(afterYubin, content[:20])
		if !bytes.HasPrefix(pfReceived, []byte("Received: from client.test (")) ||
			!bytes.Contains(pfReceived, []byte("by "+pfName+".localhost (Postfix) with ESMTP id ")) {
			t.Errorf("no Received header from Postfix between yubin's and the content:\n%s", afterYubin[:min(len(afterYubin), 600)])
		}
	})
}

// pfContent is a message with its own Date and Message-ID, so that neither yubin's submission
// nor Postfix's cleanup adds a header to the content.
func pfContent(from, to, subject string, body []string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: Fri, 27 Nov 2026 10:00:00 +0000\r\nMessage-ID: <%s@client.test>\r\n\r\n",
		from, to, subject, strings.ReplaceAll(subject, " ", "."))
	for _, l := range body {
		b.WriteString(l + "\r\n")
	}
	return b.Bytes()
}

// dotStuff makes content ready for DATA (RFC 5321 4.5.2) with its terminating dot line.
func dotStuff(content []byte) string {
	s := bytes.ReplaceAll(content, []byte("\r\n."), []byte("\r\n.."))
	if bytes.HasPrefix(s, []byte(".")) {
		s = append([]byte("."), s...)
	}
	return string(s) + ".\r\n"
}

// waitForLong polls until cond holds, for at most d (bounded; not a timing assertion).
func waitForLong(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
