package main

import (
	"log/slog"
)

// logAttr returns the ReplaceAttr of a log in format ("json" or "text"):
// in JSON, a duration is written as seconds, a float with the key
// unchanged ("took":1.5), where slog would write nanoseconds as an
// integer; text keeps slog's "1.5s".
func logAttr(format string) func(groups []string, a slog.Attr) slog.Attr {
	if format != "json" {
		return nil
	}
	return func(_ []string, a slog.Attr) slog.Attr {
		if a.Value.Kind() == slog.KindDuration {
			a.Value = slog.Float64Value(a.Value.Duration().Seconds())
		}
		return a
	}
}
