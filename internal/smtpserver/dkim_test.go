package smtpserver_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"

	"yubin/internal/store"
	"yubin/internal/testenv"
)

// TestDKIMSigning: submitted mail of a domain with an Ed25519 and an RSA key carries two
// signatures that verify against the published records; MX mail is not signed.
func TestDKIMSigning(t *testing.T) {
	t.Parallel()
	y := testenv.Start(t)
	records := y.AddDKIMKeys("example.test")
	c := submit(t, y)
	content := "From: User <user@example.test>\r\nTo: friend@remote.test\r\nSubject: signed\r\n\r\nHello,\r\n.dotted line\r\n"
	deliver(t, c, "user@example.test", []string{"user@example.test"}, content)
	stored := onlyMessage(t, y, "user@example.test")
	if !bytes.HasPrefix(stored, []byte("Return-Path: <user@example.test>\r\nDKIM-Signature: ")) {
		t.Fatalf("no DKIM-Signature at the top:\n%s", stored)
	}
	body := stored[bytes.Index(stored, []byte("\r\n"))+2:] // without Return-Path, as relayed
	verifs, err := dkim.VerifyWithOptions(bytes.NewReader(body), &dkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) {
			if v, ok := records[strings.TrimSuffix(name, ".")]; ok {
				return []string{v}, nil
			}
			return nil, fmt.Errorf("no record %s", name)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(verifs) != 2 {
		t.Fatalf("%d signatures, want 2", len(verifs))
	}
	for _, v := range verifs {
		if v.Err != nil || v.Domain != "example.test" {
			t.Errorf("signature %+v does not verify: %v", v, v.Err)
		}
	}
	// A message past InlineMax lives in a file: the signature is inserted there too.
	big := "From: User <user@example.test>\r\nSubject: big\r\n\r\n" + strings.Repeat(strings.Repeat("y", 70)+"\r\n", 3000)
	deliver(t, c, "user@example.test", []string{"user@example.test"}, big)
	stored = y.Messages("user@example.test", "INBOX")[1]
	if len(stored) <= store.InlineMax {
		t.Fatalf("test message too small (%d) to be stored as a file", len(stored))
	}
	verifs, err = dkim.VerifyWithOptions(bytes.NewReader(stored[bytes.Index(stored, []byte("\r\n"))+2:]), &dkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) {
			if v, ok := records[strings.TrimSuffix(name, ".")]; ok {
				return []string{v}, nil
			}
			return nil, fmt.Errorf("no record %s", name)
		},
	})
	if err != nil || len(verifs) != 2 || verifs[0].Err != nil || verifs[1].Err != nil {
		t.Fatalf("large message signatures: %v %+v", err, verifs)
	}
	// Mail received on the MX listener is not signed.
	mx := session(t, y)
	deliver(t, mx, "someone@elsewhere.test", []string{"user@example.test"}, "Subject: in\r\n\r\nx\r\n")
	if got := y.Messages("user@example.test", "INBOX")[2]; bytes.Contains(got, []byte("DKIM-Signature")) {
		t.Errorf("MX mail was signed:\n%s", got)
	}
}
