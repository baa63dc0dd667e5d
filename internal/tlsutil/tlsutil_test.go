package tlsutil

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func leafCN(t *testing.T, r *Reloader) string {
	t.Helper()
	c, err := r.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf.Subject.CommonName
}

func TestSelfSignedIsStableAndValid(t *testing.T) {
	dir := t.TempDir()
	c1, k1, err := EnsureSelfSigned(dir, "mx.example.org")
	if err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(c1)
	c2, _, err := EnsureSelfSigned(dir, "mx.example.org")
	if err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(c2)
	if string(before) != string(after) {
		t.Error("a second EnsureSelfSigned replaced the certificate")
	}
	if fi, _ := os.Stat(k1); fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	block, _ := pem.Decode(before)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.VerifyHostname("mx.example.org"); err != nil {
		t.Error(err)
	}
	if err := cert.VerifyHostname("127.0.0.1"); err != nil {
		t.Error(err)
	}
}

func TestReloaderPicksUpNewFiles(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	write := func(host string, mtime time.Time) {
		c, k, err := SelfSigned(host, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(certFile, c, 0o600)
		os.WriteFile(keyFile, k, 0o600)
		os.Chtimes(certFile, mtime, mtime)
		os.Chtimes(keyFile, mtime, mtime)
	}
	t0 := time.Now().Add(-time.Hour)
	write("one.test", t0)
	r, err := NewReloader(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Now()
	r.now = func() time.Time { return clock }
	if cn := leafCN(t, r); cn != "one.test" {
		t.Fatalf("CN %q", cn)
	}
	write("two.test", t0.Add(time.Minute))
	clock = clock.Add(2 * time.Second)
	if cn := leafCN(t, r); cn != "two.test" {
		t.Errorf("after the files changed: CN %q, want two.test", cn)
	}
	// A broken renewal keeps the last good certificate.
	os.WriteFile(keyFile, []byte("garbage"), 0o600)
	clock = clock.Add(2 * time.Second)
	if cn := leafCN(t, r); cn != "two.test" {
		t.Errorf("after a broken key file: CN %q, want two.test", cn)
	}
}
