package interop

// DKIM signatures checked by an independent verifier: Debian's python3-dkim (dkimpy), which
// fetches the public keys from the test's fake DNS server, so the records yubin tells the
// operator to publish are the ones that verify.

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"

	"yubin/internal/testenv"
)

// dkimPython returns the interpreter python3-dkim is installed for: the one named by its
// dkimverify script (Debian's /usr/bin/python3, which may not be the python3 on PATH).
func dkimPython(t *testing.T) string {
	t.Helper()
	script := testenv.NeedTool(t, "dkimverify")
	f, err := os.Open(script)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	line, _ := bufio.NewReader(f).ReadString('\n')
	interp, ok := strings.CutPrefix(strings.TrimSpace(line), "#!")
	if !ok || interp == "" {
		t.Fatalf("%s has no #! line: %q", script, line)
	}
	return strings.Fields(interp)[0]
}

// dkimVerify runs testdata/dkimverify.py on a message with keys from the DNS server at
// dnsAddr; it returns the script's output and whether every signature passed.
func dkimVerify(t *testing.T, py, dnsAddr string, msg []byte) (string, bool) {
	t.Helper()
	host, port, err := net.SplitHostPort(dnsAddr)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(py, "testdata/dkimverify.py", host, port, writeFile(t, "relayed.eml", msg)).CombinedOutput()
	if err == nil {
		return string(out), true
	}
	if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 1 {
		return string(out), false
	}
	t.Fatalf("dkimverify.py: %v\n%s", err, out)
	return "", false
}

// TestDKIMVerifiedByDkimpy: a message submitted by user@example.test, whose domain has an
// Ed25519 and an RSA key, is relayed to another server with two signatures; dkimpy verifies
// both with the keys published in DNS, and neither once one byte of the body is changed.
func TestDKIMVerifiedByDkimpy(t *testing.T) {
	t.Parallel()
	py := dkimPython(t)
	sender, dest := twoYubins(t)

	// What "yubin dkim keygen example.test --algo ed25519|rsa" does: a key in the store, and
	// the TXT record to publish, here in the fake DNS that the sender also resolves MX with.
	var names []string
	for name, value := range sender.AddDKIMKeys("example.test") {
		sender.DNS.AddTXT(name, value)
		names = append(names, name)
	}

	// Relaxed canonicalization has work to do: a folded header, trailing white space, runs
	// of spaces, dot lines and trailing empty lines.
	content := []byte("From: User <user@example.test>\r\n" +
		"To: Bob <bob@remote.test>\r\n" +
		"Subject: a signed message whose subject\r\n  is folded   over two lines\r\n" +
		"Date: Fri, 27 Nov 2026 10:00:00 +0000\r\n" +
		"Message-ID: <signed.1@client.test>\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=us-ascii\r\n" +
		"\r\n" +
		"Hello Bob,\r\n" +
		"a line with trailing white space \t \r\n" +
		"several    spaces   inside\r\n" +
		".a line starting with a dot\r\n" +
		".\r\n" +
		"bye\r\n" +
		"\r\n\r\n")
	c := testenv.Dial(t, sender.SubmissionAddr)
	c.Cmd("EHLO client.test", 250)
	c.StartTLS()
	c.Cmd("EHLO client.test", 250)
	c.CmdEnh("AUTH PLAIN AHVzZXJAZXhhbXBsZS50ZXN0AHBhc3N3b3JkMTIz", 235, "2.7.0") // user@example.test / password123
	if r := c.Send("user@example.test", []string{"bob@remote.test"}, dotStuff(content)); r.Code != 250 {
		t.Fatalf("submission: %s", r.Error())
	}
	c.Cmd("QUIT", 221)
	waitFor(t, "delivery at the destination", func() bool { return len(dest.Messages("bob@remote.test", "INBOX")) == 1 })
	stored := dest.Messages("bob@remote.test", "INBOX")[0]
	// As a verifier at the destination sees it: without the Return-Path line of the final
	// delivery, with the destination's Received header above the signatures.
	_, relayed, ok := bytes.Cut(stored, []byte("\r\n"))
	if !ok || !bytes.HasPrefix(stored, []byte("Return-Path: ")) {
		t.Fatalf("stored message does not start with Return-Path:\n%s", stored)
	}
	if n := bytes.Count(relayed, []byte("\r\nDKIM-Signature: ")); n != 2 {
		t.Fatalf("%d DKIM-Signature fields, want 2:\n%s", n, relayed)
	}

	out, ok := dkimVerify(t, py, sender.DNS.Addr(), relayed)
	if !ok {
		t.Errorf("dkimpy does not verify the relayed message:\n%s\nmessage:\n%s", out, relayed)
	}
	for _, want := range []string{"d=example.test s=ed1 a=ed25519-sha256 pass", "d=example.test s=rsa1 a=rsa-sha256 pass"} {
		if !strings.Contains(out, want) {
			t.Errorf("dkimpy output lacks %q:\n%s", want, out)
		}
	}
	// The keys came from the fake DNS, not from anywhere else.
	for _, name := range names {
		if !strings.Contains(out, "dns "+name+". TXT found") || sender.DNS.Queries(name, "TXT") == 0 {
			t.Errorf("the key %s was not fetched from the fake DNS server:\n%s", name, out)
		}
	}

	// Negative control: one byte of the body changed, both signatures fail (body hash).
	i := bytes.Index(relayed, []byte("\r\n\r\nHello Bob,"))
	if i < 0 {
		t.Fatalf("body not found in\n%s", relayed)
	}
	tampered := bytes.Clone(relayed)
	tampered[i+4] = 'J' // "Jello Bob,"
	out, ok = dkimVerify(t, py, sender.DNS.Addr(), tampered)
	if ok {
		t.Errorf("dkimpy verified a message whose body was changed:\n%s", out)
	}
	for _, want := range []string{"s=ed1 a=ed25519-sha256 fail", "s=rsa1 a=rsa-sha256 fail"} {
		if !strings.Contains(out, want) {
			t.Errorf("after tampering, dkimpy output lacks %q:\n%s", want, out)
		}
	}
}
