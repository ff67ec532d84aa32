// Package central assembles the central node: central's log, the sync receiver, the consume
// API, the edges view and metrics on one listener, and a local admin socket. cmd/tributary only
// parses flags into a Config; tests run the same code in a child process.
package central

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	// promhttp serves the private registry at /metrics.
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tributary-iot/tributary/devices/certreload"
	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/central/console"
	"github.com/tributary-iot/tributary/sync/consume"
	"github.com/tributary-iot/tributary/sync/internal/httpx"
	"github.com/tributary-iot/tributary/sync/kafkasink"
	"github.com/tributary-iot/tributary/sync/protocol"
	"github.com/tributary-iot/tributary/sync/receive"
	"github.com/tributary-iot/tributary/sync/registry"
)

// Config is what `tributary central` takes.
type Config struct {
	DataDir string `yaml:"data_dir"`
	Listen  string `yaml:"listen"`

	// TLSCert and TLSKey (PEM) serve Listen over TLS. They and ClientCA are read again when they
	// change: a renewal needs no restart.
	TLSCert  string `yaml:"tls_cert"`
	TLSKey   string `yaml:"tls_key"`
	ClientCA string `yaml:"client_ca"` // require client certificates signed by this CA (mTLS)
	Insecure bool   `yaml:"insecure"`  // allow plain HTTP on a non-loopback listener

	Partitions int    `yaml:"partitions"` // of central streams created on first sight; default DefaultPartitions
	APIToken   string `yaml:"api_token"`  // required by the consume, groups and edges API when set
	// APITokenFile holds the API token (read at start), so it is neither in the config nor in ps.
	APITokenFile string `yaml:"api_token_file"`

	// MaxConnections caps the listener's open connections; default DefaultMaxConnections.
	MaxConnections int `yaml:"max_connections"`
	// BodyTimeout bounds how long a chunk's body may take to arrive (plus 1 s per 4 KiB of it);
	// default 30s.
	BodyTimeout time.Duration `yaml:"body_timeout"`

	// MaxStreams bounds the streams edges may create at central (each holds open files per
	// partition); default DefaultMaxStreams.
	MaxStreams int `yaml:"max_streams"`

	Fsync      string `yaml:"fsync"`       // group (default), interval, none
	QuotaBytes int64  `yaml:"quota_bytes"` // central's disk quota; full → 503 to edges

	// Sinks pass the merged stream on, for when one central node is not enough.
	Sinks Sinks `yaml:"sinks"`
	// Kafka serves the streams to Kafka clients (kcat, librdkafka, Java, franz-go), read-only.
	Kafka KafkaListener `yaml:"kafka"`
	// Console tunes the web console's plot history.
	Console ConsoleOptions `yaml:"console"`

	// Logger receives central's logs; nil discards them.
	Logger *slog.Logger `yaml:"-"`
	// Ready, when set, receives the bound address once serving.
	Ready func(addr string) `yaml:"-"`
	// KafkaReady, when set, receives the Kafka listener's bound address before Ready.
	KafkaReady func(addr string) `yaml:"-"`
}

// ConsoleOptions size the web console's in-memory plot history (see console.History.Bound);
// zero values take the defaults: 10s steps over 1h, 10,000 devices, 1,000 edges.
type ConsoleOptions struct {
	// Off serves no console (GET / answers 404) and keeps no history: the receiver then hands
	// no applied chunks to it.
	Off        bool          `yaml:"off"`
	Step       time.Duration `yaml:"step"`
	Window     time.Duration `yaml:"window"`
	MaxDevices int           `yaml:"max_devices"`
	MaxEdges   int           `yaml:"max_edges"`
}

// Sinks are the optional exporters of central's log.
type Sinks struct {
	// Kafka produces a central stream to a Kafka topic, exactly once, keyed by device.
	Kafka *kafkasink.Config `yaml:"kafka"`
}

// AdminSocket is the Unix socket in the data directory that `tributary central edges` uses while
// central runs (the log's metadata is locked by the running process).
func AdminSocket(dataDir string) string { return filepath.Join(dataDir, "central.sock") }

