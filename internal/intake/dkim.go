package intake

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/emersion/go-msgauth/dkim"

	"yubin/internal/store"
)

// KeySource gives a domain's DKIM signing keys.
type KeySource interface {
	DKIMKeys(ctx context.Context, domain string) ([]store.DKIMKey, error)
}

// signedHeaders is the usual header set (RFC 6376 5.4.1); From is listed twice so that a
// second From added in transit breaks the signature (over-signing, RFC 6376 8.15).
var signedHeaders = []string{
	"From", "From", "Reply-To", "Subject", "Date", "To", "Cc", "Message-ID",
	"In-Reply-To", "References", "MIME-Version", "Content-Type", "Content-Transfer-Encoding",
	"List-Id", "List-Unsubscribe", "List-Unsubscribe-Post",
}

// keyCache keeps parsed private keys: parsing an RSA key per message would cost more than
// signing.
type keyCache struct {
	mu   sync.Mutex
	keys map[string]crypto.Signer // PEM text -> key
}

func (c *keyCache) get(pemText string) (crypto.Signer, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if k, ok := c.keys[pemText]; ok {
		return k, nil
	}
	k, err := ParsePrivateKey(pemText)
	if err != nil {
		return nil, err
	}
	if c.keys == nil {
		c.keys = map[string]crypto.Signer{}
	}
	c.keys[pemText] = k
	return k, nil
}

// ParsePrivateKey reads a PKCS#8 PEM private key usable for DKIM (Ed25519 or RSA).
func ParsePrivateKey(pemText string) (crypto.Signer, error) {
	block, _ := pem.Decode([]byte(pemText))
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key type %T cannot sign", k)
	}
	return s, nil
}

// SignDKIM signs the draft's content with every key of domain (Ed25519 and RSA keys can sign
// side by side, RFC 8463 3) and inserts the DKIM-Signature headers at the top of the message,
// after the Return-Path line. Relaxed/relaxed canonicalization survives the re-wrapping that
// some relays do. A domain without keys is left unsigned.
func (d *Draft) SignDKIM(ctx context.Context, domain string) error {
	if d.in.DKIM == nil {
		return nil
	}
	keys, err := d.in.DKIM.DKIMKeys(ctx, domain)
	if err != nil || len(keys) == 0 {
		return err
	}
	var signers []*dkim.Signer
	var ws []io.Writer
	for _, k := range keys {
		key, err := d.in.keys.get(k.PrivatePEM)
		if err != nil {
			return fmt.Errorf("DKIM key %s of %s: %w", k.Selector, k.Domain, err)
		}
		s, err := dkim.NewSigner(&dkim.SignOptions{
			Domain:                 k.Domain,
			Selector:               k.Selector,
			Signer:                 key,
			Hash:                   crypto.SHA256,
			HeaderCanonicalization: dkim.CanonicalizationRelaxed,
			BodyCanonicalization:   dkim.CanonicalizationRelaxed,
			HeaderKeys:             signedHeaders,
		})
		if err != nil {
			return fmt.Errorf("DKIM signer %s of %s: %w", k.Selector, k.Domain, err)
		}
		signers = append(signers, s)
		ws = append(ws, s)
	}
	r, err := d.bw.ReadBack(int64(d.returnPathLen))
	if err != nil {
		return err
	}
	_, err = io.Copy(io.MultiWriter(ws...), r)
	r.Close()
	if err != nil {
		return fmt.Errorf("DKIM signing: %w", err)
	}
	var sigs strings.Builder
	for _, s := range signers {
		if err := s.Close(); err != nil {
			return fmt.Errorf("DKIM signing: %w", err)
		}
		sigs.WriteString(s.Signature())
	}
	return d.bw.Insert(int64(d.returnPathLen), []byte(sigs.String()))
}

// DKIMRecord returns the TXT record name and value that publish k's public key (RFC 6376
// 3.6.1; RFC 8463 for Ed25519, whose p= is the raw 32-byte key).
func DKIMRecord(k store.DKIMKey) (name, value string, err error) {
	key, err := ParsePrivateKey(k.PrivatePEM)
	if err != nil {
		return "", "", err
	}
	var p []byte
	kt := "rsa"
	switch pub := key.Public().(type) {
	case ed25519.PublicKey:
		kt, p = "ed25519", pub
	default:
		if p, err = x509.MarshalPKIXPublicKey(pub); err != nil {
			return "", "", err
		}
	}
	return k.Selector + "._domainkey." + k.Domain, fmt.Sprintf("v=DKIM1; k=%s; p=%s", kt, base64.StdEncoding.EncodeToString(p)), nil
}

// GenerateDKIMKey makes a new signing key for domain: "ed25519" (RFC 8463) or "rsa" (2048
// bits, for verifiers without Ed25519). The caller stores it (Store.AddDKIMKey) and publishes
// DKIMRecord.
func GenerateDKIMKey(domain, selector, algo string) (store.DKIMKey, error) {
	var key any
	var err error
	switch algo {
	case "ed25519":
		_, key, err = ed25519.GenerateKey(rand.Reader)
	case "rsa":
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	default:
		return store.DKIMKey{}, fmt.Errorf("DKIM key algorithm %q: want ed25519 or rsa", algo)
	}
	if err != nil {
		return store.DKIMKey{}, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return store.DKIMKey{}, err
	}
	return store.DKIMKey{Domain: domain, Selector: selector, Algorithm: algo,
		PrivatePEM: string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))}, nil
}
