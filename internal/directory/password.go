package directory

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// Password hashes are argon2id (RFC 9106) in the PHC string format:
//
//	$argon2id$v=19$m=65536,t=2,p=2$<salt>$<key>
//
// with salt and key in standard base64 without padding. The parameters
// travel with each hash, so changing DefaultHashParams later only affects
// new hashes. bcrypt hashes ($2a$, $2b$, $2y$) are accepted by
// VerifyPassword so that imported accounts keep working.
const (
	saltLen = 16
	keyLen  = 32
	// Bounds for the parameters read from a stored hash, so that a corrupt
	// row cannot make a login allocate without limit: 4 GiB of memory.
	maxMemoryKiB = 4 << 20
	// RFC 9106 3.1: salt of at least 8 bytes, tag of at least 4.
	minSaltLen = 8
	minKeyLen  = 4
	// bcrypt keys on at most 72 bytes of the password.
	bcryptMaxPassword = 72
)

// HashParams are the argon2id cost parameters.
type HashParams struct {
	Memory  uint32 // KiB
	Time    uint32 // passes
	Threads uint8  // lanes
}

// DefaultHashParams returns the parameters for new hashes: 64 MiB, 2
// passes, 2 lanes, about 50-100 ms on a current server core. RFC 9106 4
// recommends at least 64 MiB when 2 GiB is not affordable.
func DefaultHashParams() HashParams {
	return HashParams{Memory: 64 * 1024, Time: 2, Threads: 2}
}

func (p HashParams) validate() error {
	switch {
	case p.Time < 1:
		return errors.New("argon2 time must be at least 1")
	case p.Threads < 1:
		return errors.New("argon2 threads must be at least 1")
	case p.Memory < 8*uint32(p.Threads):
		// RFC 9106 3.1: m must be at least 8*p KiB.
		return fmt.Errorf("argon2 memory must be at least %d KiB for %d threads", 8*uint32(p.Threads), p.Threads)
	case p.Memory > maxMemoryKiB:
		return fmt.Errorf("argon2 memory more than %d KiB", maxMemoryKiB)
	}
	return nil
}

// HashPassword returns the argon2id PHC string for password with a fresh
// random salt.
func HashPassword(password string, p HashParams) (string, error) {
	if err := p.validate(); err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("hash password: salt: %w", err)
	}
	key := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, keyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.Memory, p.Time, p.Threads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// VerifyPassword reports whether password matches hash. The error is
// non-nil only when hash is malformed or of an unknown kind.
func VerifyPassword(hash, password string) (bool, error) {
	switch {
	case strings.HasPrefix(hash, "$argon2id$"):
		return verifyArgon2id(hash, password)
	case strings.HasPrefix(hash, "$2a$"), strings.HasPrefix(hash, "$2b$"), strings.HasPrefix(hash, "$2y$"):
		return verifyBcrypt(hash, password)
	}
	return false, errors.New("unknown password hash format")
}

func verifyArgon2id(hash, password string) (bool, error) {
	p, salt, want, err := parseArgon2id(hash)
	if err != nil {
		return false, err
	}
	got := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// parseArgon2id parses "$argon2id$v=19$m=M,t=T,p=P$salt$key".
func parseArgon2id(hash string) (p HashParams, salt, key []byte, err error) {
	fields := strings.Split(hash, "$")
	if len(fields) != 6 || fields[0] != "" || fields[1] != "argon2id" {
		return p, nil, nil, errors.New("malformed argon2id hash")
	}
	if fields[2] != "v="+strconv.Itoa(argon2.Version) {
		return p, nil, nil, fmt.Errorf("unsupported argon2id version %q", fields[2])
	}
	var seen [3]bool
	for _, kv := range strings.Split(fields[3], ",") {
		name, val, _ := strings.Cut(kv, "=")
		var bits, i int
		switch name {
		case "m":
			bits, i = 32, 0
		case "t":
			bits, i = 32, 1
		case "p":
			bits, i = 8, 2
		default:
			return p, nil, nil, fmt.Errorf("malformed argon2id hash: parameter %q", name)
		}
		n, err := strconv.ParseUint(val, 10, bits)
		if err != nil || seen[i] {
			return p, nil, nil, fmt.Errorf("malformed argon2id hash: parameter %q", kv)
		}
		seen[i] = true
		switch i {
		case 0:
			p.Memory = uint32(n)
		case 1:
			p.Time = uint32(n)
		case 2:
			p.Threads = uint8(n)
		}
	}
	if seen != [3]bool{true, true, true} {
		return p, nil, nil, errors.New("malformed argon2id hash: missing parameter")
	}
	if err := p.validate(); err != nil {
		return p, nil, nil, fmt.Errorf("malformed argon2id hash: %w", err)
	}
	// PHC strings have no padding; tolerate it from other producers.
	b64 := base64.RawStdEncoding
	salt, err = b64.DecodeString(strings.TrimRight(fields[4], "="))
	if err != nil || len(salt) < minSaltLen {
		return p, nil, nil, errors.New("malformed argon2id hash: salt")
	}
	key, err = b64.DecodeString(strings.TrimRight(fields[5], "="))
	if err != nil || len(key) < minKeyLen {
		return p, nil, nil, errors.New("malformed argon2id hash: key")
	}
	return p, salt, key, nil
}

func verifyBcrypt(hash, password string) (bool, error) {
	if _, err := bcrypt.Cost([]byte(hash)); err != nil {
		return false, fmt.Errorf("malformed bcrypt hash: %w", err)
	}
	if len(password) > bcryptMaxPassword {
		// bcrypt keys on at most 72 bytes and the systems these hashes come
		// from dropped the rest; do the same so that such users can log in.
		password = password[:bcryptMaxPassword]
	}
	err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(password))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, bcrypt.ErrMismatchedHashAndPassword):
		return false, nil
	default:
		return false, fmt.Errorf("malformed bcrypt hash: %w", err)
	}
}