// IsLoopback reports whether a listen address binds only loopback interfaces.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Defaults applied by New to a Config's zero fields.
const (
	// DefaultPartitions is the partition count of central streams created on first sight.
	DefaultPartitions = 8
	// DefaultMaxStreams bounds the streams edges may create at central.
	DefaultMaxStreams = 64
)

// withDefaults fills in the zero fields of a Config: the one place central's defaults live.
func (c Config) withDefaults() Config {
	if c.Partitions <= 0 {
		c.Partitions = DefaultPartitions
	}
	if c.MaxStreams <= 0 {
		c.MaxStreams = DefaultMaxStreams
	}
	if c.MaxConnections <= 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Node is the central process; [Node.Run] serves it.
type Node struct {
	cfg   Config
	fsync storage.FsyncPolicy
}

// New applies the defaults to cfg and checks it (addresses, TLS, credentials off loopback, the
// API token file), saying what to change; Run opens the log and the listeners.
func New(cfg Config) (*Node, error) {
	cfg = cfg.withDefaults()
	if cfg.DataDir == "" || cfg.Listen == "" {
		return nil, errors.New("central needs --data-dir DIR and --listen ADDR")
	}
	useTLS := cfg.TLSCert != "" || cfg.TLSKey != ""
	if !useTLS && !IsLoopback(cfg.Listen) && !cfg.Insecure {
		return nil, fmt.Errorf("refusing plain HTTP on %s, which is not a loopback address: edge tokens and readings would travel in clear. Give --tls-cert and --tls-key, listen on 127.0.0.1, or pass --insecure if a trusted proxy terminates TLS", cfg.Listen)
	}
	if cfg.ClientCA != "" && !useTLS {
		return nil, errors.New("--client-ca needs --tls-cert and --tls-key: client certificates are checked in the TLS handshake")
	}
	if err := resolveAPIToken(&cfg); err != nil {
		return nil, err
	}
	if err := checkExposure(cfg); err != nil {
		return nil, err
	}
	fsync, err := storage.ParseFsyncPolicy(cfg.Fsync)
	if err != nil {
		return nil, err
	}
	return &Node{cfg: cfg, fsync: fsync}, nil
}

// Run is New followed by [Node.Run], for callers that keep no Node.
func Run(ctx context.Context, cfg Config) error {
	n, err := New(cfg)
	if err != nil {
		return err
	}
	return n.Run(ctx)
}

// Run serves until ctx ends, then shuts down in order: listener, receiver checkpoint, log.
func (n *Node) Run(ctx context.Context) error {
	cfg, fsync, logger := n.cfg, n.fsync, n.cfg.Logger
	useTLS := cfg.TLSCert != "" || cfg.TLSKey != ""
	log, err := storage.Open(cfg.DataDir, &storage.Options{Logger: logger, Fsync: fsync, QuotaBytes: cfg.QuotaBytes})
	if err != nil {
		return fmt.Errorf("open central log: %w", err)
	}
	defer log.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// The console counts what the receiver applies, tallied per chunk on the apply path, rather
	// than reading the log a second time.
	var feed *console.Feed
	var observer receive.Observer
	if !cfg.Console.Off {
		feed = console.NewFeed(cfg.Console.Step, 0)
		observer = feed
	}
	rcv, err := receive.New(receive.Config{Log: log, Partitions: cfg.Partitions, MaxStreams: cfg.MaxStreams,
		BodyTimeout: cfg.BodyTimeout, Logger: logger, Registerer: reg, Observer: observer})
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	// Sync: the receiver answers a malformed lane path or another method itself (JSON, counted in
	// its rejection metrics), so the bare prefix stays routed to it too.
	mux.Handle("GET "+protocol.SyncPrefix+"{stream}/{partition}", rcv)
	mux.Handle("POST "+protocol.SyncPrefix+"{stream}/{partition}", rcv)
	mux.Handle(protocol.SyncPrefix, rcv)
	// The API token guards everything but sync (edges have their own tokens) and /healthz; on a
	// non-loopback listener /metrics too (lane names and offsets say who sends what).
	consumeAPI, err := consume.New(log, consume.Config{Logger: logger.With("component", "consume")})
	if err != nil {
		return err
	}
	api := requireToken(cfg.APIToken, consumeAPI)
	for _, p := range consume.Patterns {
		mux.Handle(p, api)
	}
	mux.Handle("GET /v1/edges", requireToken(cfg.APIToken, edgesHandler(rcv)))
	// The schema registry's read subset sits at the root, where Schema Registry clients look
	// (schema.registry.url = central's URL), behind the same token.
	schemas, err := registry.New(log, registry.Config{Logger: logger.With("component", "registry")})
	if err != nil {
		return err
	}
	for _, p := range registry.Patterns {
		mux.Handle(p, requireRegistryToken(cfg.APIToken, schemas.Handler()))
	}
	var metrics http.Handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	if !IsLoopback(cfg.Listen) {
		metrics = requireToken(cfg.APIToken, metrics)
	}
	mux.Handle("GET /metrics", metrics)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	// The web console at / has its own login (a cookie from the API token) in front of the same
	// token; its tail reads the consume API unguarded behind that login.
	var web *console.Console
	if !cfg.Console.Off {
		web, err = console.New(console.Config{Log: log, Fleet: rcv, Feed: feed, Tail: consumeAPI, Token: cfg.APIToken,
			Step: cfg.Console.Step, Window: cfg.Console.Window, MaxDevices: cfg.Console.MaxDevices, MaxEdges: cfg.Console.MaxEdges,
			Logger: logger.With("component", "console")})
		if err != nil {
			return err
		}
		for _, p := range console.Patterns {
			mux.Handle(p, web)
		}
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	ln = limitConnections(ln, cfg.MaxConnections)
	// Every request's context ends when shutdown begins, so long polls (a follower waiting at the
	// end of a stream, an edge waiting for data) return at once instead of holding the stop for
	// the shutdown's 5 s bound; inFlight says what the stop waits for.
	requestsCtx, stopRequests := context.WithCancel(context.Background())
	defer stopRequests()
	var inFlight atomic.Int64
	counted := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inFlight.Add(1)
		defer inFlight.Add(-1)
		mux.ServeHTTP(w, r)
	})
	// A connection accepted but not yet carrying a request (a client's spare dial) is not idle to
	// http.Server.Shutdown until it is 5 s old, so the stop closes those itself.
	var unused sync.Map // net.Conn in http.StateNew
	srv := &http.Server{Handler: counted, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		BaseContext: func(net.Listener) context.Context { return requestsCtx },
		ConnState: func(c net.Conn, s http.ConnState) {
			if s == http.StateNew {
				unused.Store(c, struct{}{})
			} else {
				unused.Delete(c)
			}
		},
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelDebug)}
	srv.RegisterOnShutdown(func() {
		unused.Range(func(c, _ any) bool {
			c.(net.Conn).Close()
			return true
		})
	})
	var tcfg *tls.Config
	if useTLS {
		if tcfg, err = serverTLS(cfg); err != nil {
			ln.Close()
			return err
		}
		srv.TLSConfig = tcfg
		ln = tls.NewListener(ln, tcfg)
	}
	kafka, kln, err := listenKafka(cfg, log, tcfg, logger)
	if err != nil {
		ln.Close()
		return err
	}
	admin, err := listenAdmin(cfg.DataDir, rcv, log)
	if err != nil {
		ln.Close()
		if kln != nil {
			kln.Close()
		}
		return err
	}
	var sink *kafkasink.Sink
	if cfg.Sinks.Kafka != nil {
		kcfg := *cfg.Sinks.Kafka
		// The operator named the sink's stream: create it now, so its lag shows from the start
		// (edges create streams only with their first accepted data).
		if err := ensureStream(log, cmp.Or(kcfg.Stream, kafkasink.DefaultStream), cfg.Partitions); err != nil {
			ln.Close()
			return fmt.Errorf("kafka sink: %w", err)
		}
		kcfg.Logger = logger.With("component", "kafka-sink")
		kcfg.SchemaKnown = func(ctx context.Context, id int32) (bool, error) {
			_, ok, err := schemas.ByID(ctx, id)
			return ok, err
		}
		if sink, err = kafkasink.New(log, kcfg); err != nil {
			ln.Close()
			return fmt.Errorf("kafka sink: %w", err)
		}
		reg.MustRegister(sink)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 5)
	running := 3
	go func() { errc <- rcv.Run(ctx) }()
	if web != nil {
		running++
		go func() { errc <- web.Run(ctx) }()
	}
	if sink != nil {
		running++
		go func() {
			if err := sink.Run(ctx); err != nil {
				errc <- fmt.Errorf("kafka sink: %w", err)
				return
			}
			errc <- nil
		}()
	}
	go func() { errc <- srv.Serve(ln) }()
	go func() { errc <- admin.Serve() }()
	if kafka != nil {
		running++
		go func() { errc <- serveKafka(ctx, kafka, kln) }()
		logger.Info("central serving Kafka clients", "addr", kln.Addr().String(), "sasl", cfg.APIToken != "", "tls", tcfg != nil)
		if cfg.KafkaReady != nil {
			cfg.KafkaReady(kln.Addr().String())
		}
	}
	logger.Info("central serving", "addr", ln.Addr().String(), "tls", useTLS, "mtls", cfg.ClientCA != "", "data_dir", cfg.DataDir)
	if cfg.Ready != nil {
		cfg.Ready(ln.Addr().String())
	}
	var serveErr error
	received := 0
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
		received = 1
	}
	stopping := time.Now()
	logger.Info("central stopping: ending requests, then a last checkpoint of the log", "requests_in_flight", inFlight.Load())
	stopRequests()
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	if err := srv.Shutdown(sctx); err != nil {
		logger.Warn("requests still running after 5s were cut off", "requests_in_flight", inFlight.Load())
	}
	admin.Shutdown(sctx)
	cancel() // rcv.Run returns after a last checkpoint
	for ; received < running; received++ {
		if err := <-errc; serveErr == nil {
			serveErr = err
		}
	}
	if errors.Is(serveErr, http.ErrServerClosed) || errors.Is(serveErr, net.ErrClosed) {
		serveErr = nil
	}
	logger.Info("central stopped", "took", time.Since(stopping).Round(time.Millisecond))
	return serveErr
}

