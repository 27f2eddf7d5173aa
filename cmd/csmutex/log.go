package main

import (
	"encoding/json"
	"io"
	"strings"
	"time"

	"github.com/csmutex/csmutex/internal/term"
	"github.com/rs/zerolog"
	"github.com/spf13/pflag"
)

// logFlags are -q/--quiet, -v/--verbose and --log-format, shared by every command.
type logFlags struct {
	quiet, verbose bool
	format         string
}

func addLogFlags(fs *pflag.FlagSet) *logFlags {
	l := &logFlags{}
	fs.BoolVarP(&l.quiet, "quiet", "q", false, "log errors only (run: no waiting status either)")
	fs.BoolVarP(&l.verbose, "verbose", "v", false, "log debug detail: lock attempts and waits, API calls and their timings")
	fs.StringVar(&l.format, "log-format", "console", "log `FORMAT` on stderr: console or json")
	return l
}

func (l *logFlags) validate() error {
	switch {
	case l.format != "console" && l.format != "json":
		return usageErrorf("--log-format must be console or json, not %q", l.format)
	case l.quiet && l.verbose:
		return usageErrorf("-q/--quiet and -v/--verbose are mutually exclusive")
	}
	return nil
}

// logger returns the logger for w (stderr): info by default, errors only with -q, debug
// with -v; human-readable unless --log-format json.
func (l *logFlags) logger(w io.Writer) zerolog.Logger { return l.loggerTo(w, term.IsTerminal(w)) }

// loggerTo is logger for a w that stands for a terminal (colours) when tty is set.
func (l *logFlags) loggerTo(w io.Writer, tty bool) zerolog.Logger {
	level := zerolog.InfoLevel
	switch {
	case l.quiet:
		level = zerolog.ErrorLevel
	case l.verbose:
		level = zerolog.DebugLevel
	}
	if l.format == "json" {
		return zerolog.New(w).Level(level).With().Timestamp().Str("cmd", "csmutex").Logger()
	}
	return zerolog.New(consoleWriter(w, !tty)).Level(level).With().Timestamp().Logger()
}

// consoleWriter is the human-readable log format. Durations are logged as "*_ms" fields
// (float milliseconds in JSON, which scripts read without parsing units); people read
// them with units instead: waited_ms=13948.28 is printed waited=13.9s.
func consoleWriter(w io.Writer, noColor bool) zerolog.ConsoleWriter {
	return zerolog.ConsoleWriter{Out: w, NoColor: noColor, TimeFormat: "15:04:05.000", FormatPrepare: msFieldsWithUnits}
}

// msFieldsWithUnits replaces every numeric "*_ms" field of a console log event by the
// field without the suffix, valued as a Go duration rounded for reading.
func msFieldsWithUnits(evt map[string]any) error {
	for k, v := range evt {
		name, ok := strings.CutSuffix(k, "_ms")
		if !ok || name == "" {
			continue
		}
		var ms float64
		switch n := v.(type) {
		case json.Number:
			f, err := n.Float64()
			if err != nil {
				continue
			}
			ms = f
		case float64:
			ms = n
		default:
			continue
		}
		if _, taken := evt[name]; taken {
			continue
		}
		delete(evt, k)
		evt[name] = readableDuration(time.Duration(ms * float64(time.Millisecond))).String()
	}
	return nil
}

// readableDuration rounds d to about three significant digits: 13.9s, 1m31s, 250ms, 1.2ms.
func readableDuration(d time.Duration) time.Duration {
	switch a := d.Abs(); {
	case a >= time.Minute:
		return d.Round(time.Second)
	case a >= 10*time.Second:
		return d.Round(100 * time.Millisecond)
	case a >= time.Second:
		return d.Round(10 * time.Millisecond)
	case a >= 10*time.Millisecond:
		return d.Round(time.Millisecond)
	case a >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	default:
		return d.Round(time.Microsecond)
	}
}
