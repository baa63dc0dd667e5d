package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeKeepsSysmonAwake: serve re-executes itself, in the same process, with
// GODEBUG=schedtrace set (keepSysmonAwake), keeping the operator's other GODEBUG settings;
// an operator who sets schedtrace keeps that value, and a server started either way serves.
func TestServeKeepsSysmonAwake(t *testing.T) {
	for _, tc := range []struct{ godebug, want string }{
		{"", "schedtrace=2147483647"},
		{"madvdontneed=1", "madvdontneed=1,schedtrace=2147483647"},
		{"schedtrace=0", "schedtrace=0"},
	} {
		in := newInstance(t)
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "GODEBUG=") {
				in.env = append(in.env, kv)
			}
		}
		if tc.godebug != "" {
			in.env = append(in.env, "GODEBUG="+tc.godebug)
		}
		in.start() // waits for the listeners: the exec'd server serves
		environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", in.cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, kv := range bytes.Split(environ, []byte{0}) {
			if v, ok := bytes.CutPrefix(kv, []byte("GODEBUG=")); ok {
				got = append(got, string(v))
			}
		}
		if len(got) != 1 || got[0] != tc.want {
			t.Errorf("GODEBUG %q given: server's environment has GODEBUG %q, want [%q]", tc.godebug, got, tc.want)
		}
		// The process keeps its name (the exec is of the binary's path, not /proc/self/exe).
		if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", in.cmd.Process.Pid)); err != nil || strings.TrimSpace(string(comm)) != filepath.Base(in.bin) {
			t.Errorf("process name %q (%v), want %q", comm, err, filepath.Base(in.bin))
		}
		in.kill()
	}
}
