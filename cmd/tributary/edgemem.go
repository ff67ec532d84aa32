package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime/debug"
	"time"
)

// defaultEdgeMemoryLimit is the Go runtime's soft memory limit for "tributary edge" unless
// GOMEMLIMIT is set. Without a limit the GC lets the heap grow to twice its live size before it
// collects (GOGC=100), so a 1,000-device gateway holding ~20 MiB live sat at twice that and more
// in RSS. Under the limit the GC collects earlier instead; it is soft, so an edge that really needs
// more (more devices, larger payloads) still gets it, at the cost of more GC CPU. See deploy/README.md,
// "Memory".
const defaultEdgeMemoryLimit = 40 << 20

// applyEdgeMemoryLimit sets the default soft memory limit unless the operator chose one with
// GOMEMLIMIT (which the runtime has already applied), and returns the limit in force.
func applyEdgeMemoryLimit() int64 {
	if os.Getenv("GOMEMLIMIT") != "" {
		return debug.SetMemoryLimit(-1)
	}
	debug.SetMemoryLimit(defaultEdgeMemoryLimit)
	return defaultEdgeMemoryLimit
}

// servePprof serves the runtime's profiles (heap, goroutine, CPU, ...) under /debug/pprof/ on
// addr, for profiling a gateway under load; off unless --pprof-listen is given. It has no
// authentication, so it refuses addresses other than loopback.
func servePprof(addr string, logger *slog.Logger) (stop func(), err error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("--pprof-listen %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("--pprof-listen %q: profiles have no authentication, so they are served on loopback only: use 127.0.0.1:PORT", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for pprof on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	logger.Info("pprof listening", "addr", ln.Addr().String())
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("pprof server", "err", err)
		}
	}()
	return func() { srv.Close() }, nil
}
