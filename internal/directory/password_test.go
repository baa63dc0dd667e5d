package directory

import (
	"regexp"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// testParams keep tests fast; real hashes use DefaultHashParams.
var testParams = HashParams{Memory: 64, Time: 1, Threads: 1}

func TestHashVerify(t *testing.T) {
	t.Parallel()
	for _, p := range []HashParams{testParams, {Memory: 256, Time: 2, Threads: 4}} {
		h, err := HashPassword("correct horse", p)
		if err != nil {
			t.Fatal(err)
		}
		re := regexp.MustCompile(`^\$argon2id\$v=19\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$`)
		if !re.MatchString(h) {
			t.Errorf("hash %q is not a PHC argon2id string", h)
		}
		// Parameters come from the hash, not from the caller.
		ok, err := VerifyPassword(h, "correct horse")
		if err != nil || !ok {
			t.Errorf("VerifyPassword(right) = %v, %v", ok, err)
		}
		ok, err = VerifyPassword(h, "correct horsf")
		if err != nil || ok {
			t.Errorf("VerifyPassword(wrong) = %v, %v", ok, err)
		}
		ok, err = VerifyPassword(h, "")
		if err != nil || ok {
			t.Errorf("VerifyPassword(empty) = %v, %v", ok, err)
		}
	}
}

func TestHashSalted(t *testing.T) {
	t.Parallel()
	a, err := HashPassword("same", testParams)
	if err != nil {
		t.Fatal(err)
	}
	b, err := HashPassword("same", testParams)
	if err != nil {
		t.Fatal(err)
	}
	if a == b {
		t.Errorf("two hashes of the same password are equal: %q", a)
	}
}

func TestDefaultHashParams(t *testing.T) {
	t.Parallel()
	p := DefaultHashParams()
	if p != (HashParams{Memory: 65536, Time: 2, Threads: 2}) {
		t.Errorf("DefaultHashParams() = %+v", p)
	}
	if err := p.validate(); err != nil {
		t.Error(err)
	}
}

func TestHashBadParams(t *testing.T) {
	t.Parallel()
	for _, p := range []HashParams{{}, {Memory: 64, Time: 0, Threads: 1}, {Memory: 64, Time: 1, Threads: 0}, {Memory: 8, Time: 1, Threads: 2}} {
		if h, err := HashPassword("x", p); err == nil {
			t.Errorf("HashPassword with %+v = %q, want error", p, h)
		}
	}
}

func TestVerifyBcrypt(t *testing.T) {
	t.Parallel()
	h, err := bcrypt.GenerateFromPassword([]byte("imported"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	rest := strings.TrimPrefix(string(h), "$2a$")
	// The same hash under the prefixes other implementations write.
	for _, prefix := range []string{"$2a$", "$2b$", "$2y$"} {
		hash := prefix + rest
		ok, err := VerifyPassword(hash, "imported")
		if err != nil || !ok {
			t.Errorf("VerifyPassword(%s, right) = %v, %v", prefix, ok, err)
		}
		ok, err = VerifyPassword(hash, "Imported")
		if err != nil || ok {
			t.Errorf("VerifyPassword(%s, wrong) = %v, %v", prefix, ok, err)
		}
	}
}

func TestVerifyBcryptLongPassword(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("p", 72)
	h, err := bcrypt.GenerateFromPassword([]byte(long), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	// Systems that made such hashes dropped bytes after the 72nd.
	ok, err := VerifyPassword(string(h), long+"extra")
	if err != nil || !ok {
		t.Errorf("VerifyPassword(long) = %v, %v", ok, err)
	}
}

func TestVerifyMalformed(t *testing.T) {
	t.Parallel()
	good, err := HashPassword("pw", testParams)
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Split(good, "$") // "", argon2id, v=19, params, salt, key
	join := func(params, salt, key string) string {
		return strings.Join([]string{"", "argon2id", "v=19", params, salt, key}, "$")
	}
	for _, h := range []string{
		"",
		"plaintext",
		"{SHA}abc",
		"$argon2i$v=19$m=64,t=1,p=1$" + f[4] + "$" + f[5],
		"$argon2id$v=16$m=64,t=1,p=1$" + f[4] + "$" + f[5],
		"$argon2id$m=64,t=1,p=1$" + f[4] + "$" + f[5],
		good + "$",
		join("m=64,t=1", f[4], f[5]),
		join("m=64,t=1,p=1,p=1", f[4], f[5]),
		join("m=64,t=1,p=1,x=2", f[4], f[5]),
		join("m=64,t=0,p=1", f[4], f[5]),
		join("m=64,t=1,p=0", f[4], f[5]),
		join("m=64,t=1,p=256", f[4], f[5]),
		join("m=-1,t=1,p=1", f[4], f[5]),
		join("m=99999999999,t=1,p=1", f[4], f[5]),
		join("m=4294967295,t=1,p=1", f[4], f[5]),
		join("m=64,t=1,p=1", "!!!", f[5]),
		join("m=64,t=1,p=1", "c2FsdA", f[5]), // 4-byte salt
		join("m=64,t=1,p=1", f[4], ""),
		"$2a$",
		"$2a$10$short",
		"$2b$99$abcdefghijklmnopqrstuvabcdefghijklmnopqrstuvwxyz12345",
	} {
		if ok, err := VerifyPassword(h, "pw"); err == nil || ok {
			t.Errorf("VerifyPassword(%q) = %v, %v; want error", h, ok, err)
		}
	}
	// The parameters may come in another order; padding is tolerated.
	for _, h := range []string{join("t=1,p=1,m=64", f[4], f[5]), join("m=64,t=1,p=1", f[4]+"==", f[5]+"=")} {
		if ok, err := VerifyPassword(h, "pw"); err != nil || !ok {
			t.Errorf("VerifyPassword(%q) = %v, %v; want true", h, ok, err)
		}
	}
}
