package mailbox

import (
	"strings"
	"testing"
)

func TestNormalize(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"inbox", "INBOX"},
		{"InBox/Sub", "INBOX/Sub"},
		{"INBOXes", "INBOXes"},
		{"Work/2026", "Work/2026"},
		{"Entwürfe", "Entwürfe"},
		{"", ""},
		{"a//b", ""},
		{"/a", ""},
		{"a/", ""},
		{"a*b", ""},
		{"a%b", ""},
		{"a\x00b", ""},
		{"a\nb", ""},
		{"\xff", ""},
		{strings.Repeat("x", MaxNameLen+1), ""},
		{strings.Repeat("x/", MaxDepth) + "x", ""},
	} {
		got, err := Normalize(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("Normalize(%q) = %q, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Normalize(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestParents(t *testing.T) {
	t.Parallel()
	got := Parents("a/b/c")
	if len(got) != 2 || got[0] != "a" || got[1] != "a/b" {
		t.Errorf("Parents = %q", got)
	}
}

func TestMatch(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		ref, pattern, name string
		want               bool
	}{
		{"", "*", "INBOX", true},
		{"", "*", "a/b/c", true},
		{"", "%", "a", true},
		{"", "%", "a/b", false},
		{"", "a/%", "a/b", true},
		{"", "a/%", "a/b/c", false},
		{"", "a/*", "a/b/c", true},
		{"", "a*", "a", true},
		{"", "inbox", "INBOX", true},
		{"", "Inbox/%", "INBOX/x", true},
		{"", "inbox", "Inbox2", false},
		{"", "sent", "Sent", false}, // only INBOX is case-insensitive
		{"", "S%t", "Sent", true},
		{"", "S%t", "Se/nt", false},
		{"", "", "INBOX", false},
		{"Work", "%", "Work/a", true},
		{"Work/", "%", "Work/a", true},
		{"Work", "/Other", "/Other", true},
		{"", "*a*a*a*a*a*a*b", strings.Repeat("a", 60) + "b", true},
		{"", "*a*a*a*a*a*a*b", strings.Repeat("a", 200), false},
		{"", "%a%a%a%a%a%a%b", strings.Repeat("a", 200) + "/b", false},
	} {
		if got := CompilePattern(tc.ref, tc.pattern).Match(tc.name); got != tc.want {
			t.Errorf("ref %q pattern %q name %q: %v, want %v", tc.ref, tc.pattern, tc.name, got, tc.want)
		}
	}
}

// The pattern that made go-imap's backtracking matcher spin: here a match costs
// len(pattern) x len(name) steps, so a long name is as quick as a short one.
func BenchmarkMatchPathological(b *testing.B) {
	p := CompilePattern("", "*a*a*a*a*a*a*a*a*a*a*b")
	name := strings.Repeat("a", 250)
	for b.Loop() {
		if p.Match(name) {
			b.Fatal("matched")
		}
	}
}

// FuzzMatch checks the NFA against a plain recursive definition on short inputs.
func FuzzMatch(f *testing.F) {
	f.Add("a*b%c", "axxb/c")
	f.Add("%/%", "a/b")
	f.Fuzz(func(t *testing.T, pattern, name string) {
		if len(pattern) > 8 || len(name) > 10 {
			return
		}
		want := naive(pattern, name)
		if strings.HasPrefix(name, "INBOX") && (len(name) == 5 || name[5] == Sep) {
			return // case-insensitive INBOX is not in the naive definition
		}
		if got := CompilePattern("", pattern).Match(name); got != want {
			t.Errorf("Match(%q, %q) = %v, naive %v", pattern, name, got, want)
		}
	})
}

func naive(p, n string) bool {
	if p == "" {
		return n == ""
	}
	switch p[0] {
	case '*', '%':
		for i := 0; i <= len(n); i++ {
			if p[0] == '%' && i > 0 && n[i-1] == Sep {
				break
			}
			if naive(p[1:], n[i:]) {
				return true
			}
		}
		return false
	}
	return n != "" && n[0] == p[0] && naive(p[1:], n[1:])
}
