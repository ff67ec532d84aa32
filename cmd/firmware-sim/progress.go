package main

import (
	"fmt"
	"io"
	"os"
	"time"

	// x/term tells a terminal from a file or pipe on every platform the binaries build for.
	"golang.org/x/term"

	firmwaresim "github.com/tributary-iot/tributary/firmware-sim"
)

// startProgress prints the fleet's progress on w until the returned stop is called: on a terminal
// one line rewritten in place every second, elsewhere (a log file, CI) a plain line per interval,
// so a long run never leaves a silent screen. mode is --progress: auto, off or an interval.
func startProgress(fleet *firmwaresim.Fleet, mode string, duration time.Duration, w io.Writer) (stop func(), err error) {
	tty := isTerminal(w)
	var every time.Duration
	switch mode {
	case "off":
		return func() {}, nil
	case "auto", "":
		every = 10 * time.Second
		if tty {
			every = time.Second
		}
	default:
		if every, err = time.ParseDuration(mode); err != nil || every <= 0 {
			return nil, fmt.Errorf("--progress %q: use auto, off or an interval such as 5s", mode)
		}
	}
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(every)
		defer t.Stop()
		var prev firmwaresim.Progress
		for {
			select {
			case <-done:
				if tty && prev.Elapsed > 0 {
					fmt.Fprintln(w) // keep the last line; the report starts below it
				}
				return
			case <-t.C:
			}
			p := fleet.Progress()
			if tty {
				fmt.Fprintf(w, "\r\033[K%s", p.Line(prev, duration))
			} else {
				fmt.Fprintln(w, "progress", p.Line(prev, duration))
			}
			prev = p
		}
	}()
	return func() { close(done); <-finished }, nil
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
