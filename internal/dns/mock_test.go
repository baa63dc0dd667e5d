package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
)

func TestMock(t *testing.T) {
	t.Parallel()
	m := &Mock{
		MX:   map[string][]*net.MX{"Example.Test": {{Host: "MX.example.test.", Pref: 10}}, "empty.test": nil},
		IP:   map[string][]net.IP{"mx.example.test": {net.ParseIP("192.0.2.1")}},
		TXT:  map[string][]string{"_mta-sts.example.test": {"v=STSv1; id=1"}},
		Fail: map[string]bool{"broken.test": true},
	}
	mxs, err := m.LookupMX(t.Context(), "example.test.")
	if err != nil || len(mxs) != 1 || mxs[0].Host != "mx.example.test" {
		t.Fatalf("MX: %v %v", mxs, err)
	}
	mxs[0].Host = "changed"
	if again, _ := m.LookupMX(t.Context(), "example.test"); again[0].Host != "mx.example.test" {
		t.Error("LookupMX returned the mock's own records")
	}
	if _, err := m.LookupMX(t.Context(), "mx.example.test"); !errors.Is(err, ErrNoRecords) {
		t.Errorf("NODATA: %v", err)
	}
	if _, err := m.LookupMX(t.Context(), "empty.test"); !errors.Is(err, ErrNoRecords) {
		t.Errorf("empty list: %v", err)
	}
	if _, err := m.LookupIP(t.Context(), "nowhere.test"); !errors.Is(err, ErrNotFound) || errors.Is(err, ErrNoRecords) || Temporary(err) {
		t.Errorf("NXDOMAIN: %v", err)
	}
	if _, err := m.LookupTXT(t.Context(), "BROKEN.test"); !Temporary(err) || errors.Is(err, ErrNotFound) {
		t.Errorf("fail: %v", err)
	}
	if txt, err := m.LookupTXT(t.Context(), "_mta-sts.example.test"); err != nil || len(txt) != 1 {
		t.Errorf("TXT: %v %v", txt, err)
	}
}

func TestTemporary(t *testing.T) {
	t.Parallel()
	if Temporary(nil) || Temporary(errors.New("x")) {
		t.Error("plain errors are not temporary")
	}
	if !Temporary(fmt.Errorf("lookup: %w", context.Canceled)) || !Temporary(context.DeadlineExceeded) {
		t.Error("context errors are temporary")
	}
	if !Temporary(fmt.Errorf("wrapped: %w", &Error{kind: kindTemporary})) {
		t.Error("a wrapped temporary *Error is temporary")
	}
}