func ensureStream(log *storage.Log, name string, partitions int) error {
	if _, err := log.Stream(name); !errors.Is(err, storage.ErrNoStream) {
		return err
	}
	if _, err := log.CreateStream(name, storage.StreamConfig{Partitions: partitions}); err != nil {
		return fmt.Errorf("create stream %q: %w", name, err)
	}
	return nil
}

// serverTLS is the listener's TLS, built by the helper the edge's HTTP listener shares; the
// Kafka listener serves the same certificate. Renewed files are taken without a restart.
func serverTLS(cfg Config) (*tls.Config, error) {
	return httpx.ServerTLS(certreload.Options{
		CertFile: cfg.TLSCert, KeyFile: cfg.TLSKey, ClientCAFile: cfg.ClientCA,
		CertName: "tls_cert", KeyName: "tls_key", ClientCAName: "client_ca",
		Listener: "central", Logger: cfg.Logger,
	})
}

// EdgesView is the answer of GET /v1/edges.
type EdgesView struct {
	Edges []EdgeView         `json:"edges"`
	Lanes []receive.LaneInfo `json:"lanes"`
	Gaps  []receive.GapInfo  `json:"gaps"`
	// Refused lists registered edges whose calls central refused (401) since it started.
	Refused []receive.RefusalInfo `json:"refused"`
}

