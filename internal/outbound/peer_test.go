package outbound

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"yubin/internal/smtp"
)

// A peer is a scripted SMTP server for tests. Each connection it accepts
// runs the next script: a list of steps that send replies and check the
// commands the client sends, in order. A connection beyond the scripts is
// an error. Mismatches are reported with t.Errorf; the test's end waits
// for every connection to finish.
type peer struct {
	t       testing.TB
	ln      net.Listener
	wg      sync.WaitGroup
	mu      sync.Mutex
	scripts [][]step
	conns   int
	done    int      // scripts that have ended
	data    []string // each message received, after dot-unstuffing
}

// step is one action of a script. An error ends the connection and fails
// the test.
type step func(*peerConn) error

type peerConn struct {
	net.Conn
	br *bufio.Reader
	p  *peer
}

// startPeer listens on 127.0.0.1:0 and serves one script per connection.
func startPeer(t testing.TB, scripts ...[]step) *peer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &peer{t: t, ln: ln, scripts: scripts}
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		ln.Close()
		p.wg.Wait()
	})
	return p
}

func (p *peer) addr() string { return p.ln.Addr().String() }

func (p *peer) port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// messages returns the content of each message received.
func (p *peer) messages() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.data...)
}

func (p *peer) finished() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

func (p *peer) connections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conns
}

func (p *peer) accept() {
	for {
		nc, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		i := p.conns
		p.conns++
		p.mu.Unlock()
		if i >= len(p.scripts) {
			p.t.Errorf("peer: unexpected connection #%d", i+1)
			nc.Close()
			continue
		}
		p.wg.Go(func() { p.serve(nc, p.scripts[i]) })
	}
}

// serve runs one script on nc, the same way for a TCP connection and for
// one end of a net.Pipe.
func (p *peer) serve(nc net.Conn, script []step) {
	c := &peerConn{Conn: nc, br: bufio.NewReader(nc), p: p}
	defer func() {
		c.Conn.Close()
		p.mu.Lock()
		p.done++
		p.mu.Unlock()
	}()
	for i, s := range script {
		if err := s(c); err != nil {
			p.t.Errorf("peer: step %d: %v", i+1, err)
			return
		}
	}
}

// seq flattens steps and lists of steps into one script.
func seq(parts ...any) []step {
	var out []step
	for _, p := range parts {
		switch p := p.(type) {
		case step:
			out = append(out, p)
		case func(*peerConn) error:
			out = append(out, p)
		case []step:
			out = append(out, p...)
		default:
			panic(fmt.Sprintf("seq: %T", p))
		}
	}
	return out
}

// say writes reply lines, each ended with CRLF.
func say(lines ...string) step {
	return func(c *peerConn) error {
		_, err := io.WriteString(c, strings.Join(lines, "\r\n")+"\r\n")
		return err
	}
}

// expect reads one command line and compares it with want; a want ending
// in "*" matches by prefix.
func expect(want string) step {
	return func(c *peerConn) error {
		line, err := smtp.ReadLine(c.br, 4096)
		if err != nil {
			return fmt.Errorf("want %q: %v", want, err)
		}
		got := string(line)
		if prefix, ok := strings.CutSuffix(want, "*"); ok {
			if !strings.HasPrefix(got, prefix) {
				return fmt.Errorf("got %q, want prefix %q", got, prefix)
			}
			return nil
		}
		if got != want {
			return fmt.Errorf("got %q, want %q", got, want)
		}
		return nil
	}
}

// readData reads DATA content through the terminator and keeps it.
func readData() step {
	return func(c *peerConn) error {
		b, err := io.ReadAll(smtp.NewDataReader(c.br))
		if err != nil {
			return fmt.Errorf("data: %v", err)
		}
		c.p.mu.Lock()
		c.p.data = append(c.p.data, string(b))
		c.p.mu.Unlock()
		return nil
	}
}

