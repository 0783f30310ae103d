package warren

import (
	"context"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill"
)

// WatermillLogger returns a *slog.Logger (for any Config.Logger of warren:
// conn, topology, Publisher, Subscriber, router) that writes to a
// Watermill logger, so warren logs where the rest of a Watermill service
// does. Warn records go to Info with a "level" field of "WARN", since
// watermill.LoggerAdapter has no warning level.
func WatermillLogger(l watermill.LoggerAdapter) *slog.Logger {
	return slog.New(&watermillHandler{l: l})
}

type watermillHandler struct {
	l     watermill.LoggerAdapter
	attrs []slog.Attr
	group string
}

func (h *watermillHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *watermillHandler) Handle(_ context.Context, r slog.Record) error {
	fields := make(watermill.LogFields, len(h.attrs)+r.NumAttrs())
	var err error
	add := func(a slog.Attr) bool {
		if e, ok := a.Value.Any().(error); ok && (a.Key == "error" || a.Key == "err") {
			err = e
			return true
		}
		key := a.Key
		if h.group != "" {
			key = h.group + "." + key
		}
		fields[key] = a.Value.Any()
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	switch {
	case r.Level >= slog.LevelError:
		h.l.Error(r.Message, err, fields)
	case r.Level >= slog.LevelWarn:
		fields["level"] = "WARN"
		if err != nil {
			fields["error"] = err.Error()
		}
		h.l.Info(r.Message, fields)
	case r.Level >= slog.LevelInfo:
		if err != nil {
			fields["error"] = err.Error()
		}
		h.l.Info(r.Message, fields)
	default:
		if err != nil {
			fields["error"] = err.Error()
		}
		h.l.Debug(r.Message, fields)
	}
	return nil
}

func (h *watermillHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &watermillHandler{l: h.l, attrs: append(append([]slog.Attr(nil), h.attrs...), attrs...), group: h.group}
}

func (h *watermillHandler) WithGroup(name string) slog.Handler {
	g := name
	if h.group != "" {
		g = h.group + "." + name
	}
	return &watermillHandler{l: h.l, attrs: h.attrs, group: g}
}