// EdgeView is a registered edge without its token hash.
type EdgeView struct {
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
	Revoked bool      `json:"revoked"`
}

func edgesHandler(rcv *receive.Receiver) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		edges, err := rcv.Edges()
		if err != nil {
			httpx.WriteError(w, http.StatusInternalServerError, "%v", err)
			return
		}
		gaps, err := rcv.Gaps()
		if err != nil {
			httpx.WriteError(w, http.StatusInternalServerError, "%v", err)
			return
		}
		v := EdgesView{Edges: []EdgeView{}, Lanes: rcv.Lanes(), Gaps: gaps, Refused: rcv.Refusals()}
		for _, e := range edges {
			v.Edges = append(v.Edges, EdgeView{e.ID, e.Created, e.Revoked})
		}
		httpx.WriteJSON(w, http.StatusOK, v)
	})
}

// adminServer serves edge administration on a Unix socket that only the data directory's owner
// can reach: filesystem permission is the authority, as for opening the log directly.
type adminServer struct {
	ln  net.Listener
	srv *http.Server
}

func listenAdmin(dataDir string, rcv *receive.Receiver, log *storage.Log) (*adminServer, error) {
	path := AdminSocket(dataDir)
	os.Remove(path) // a stale socket from a killed process; the log's lock proves we own the dir
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on admin socket: %w", err)
	}
	os.Chmod(path, 0o600)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /edges/{id}", func(w http.ResponseWriter, r *http.Request) {
		issue := rcv.AddEdge
		if r.URL.Query().Get("rotate") == "1" {
			issue = rcv.RotateEdge
		}
		token, err := issue(r.PathValue("id"))
		if err != nil {
			code := http.StatusBadRequest
			if errors.Is(err, receive.ErrEdgeExists) {
				code = http.StatusConflict
			}
			httpx.WriteError(w, code, "%v", err)
			return
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]string{"id": r.PathValue("id"), "token": token})
	})
	mux.HandleFunc("DELETE /edges/{id}", func(w http.ResponseWriter, r *http.Request) {
		if err := rcv.RevokeEdge(r.PathValue("id")); err != nil {
			httpx.WriteError(w, http.StatusBadRequest, "%v", err)
			return
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]string{"id": r.PathValue("id"), "revoked": "true"})
	})
	mux.HandleFunc("GET /inspect", func(w http.ResponseWriter, r *http.Request) {
		rep, err := log.Report(r.URL.Query().Get("verify") == "1")
		if err != nil {
			httpx.WriteError(w, http.StatusInternalServerError, "%v", err)
			return
		}
		httpx.WriteJSON(w, http.StatusOK, rep)
	})
	mux.HandleFunc("GET /edges", func(w http.ResponseWriter, r *http.Request) {
		edges, err := rcv.Edges()
		if err != nil {
			httpx.WriteError(w, http.StatusInternalServerError, "%v", err)
			return
		}
		httpx.WriteJSON(w, http.StatusOK, edges)
	})
	return &adminServer{ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}, nil
}

func (a *adminServer) Serve() error { return a.srv.Serve(a.ln) }

func (a *adminServer) Shutdown(ctx context.Context) { a.srv.Shutdown(ctx) }

// AdminClient talks to a running central's admin socket; ok is false when none is running.
func AdminClient(dataDir string) (*http.Client, bool) { return SocketClient(AdminSocket(dataDir)) }

// SocketClient is an HTTP client for a node's admin socket at path (central's, or the edge's);
// ok is false when nothing listens there.
func SocketClient(path string) (*http.Client, bool) {
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return nil, false
	}
	conn.Close()
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}, Timeout: 10 * time.Minute}, true // --verify of a large log reads every byte
}

// AdminDo calls the admin socket and decodes the JSON answer into out.
func AdminDo(c *http.Client, method, path string, out any) error {
	req, _ := http.NewRequest(method, "http://central"+path, nil)
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("call central's admin socket: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e protocol.Error
		json.NewDecoder(resp.Body).Decode(&e)
		return errors.New(strings.TrimSpace(e.Error))
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