// readBDAT reads BDAT commands and their chunks through the LAST one.
func readBDAT() step {
	return func(c *peerConn) error {
		var msg []byte
		for {
			line, err := smtp.ReadLine(c.br, 512)
			if err != nil {
				return fmt.Errorf("want BDAT: %v", err)
			}
			f := strings.Fields(string(line))
			if len(f) < 2 || f[0] != "BDAT" {
				return fmt.Errorf("got %q, want BDAT", line)
			}
			n, err := strconv.Atoi(f[1])
			if err != nil {
				return fmt.Errorf("bad BDAT %q", line)
			}
			chunk := make([]byte, n)
			if _, err := io.ReadFull(c.br, chunk); err != nil {
				return fmt.Errorf("BDAT chunk: %v", err)
			}
			msg = append(msg, chunk...)
			if len(f) == 3 && f[2] == "LAST" {
				break
			}
			if _, err := io.WriteString(c, "250 2.0.0 chunk ok\r\n"); err != nil {
				return err
			}
		}
		c.p.mu.Lock()
		c.p.data = append(c.p.data, string(msg))
		c.p.mu.Unlock()
		return nil
	}
}

// startTLS turns the connection into the server side of TLS.
func startTLS(cfg *tls.Config) step {
	return func(c *peerConn) error {
		if c.br.Buffered() > 0 {
			return errors.New("client sent data before the TLS handshake")
		}
		tc := tls.Server(c.Conn, cfg)
		if err := tc.Handshake(); err != nil {
			return fmt.Errorf("TLS handshake: %v", err)
		}
		c.Conn = tc
		c.br = bufio.NewReader(tc)
		return nil
	}
}

// handshakeFails lets the client's TLS handshake fail: the peer answers
// the ClientHello with garbage and closes.
func handshakeFails() step {
	return func(c *peerConn) error {
		buf := make([]byte, 5)
		io.ReadFull(c.br, buf)
		io.WriteString(c, "this is not TLS\r\n")
		return nil
	}
}

// signal closes ch: the script has come this far.
func signal(ch chan struct{}) step {
	return func(*peerConn) error {
		close(ch)
		return nil
	}
}

// stall reads and drops everything until the client closes.
func stall() step {
	return func(c *peerConn) error {
		io.Copy(io.Discard, c.br)
		return nil
	}
}

// expectClose checks that the client closes without sending anything.
func expectClose() step {
	return func(c *peerConn) error {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, err := c.br.ReadString('\n')
		if err == nil || line != "" {
			return fmt.Errorf("got %q, want the connection closed", line)
		}
		return nil
	}
}

// quit is the polite end: QUIT and 221.
func quit() []step {
	return []step{expect("QUIT"), say("221 2.0.0 bye")}
}

// quitOrClose accepts a QUIT or a closed connection.
func quitOrClose() step {
	return func(c *peerConn) error {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, err := smtp.ReadLine(c.br, 512)
		if err != nil {
			return nil
		}
		if string(line) != "QUIT" {
			return fmt.Errorf("got %q, want QUIT or close", line)
		}
		io.WriteString(c, "221 2.0.0 bye\r\n")
		return nil
	}
}

const (
	clientName = "client.example.net"
	mxName     = "mx.example.test"
)

// greet is the peer's greeting.
func greet() step { return say("220 " + mxName + " ESMTP test") }

// ehlo expects EHLO from the client and announces exts.
func ehlo(exts ...string) []step {
	lines := []string{mxName + " hello"}
	lines = append(lines, exts...)
	for i := range lines {
		sep := "-"
		if i == len(lines)-1 {
			sep = " "
		}
		lines[i] = "250" + sep + lines[i]
	}
	return []step{expect("EHLO " + clientName), say(lines...)}
}

// pki is a test certificate authority.
type pki struct {
	t     testing.TB
	cert  *x509.Certificate
	key   *ecdsa.PrivateKey
	roots *x509.CertPool
}

func newPKI(t testing.TB) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "yubin test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	return &pki{t: t, cert: cert, key: key, roots: roots}
}

// serverConfig returns a TLS server configuration with a certificate for
// names signed by the CA, or self-signed when p is nil.
func (p *pki) serverConfig(names ...string) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{p.leaf(names...)}}
}

func (p *pki) leaf(names ...string) tls.Certificate {
	p.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		p.t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	parent, signer := p.cert, p.key
	if parent == nil { // self-signed
		parent, signer = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		p.t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// selfSigned returns a server configuration with a self-signed certificate.
func selfSigned(t testing.TB, names ...string) *tls.Config {
	return (&pki{t: t}).serverConfig(names...)
}
