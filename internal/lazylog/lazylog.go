// Package lazylog gives loggers whose attributes are formatted only if something is logged.
//
// slog's Logger.With formats its attributes at once (a TextHandler renders them into the
// prefix of every line to come), which costs the same whether or not the logger ever writes
// a line. The relay makes such a logger for every message, and at the usual levels most of
// them log nothing: the attributes would be formatted for nobody. With defers that work to
// the first record the level lets through.
package lazylog

import (
	"context"
	"log/slog"
	"sync"
)

// With returns a logger that adds args (as slog.Logger.With takes them: key-value pairs or
// slog.Attr values) to its records, formatting them the first time it handles one.
func With(l *slog.Logger, args ...any) *slog.Logger {
	return slog.New(&handler{base: l.Handler(), attrs: attrs(args)})
}

// attrs turns With's arguments into attributes, as slog does: a string key takes the value
// after it, an Attr stands alone, anything else is a value under the key "!BADKEY".
func attrs(args []any) []slog.Attr {
	out := make([]slog.Attr, 0, len(args)/2)
	for len(args) > 0 {
		switch a := args[0].(type) {
		case slog.Attr:
			out = append(out, a)
			args = args[1:]
		case string:
			if len(args) == 1 {
				out = append(out, slog.String("!BADKEY", a))
				args = nil
				continue
			}
			out = append(out, slog.Any(a, args[1]))
			args = args[2:]
		default:
			out = append(out, slog.Any("!BADKEY", a))
			args = args[1:]
		}
	}
	return out
}

// handler is base with attrs, applied (WithAttrs) on first use.
type handler struct {
	base  slog.Handler
	attrs []slog.Attr
	once  sync.Once
	with  slog.Handler
}

func (h *handler) built() slog.Handler {
	h.once.Do(func() { h.with = h.base.WithAttrs(h.attrs) })
	return h.with
}

func (h *handler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.base.Enabled(ctx, level)
}

func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	return h.built().Handle(ctx, r)
}

// WithAttrs stays lazy: the new handler holds both lists.
func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	if len(as) == 0 {
		return h
	}
	all := make([]slog.Attr, 0, len(h.attrs)+len(as))
	return &handler{base: h.base, attrs: append(append(all, h.attrs...), as...)}
}

func (h *handler) WithGroup(name string) slog.Handler {
	return h.built().WithGroup(name)
}
