package directory

import (
	"context"
	"errors"
	"testing"
)

func authFake(t *testing.T) *fakeBackend {
	t.Helper()
	h, err := HashPassword("secret", testParams)
	if err != nil {
		t.Fatal(err)
	}
	f := newFake()
	f.accounts["alice@hosted.test"] = Account{ID: 4, Address: "alice@hosted.test", PasswordHash: h}
	f.accounts["dave@hosted.test"] = Account{ID: 5, Address: "dave@hosted.test", PasswordHash: h, Disabled: true}
	f.accounts["broken@hosted.test"] = Account{ID: 7, Address: "broken@hosted.test", PasswordHash: "$argon2id$garbage"}
	return f
}

func TestAuthenticate(t *testing.T) {
	t.Parallel()
	d := &Directory{Backend: authFake(t), HashParams: testParams}
	ctx := context.Background()
	for _, user := range []string{"alice@hosted.test", "Alice@HOSTED.TEST"} {
		acc, err := d.Authenticate(ctx, user, "secret")
		if err != nil || acc.ID != 4 {
			t.Errorf("Authenticate(%s, right) = %+v, %v", user, acc, err)
		}
	}
	for _, tt := range []struct{ name, user, pw string }{
		{"wrong password", "alice@hosted.test", "Secret"},
		{"empty password", "alice@hosted.test", ""},
		{"unknown user", "nobody@hosted.test", "secret"},
		{"unknown domain", "alice@remote.example", "secret"},
		{"disabled", "dave@hosted.test", "secret"},
		{"not an address", "alice", "secret"},
		{"empty user", "", "secret"},
		{"IP literal", "alice@[192.0.2.1]", "secret"},
	} {
		acc, err := d.Authenticate(ctx, tt.user, tt.pw)
		// The very same error, so that nothing tells the cases apart.
		if err != ErrBadCredentials {
			t.Errorf("%s: Authenticate(%q) = %+v, %v; want exactly ErrBadCredentials", tt.name, tt.user, acc, err)
		}
		if acc != (Account{}) {
			t.Errorf("%s: returned account %+v", tt.name, acc)
		}
	}
}

func TestAuthenticateMalformedHash(t *testing.T) {
	t.Parallel()
	d := &Directory{Backend: authFake(t), HashParams: testParams}
	_, err := d.Authenticate(context.Background(), "broken@hosted.test", "secret")
	if !errors.Is(err, ErrBadCredentials) || err == ErrBadCredentials {
		t.Errorf("Authenticate(broken) = %v; want ErrBadCredentials wrapped with the cause", err)
	}
}

func TestAuthenticateBackendError(t *testing.T) {
	t.Parallel()
	boom := errors.New("disk on fire")
	f := authFake(t)
	f.fail = map[string]error{"alice@hosted.test": boom}
	d := &Directory{Backend: f, HashParams: testParams}
	_, err := d.Authenticate(context.Background(), "alice@hosted.test", "secret")
	if !errors.Is(err, boom) || errors.Is(err, ErrBadCredentials) {
		t.Errorf("Authenticate with backend failure = %v; want %v and not ErrBadCredentials", err, boom)
	}
}
