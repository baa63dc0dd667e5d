package lazylog

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
)

// countingHandler counts WithAttrs calls, to see when the attributes are formatted.
type countingHandler struct {
	slog.Handler
	withs *int
}

func (c countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	*c.withs++
	return countingHandler{c.Handler.WithAttrs(as), c.withs}
}

func (c countingHandler) WithGroup(name string) slog.Handler {
	return countingHandler{c.Handler.WithGroup(name), c.withs}
}

// A lazy logger writes the same lines as slog's With, and formats its attributes only when a
// record passes the level, once.
func TestWith(t *testing.T) {
	var got, want bytes.Buffer
	withs := 0
	opts := &slog.HandlerOptions{Level: slog.LevelInfo, ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey && len(groups) == 0 {
			return slog.Attr{}
		}
		return a
	}}
	lazy := With(slog.New(countingHandler{slog.NewTextHandler(&got, opts), &withs}),
		"msgid", "m1", slog.Int("n", 2), "domain", "example.org")
	eager := slog.New(slog.NewTextHandler(&want, opts)).With(
		"msgid", "m1", slog.Int("n", 2), "domain", "example.org")

	lazy.Debug("not written")
	lazy.With("rcpt", "a@example.org").Debug("not written either")
	if withs != 0 {
		t.Fatalf("attributes formatted %d times before anything was logged", withs)
	}
	for _, l := range []*slog.Logger{lazy, eager} {
		l.Info("delivered", "mx", "mx.example.org")
		l.With("rcpt", "a@example.org").Warn("deferred")
		l.WithGroup("g").Info("grouped", "k", "v")
		l.Log(context.Background(), slog.LevelError, "failed")
	}
	if got.String() != want.String() {
		t.Errorf("lazy logger wrote\n%s\nslog's With wrote\n%s", got.String(), want.String())
	}
	if !strings.Contains(got.String(), `msg=delivered msgid=m1 n=2 domain=example.org mx=mx.example.org`) {
		t.Errorf("unexpected line:\n%s", got.String())
	}
}

// Arguments that are not key-value pairs come out as slog writes them.
func TestAttrsBadKey(t *testing.T) {
	got := attrs([]any{"k", 1, 42, "odd"})
	want := []slog.Attr{slog.Int("k", 1), slog.Any("!BADKEY", 42), slog.String("!BADKEY", "odd")}
	if len(got) != len(want) {
		t.Fatalf("attrs = %v, want %v", got, want)
	}
	for i := range got {
		if !got[i].Equal(want[i]) {
			t.Errorf("attrs[%d] = %v, want %v", i, got[i], want[i])
		}
	}
}
