package console

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"time"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/receive"
)

// Fleet is what the console reads from central's sync receiver (*receive.Receiver has it).
type Fleet interface {
	Edges() ([]receive.EdgeInfo, error)
	Lanes() []receive.LaneInfo
	Gaps() ([]receive.GapInfo, error)
	Refusals() []receive.RefusalInfo
}

// Config is what the console needs from central.
type Config struct {
	Log   *storage.Log // central's log: read back once at start, and for a device's readings
	Fleet Fleet        // the sync receiver
	// Feed is the receiver's Observer (receive.Config.Observer), made with this Step: the
	// history counts what it hands over.
	Feed *Feed
	// Tail serves /v1/tail/{stream} (the consume API); the Stream page reads it through the
	// console, which accepts the login cookie that a browser's EventSource sends.
	Tail http.Handler
	// Token is central's API token: the login form asks for it. Empty means no login, which
	// central allows only on a loopback listener or with client certificates, as for the API.
	Token string

	// Step is the history's resolution; default DefaultStep. Window is how far back it reaches; default 1h.
	Step   time.Duration
	Window time.Duration
	// MaxDevices and MaxEdges bound the history (see History.Bound); defaults 10,000 and 1,000.
	MaxDevices int
	MaxEdges   int
	// SampleEvery is how often the lanes are sampled for throughput and backlog; default 1s.
	SampleEvery time.Duration
	// SilentAfter is how long an edge may stay quiet before it shows as silent; default 2m.
	SilentAfter time.Duration
	// BehindRecords is the backlog from which a forwarding edge shows as behind; default 1000.
	BehindRecords int64
	// SeedRecords is how many records per partition are read back once at start (of what the
	// log held when New was called), so devices show before they send again; default 1000.
	SeedRecords int64
	// SessionTTL is how long a login lasts; default 12h.
	SessionTTL time.Duration

	Logger *slog.Logger
}

// DefaultStep is the history's resolution when Config.Step is zero.
const DefaultStep = 10 * time.Second

// Console serves central's web console and its data endpoints.
type Console struct {
	cfg     Config
	logger  *slog.Logger
	hist    *History
	coll    *collector
	mux     *http.ServeMux
	started time.Time
	logins  loginLimiter
}

//go:embed assets
var assets embed.FS

// New checks cfg and applies its defaults. Call it before the receiver takes chunks: the seed
// reads the log up to where it ends now, and the feed counts what comes after.
func New(cfg Config) (*Console, error) {
	if cfg.Log == nil || cfg.Fleet == nil || cfg.Feed == nil || cfg.Tail == nil {
		return nil, errors.New("console needs central's log, its receiver, the receiver's feed and the tail API")
	}
	if cfg.Step <= 0 {
		cfg.Step = DefaultStep
	}
	if time.Duration(cfg.Feed.step) != cfg.Step {
		return nil, fmt.Errorf("console: its feed tallies steps of %v, the history's are %v: make both with the same step", time.Duration(cfg.Feed.step), cfg.Step)
	}
	if cfg.Window <= 0 {
		cfg.Window = time.Hour
	}
	if cfg.Window < cfg.Step {
		return nil, errors.New("console: the history window must be at least one step")
	}
	if cfg.MaxDevices <= 0 {
		cfg.MaxDevices = 10_000
	}
	if cfg.MaxEdges <= 0 {
		cfg.MaxEdges = 1_000
	}
	if cfg.SampleEvery <= 0 {
		cfg.SampleEvery = time.Second
	}
	if cfg.SilentAfter <= 0 {
		cfg.SilentAfter = 2 * time.Minute
	}
	if cfg.BehindRecords <= 0 {
		cfg.BehindRecords = 1000
	}
	if cfg.SeedRecords <= 0 {
		cfg.SeedRecords = 1000
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 12 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Console{cfg: cfg, logger: cfg.Logger, started: time.Now(),
		hist: NewHistory(cfg.Step, cfg.Window, cfg.MaxDevices, cfg.MaxEdges)}
	c.coll = newCollector(cfg.Log, cfg.Fleet, c.hist, cfg.Feed, cfg.SeedRecords)
	c.routes()
	return c, nil
}

// History is the console's plot history, for its size.
func (c *Console) History() *History { return c.hist }

// Run collects the history until ctx ends; it returns once it no longer reads the log, so the
// caller may close the log after it.
func (c *Console) Run(ctx context.Context) error {
	c.logger.Info("console history", "step", c.cfg.Step, "window", c.cfg.Window, "max_devices", c.cfg.MaxDevices,
		"max_edges", c.cfg.MaxEdges, "bound_bytes", c.hist.Bound())
	c.coll.run(ctx, c.cfg.SampleEvery)
	return nil
}

// Patterns are the routes the console takes on central's mux.
var Patterns = []string{"GET /{$}", "GET /favicon.ico", "/console/"}

func (c *Console) routes() {
	m := http.NewServeMux()
	static, _ := fs.Sub(assets, "assets")
	files := http.StripPrefix("/console/assets/", http.FileServerFS(static))
	// Assets hold no data: the login page needs them before a login.
	m.Handle("GET /console/assets/", cacheFor(time.Hour, files))
	m.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/svg+xml")
		w.Header().Set("Cache-Control", "public, max-age=86400")
		b, _ := assets.ReadFile("assets/favicon.svg")
		w.Write(b)
	})
	m.HandleFunc("GET /console/login", c.loginPage)
	m.HandleFunc("POST /console/login", c.login)
	m.HandleFunc("POST /console/logout", c.logout)

	page := func(name string) http.Handler { return c.guardPage(c.servePage(name)) }
	m.Handle("GET /{$}", page("fleet.html"))
	m.Handle("GET /console/{$}", http.RedirectHandler("/", http.StatusFound))
	m.Handle("GET /console/edges/{id}", page("edge.html"))
	m.Handle("GET /console/devices", page("devices.html"))
	m.Handle("GET /console/stream", page("stream.html"))

	api := func(h http.HandlerFunc) http.Handler { return c.guardAPI(h) }
	m.Handle("GET /console/api/fleet", api(c.apiFleet))
	m.Handle("GET /console/api/edges/{id}", api(c.apiEdge))
	m.Handle("GET /console/api/devices", api(c.apiDevices))
	m.Handle("GET /console/api/devices/{id}", api(c.apiDevice))
	m.Handle("GET /console/api/devices/{id}/readings", api(c.apiReadings))
	m.Handle("GET /console/api/streams", api(c.apiStreams))
	m.Handle("GET /console/api/tail/{stream}", api(c.apiTail))
	m.Handle("/console/api/", api(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no console endpoint %s %s: see the console's API in the README", r.Method, r.URL.Path)
	}))
	c.mux = m
}

// ServeHTTP serves the console's routes (Patterns) with its security headers.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	// Everything the pages load is served from here: no inline script, no other origin.
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Frame-Options", "DENY")
	c.mux.ServeHTTP(w, r)
}

func cacheFor(d time.Duration, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age="+itoa(int64(d.Seconds())))
		h.ServeHTTP(w, r)
	})
}

func (c *Console) servePage(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := assets.ReadFile("assets/" + name)
		if err != nil {
			writeError(w, http.StatusInternalServerError, "page %s is missing from the binary", name)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(b)
	})
}
