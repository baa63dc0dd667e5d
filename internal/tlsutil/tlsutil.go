// Package tlsutil owns yubin's certificates: loading a certificate pair from PEM files and
// reloading it when the files change (no restart), and generating a self-signed certificate
// for quickstart and for servers configured without one.
package tlsutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Reloader serves a certificate pair and re-reads the files when their modification time or
// size changes. Checks are rate-limited, so a handshake costs at most two stat calls a second.
type Reloader struct {
	certFile, keyFile string
	now               func() time.Time

	mu        sync.Mutex
	cert      *tls.Certificate
	stamp     string
	lastCheck time.Time
}

// NewReloader loads the pair once; an error here means the files are unusable now.
func NewReloader(certFile, keyFile string) (*Reloader, error) {
	r := &Reloader{certFile: certFile, keyFile: keyFile, now: time.Now}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Reloader) fileStamp() (string, error) {
	var s string
	for _, f := range []string{r.certFile, r.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return "", err
		}
		s += fmt.Sprintf("%d/%d;", fi.ModTime().UnixNano(), fi.Size())
	}
	return s, nil
}

func (r *Reloader) load() error {
	stamp, err := r.fileStamp()
	if err != nil {
		return fmt.Errorf("certificate: %w", err)
	}
	c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("certificate %s: %w", r.certFile, err)
	}
	r.cert, r.stamp = &c, stamp
	return nil
}

// GetCertificate is for tls.Config.GetCertificate. When the files changed but cannot be loaded
// (a half-written renewal), the previous certificate stays in use.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := r.now(); now.Sub(r.lastCheck) >= time.Second {
		r.lastCheck = now
		if stamp, err := r.fileStamp(); err == nil && stamp != r.stamp {
			_ = r.load()
		}
	}
	return r.cert, nil
}

// ServerConfig returns a tls.Config for a listener. minVersion is tls.VersionTLS12 for
// submission and IMAP (RFC 8996); the MX listener may accept older peers (opportunistic TLS,
// RFC 7435: any encryption beats plain text). Go's default cipher suites are used: AEAD
// with forward secrecy first, no RC4 or 3DES.
//
// Session tickets are off: Microsoft's SMTP clients (outlook.com, Exchange Online) abort
// the handshake when a Go TLS 1.3 server sends them (golang/go#70232); mox, chasquid and
// maddy turned them off for the same reason. Mail sessions gain nothing from resumption.
func ServerConfig(getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error), minVersion uint16) *tls.Config {
	return &tls.Config{
		GetCertificate:         getCert,
		MinVersion:             minVersion,
		SessionTicketsDisabled: true,
	}
}

// EnsureSelfSigned returns the paths of a self-signed certificate for hostname in dir,
// generating it on first use (ECDSA P-256, valid ten years). Quickstart and servers without a
// configured certificate use it; mail clients will ask the user to trust it.
func EnsureSelfSigned(dir, hostname string) (certFile, keyFile string, err error) {
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if _, err1 := os.Stat(certFile); err1 == nil {
		if _, err2 := os.Stat(keyFile); err2 == nil {
			return certFile, keyFile, nil
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", err
	}
	certPEM, keyPEM, err := SelfSigned(hostname, time.Now())
	if err != nil {
		return "", "", err
	}
	if err := writeFileSync(keyFile, keyPEM, 0o600); err != nil {
		return "", "", err
	}
	if err := writeFileSync(certFile, certPEM, 0o644); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// SelfSigned makes a PEM certificate and key for the host names and IPs given.
func SelfSigned(hostname string, now time.Time, extra ...string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: hostname, Organization: []string{"yubin self-signed"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, n := range append([]string{hostname, "localhost"}, extra...) {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if n != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	tmpl.IPAddresses = append(tmpl.IPAddresses, net.IPv4(127, 0, 0, 1), net.IPv6loopback)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}

func writeFileSync(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err2 := f.Sync(); err == nil {
		err = err2
	}
	if err2 := f.Close(); err == nil {
		err = err2
	}
	if err != nil {
		return errors.Join(err, os.Remove(tmp))
	}
	return os.Rename(tmp, path)
}
