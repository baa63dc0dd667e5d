// Package tool finds the external programs tests drive. It imports nothing of yubin, so that
// tests of any package (even those the app imports) can use it without an import cycle.
package tool

import (
	"os"
	"os/exec"
	"testing"
)

// Need returns the path of an external program a test drives. Without it the test skips,
// except under CI=true, where every tool must be installed (scripts/test.sh does it).
func Need(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required under CI=true (scripts/test.sh installs it): %v", name, err)
		}
		t.Skipf("%s not installed: %v", name, err)
	}
	return p
}
