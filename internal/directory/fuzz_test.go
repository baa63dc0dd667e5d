package directory

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"testing"
)

// FuzzParseArgon2id checks that a stored hash either fails to parse or
// parses to parameters that format back to a hash with the same meaning.
// It does not run argon2: a fuzzed m= would allocate gigabytes.
func FuzzParseArgon2id(f *testing.F) {
	for _, s := range []string{
		"$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$a2V5a2V5a2V5a2V5a2V5a2V5",
		"$argon2id$v=19$t=2,p=4,m=65536$c2FsdHNhbHRzYWx0==$a2V5a2V5a2V5a2V5a2V5a2V5=",
		"$argon2id$v=19$m=8,t=1,p=1,p=1$c2FsdHNhbHQ$a2V5",
		"$argon2id$v=19$m=,t=1,p=1$$",
		"$2a$10$",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, salt, key, err := parseArgon2id(s)
		if err != nil {
			return
		}
		if p.validate() != nil || len(salt) < minSaltLen || len(key) < minKeyLen {
			t.Fatalf("parseArgon2id(%q) accepted %+v, salt %d, key %d", s, p, len(salt), len(key))
		}
		b64 := base64.RawStdEncoding
		again := fmt.Sprintf("$argon2id$v=19$m=%d,t=%d,p=%d$%s$%s", p.Memory, p.Time, p.Threads, b64.EncodeToString(salt), b64.EncodeToString(key))
		p2, salt2, key2, err := parseArgon2id(again)
		if err != nil || p2 != p || !bytes.Equal(salt, salt2) || !bytes.Equal(key, key2) {
			t.Fatalf("parseArgon2id(%q) = %+v; reformatted %q gives %+v, %v", s, p, again, p2, err)
		}
	})
}
