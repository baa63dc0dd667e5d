package smtpserver

import "testing"

func TestSessionNumber(t *testing.T) {
	for n, want := range map[uint64]string{1: "000001", 42: "000042", 999999: "999999", 1000000: "1000000", 12345678: "12345678"} {
		if got := sessionNumber(n); got != want {
			t.Errorf("sessionNumber(%d) = %q, want %q", n, got, want)
		}
	}
}
