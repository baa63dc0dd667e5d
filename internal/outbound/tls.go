package outbound

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"time"
)

// tlsConfig is the client configuration for a connection to host. The
// handshake does not verify the certificate (InsecureSkipVerify):
// verifyPeer does it afterwards, so that opportunistic TLS can go on over
// an unverified certificate, which still protects against a passive
// listener, and record why it was not verified; a policy that needs a
// verified certificate then refuses the connection.
func tlsConfig(host string) *tls.Config {
	cfg := &tls.Config{
		InsecureSkipVerify: true,
		MinVersion:         tls.VersionTLS12,
	}
	if net.ParseIP(host) == nil && !strings.HasPrefix(host, "[") {
		cfg.ServerName = host // SNI: the MX host name (RFC 6066 3)
	}
	return cfg
}

// verifyPeer checks the peer's chain against roots (nil: the system roots)
// and its name against host, the MX host name (RFC 7817 and RFC 8461 4.1:
// the name from the MX record, not one found by following CNAMEs).
func verifyPeer(state tls.ConnectionState, host string, roots *x509.CertPool, now time.Time) error {
	certs := state.PeerCertificates
	if len(certs) == 0 {
		return errors.New("no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	host = strings.TrimPrefix(strings.ToLower(host), "ipv6:")
	_, err := certs[0].Verify(x509.VerifyOptions{
		DNSName:       host,
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
	})
	return err
}

// describeTLS returns the Attempt.TLS text: "TLS1.3 TLS_AES_128_GCM_SHA256
// verified" or "... unverified: <reason>".
func describeTLS(state tls.ConnectionState, verifyErr error) string {
	s := strings.ReplaceAll(tls.VersionName(state.Version), " ", "") + " " + tls.CipherSuiteName(state.CipherSuite)
	if verifyErr != nil {
		return s + " unverified: " + verifyErr.Error()
	}
	return s + " verified"
}
