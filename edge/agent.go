package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/devices/certreload"
	"github.com/tributary-iot/tributary/devices/format"
	"github.com/tributary-iot/tributary/storage"
)

// Agent is the edge agent: an embedded MQTT broker whose hook appends every reading to the edge
// log, acknowledging QoS 1/2 only once durable, plus an optional external-broker source and an
// HTTP endpoint for metrics and health.
type Agent struct {
	cfg     Config
	logger  *slog.Logger
	log     *storage.Log
	cache   *devices.Cache
	mapper  *devices.Mapper
	server  *mqtt.Server
	hook    *hook
	metrics *metrics
	// logLimit bounds the log lines each MQTT client can cause (logfilter.go).
	logLimit *lineLimiter
	dedupe   *dedupe
	source   *source
	logins   *loginLimiter

	anonymousAllowed bool
	pending          atomic.Int64 // QoS 1/2 acks waiting for their append

	streamsMu  sync.RWMutex
	streams    map[string]*streamEntry
	deadLetter *storage.Stream
	declared   map[string]bool           // streams devices may publish to; nil: any (undeclared_streams: create)
	sparkplug  *sparkplugIngest          // nil when sparkplug.stream is off
	schemas    map[string]*format.Schema // by stream, for streams that declare one

	undeclaredMu     sync.Mutex
	undeclaredLogged map[string]struct{} // see firstUndeclared

	httpLn        net.Listener
	extraRoutes   []route         // HandleHTTP's, served beside /metrics
	mqttListeners []*mqttListener // TCP, TLS, and the bounds of the WebSocket listener
	sessions      *sessionTable
	tcpAddr       string
	tlsAddr       string
	wsAddr        string
	ready         atomic.Bool
	ran           atomic.Bool
	closed        sync.Once
}

// maxClientWritesPending caps each client's queue of outbound packets; see newBroker.
const maxClientWritesPending = 64

type streamEntry struct {
	stream *storage.Stream
	policy devices.Policy
}

// New opens the log and the device registry and binds the listeners; [Agent.Run] serves them.
// Call [Agent.Close] instead of Run to release them.
func New(cfg Config) (*Agent, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	a := &Agent{cfg: cfg, logger: logger, metrics: newMetrics(), streams: map[string]*streamEntry{}, declared: cfg.declaredStreams()}
	a.logLimit = newLineLimiter(a.metrics.logSuppressed)
	a.dedupe = newDedupe(2 * cfg.MaxPendingPerClient)
	ok := false
	defer func() {
		if !ok {
			a.closeResources()
		}
	}()

	fsync, _ := storage.ParseFsyncPolicy(orDefault(cfg.Fsync, "group"))
	schemas, err := loadSchemas(cfg)
	if err != nil {
		return nil, err
	}
	a.schemas = schemas
	quota, _ := storage.ParseQuotaPolicy(orDefault(cfg.QuotaPolicy, "backpressure"))
	l, err := storage.Open(cfg.DataDir, &storage.Options{
		Logger: logger.With("component", "storage"), Fsync: fsync, FsyncInterval: cfg.FsyncInterval,
		QuotaBytes: cfg.QuotaBytes, QuotaPolicy: quota, SegmentBytes: cfg.SegmentBytes,
		OnFsync: a.metrics.observeFsync, GroupLinger: max(cfg.GroupLinger, 0), CommitBudget: commitBudget(cfg),
	})
	if err != nil {
		return nil, fmt.Errorf("open edge log in %s: %w", cfg.DataDir, err)
	}
	a.log = l
	a.metrics.registerLog(l, cfg.QuotaBytes)
	a.metrics.registerFailures(a)
	if cfg.Sparkplug.enabled() {
		a.sparkplug = newSparkplugIngest(cfg.Sparkplug, l, a.metrics.registry, a.metrics.deadLetters)
	}
	if a.deadLetter, err = l.CreateStream(devices.DeadLetterStream, storage.StreamConfig{Partitions: 1}); err != nil {
		return nil, fmt.Errorf("create dead-letter stream: %w", err)
	}
	// Streams already on disk keep their partition count; the default stream exists from the start
	// so the forwarder sees it before the first reading.
	for _, s := range l.Streams() {
		if !devices.Reserved(s.Name()) {
			a.streams[s.Name()] = &streamEntry{stream: s, policy: a.policy(s.Name())}
		}
	}
	if _, err := a.stream(cfg.DefaultStream); err != nil {
		return nil, err
	}
	if err := a.recordSchemas(context.Background()); err != nil {
		return nil, err
	}
	start := time.Now()
	n, err := a.dedupe.rebuild(context.Background(), l, cfg.DedupeWindow)
	if err != nil {
		return nil, fmt.Errorf("rebuild dedupe memory from the log tail: %w", err)
	}
	logger.Info("dedupe memory rebuilt", "readings", n, "took", time.Since(start).Round(time.Millisecond))

	if a.mapper, err = devices.NewMapper(cfg.Mapping); err != nil {
		return nil, fmt.Errorf("mapping: %w", err)
	}
	if a.cache, err = a.openRegistry(&devices.CacheOptions{Mapper: a.mapper, Logger: logger.With("component", "devices"),
		MaxConcurrentChecks: cfg.Auth.MaxConcurrentChecks, CheckWait: cfg.Auth.CheckWait}); err != nil {
		return nil, fmt.Errorf("load device registry: %w", err)
	}
	a.logins = newLoginLimiter(cfg.Auth)
	a.metrics.registerAuth(a.cache)
	var addrs []string
	for _, ad := range []string{cfg.MQTT.Listen, cfg.MQTT.TLSListen, cfg.MQTT.WSListen} {
		if ad != "" {
			addrs = append(addrs, ad)
		}
	}
	a.anonymousAllowed = len(addrs) > 0 && devices.AnonymousAllowed(addrs, cfg.AllowAnonymous)

	if err := a.newBroker(); err != nil {
		return nil, err
	}
	if HTTPEnabled(cfg.HTTPListen) {
		if a.httpLn, err = net.Listen("tcp", cfg.HTTPListen); err != nil {
			return nil, fmt.Errorf("listen for HTTP on %s: %w", cfg.HTTPListen, err)
		}
		if cfg.HTTPTLS != nil {
			a.httpLn = tls.NewListener(a.httpLn, cfg.HTTPTLS)
		}
	}
	if cfg.Source != nil {
		a.source = newSource(a, *cfg.Source)
	}
	ok = true
	return a, nil
}

// commitBudget is the storage's adaptive commit budget: off under a fixed or disabled linger.
func commitBudget(cfg Config) time.Duration {
	if cfg.GroupLinger != 0 {
		return 0
	}
	return max(cfg.AckLatencyBudget, 0)
}

// HTTPEnabled reports whether an http_listen value asks for a listener: "", "off" and "-" do not.
func HTTPEnabled(listen string) bool {
	return listen != "" && listen != "off" && listen != "-"
}

func (a *Agent) newBroker() error {
	cfg := a.cfg
	caps := mqtt.NewDefaultServerCapabilities()
	caps.ReceiveMaximum = uint16(cfg.MaxPendingPerClient)
	caps.MaximumPacketSize = uint32(cfg.MQTT.MaxPacketBytes)
	// Persistent sessions are kept mqtt.session_expiry, not forever, and sessionTable caps
	// them, so a churning fleet does not fill memory with dead sessions.
	caps.MaximumSessionExpiryInterval = uint32(max(cfg.MQTT.SessionExpiry/time.Second, 1))
	// Mochi gives every client an outbound queue of this many packet pointers up front (8,192 by
	// default: 64 KiB per client, 64 MiB of a 1,000-device gateway's heap, and twice that in RSS
	// once the GC's headroom is counted). The queue carries only fan-out to subscribers: QoS 1/2
	// readings are stored, not relayed, and their acks bypass it. A subscriber that falls this far
	// behind loses QoS 0 messages, which is what QoS 0 allows. At 512 the queues were still a
	// third of a 1,000-device gateway's heap (7.5 MiB); 64 is 512 bytes per client.
	caps.MaximumClientWritesPending = maxClientWritesPending
	configureCapabilities(caps) // retain and topic aliases: see conformance.go
	a.server = mqtt.New(&mqtt.Options{
		Capabilities: caps,
		// 1 byte means mochi never holds a written packet back in its per-client buffer (0 would
		// mean its 2 KiB default): the committer's direct PUBACK write (direct_unix.go) goes to
		// the socket itself and must not overtake an ack mochi still buffers, since PUBACKs
		// leave in the order their PUBLISHes came [MQTT-4.6.0-2].
		ClientNetWriteBufferSize: 1,
		// Mochi reads each client through a bufio.Reader of this size (2 KiB by default), kept
		// for the connection's life: a reading of a few hundred bytes fits, and a larger packet
		// is read straight into its own buffer, so 512 bytes is a quarter of the default.
		ClientNetReadBufferSize: 512,
		// The inline client publishes the Sparkplug rebirth requests (NCMD) to nodes.
		InlineClient: a.sparkplug != nil && cfg.Sparkplug.RequestRebirth,
		// Mochi logs every connection at info; the hook logs what operators need. Its warnings
		// become one line per event within each client's log budget (logfilter.go).
		Logger: slog.New(mochiLines{clientLimited{Handler: levelFloor{a.logger.With("component", "mqtt").Handler(), slog.LevelWarn},
			lim: a.logLimit, device: a.deviceOf}}),
	})
	ingestLog := a.limitedLogger(a.logger.With("component", "ingest").Handler())
	a.hook = &hook{agent: a, log: ingestLog, sessions: map[*mqtt.Client]*session{}}
	a.sessions = newSessionTable(cfg.MQTT.MaxSessions, cfg.MQTT.MaxSessionsPerDevice)
	if err := a.server.AddHook(&sessionHook{table: a.sessions}, nil); err != nil {
		return fmt.Errorf("add session hook: %w", err)
	}
	protocol := &protocolHook{agent: a, log: ingestLog, wills: map[string]*session{}}
	if err := a.server.AddHook(protocol, nil); err != nil {
		return fmt.Errorf("add protocol hook: %w", err)
	}
	if err := a.server.AddHook(a.hook, nil); err != nil {
		return fmt.Errorf("add ingest hook: %w", err)
	}
	limit := a.connectionLimit()
	lm := newListenerMetrics(a.metrics.registry, a.openConns, limit.max)
	listenerLog := a.logger.With("component", "mqtt")
	if cfg.MQTT.Listen != "" {
		tcp, err := newMQTTListener("tcp", cfg.MQTT.Listen, nil, limit, cfg.MQTT, listenerLog, lm)
		if err != nil {
			return fmt.Errorf("listen for MQTT on %s: %w", cfg.MQTT.Listen, err)
		}
		a.mqttListeners = append(a.mqttListeners, tcp)
		if err := a.server.AddListener(tcp); err != nil {
			return fmt.Errorf("listen for MQTT on %s: %w", cfg.MQTT.Listen, err)
		}
		a.tcpAddr = tcp.Address()
	}
	if cfg.MQTT.TLSListen != "" {
		tc, err := a.tlsConfig()
		if err != nil {
			return err
		}
		l, err := newMQTTListener("tls", cfg.MQTT.TLSListen, tc, limit, cfg.MQTT, listenerLog, lm)
		if err != nil {
			return fmt.Errorf("listen for MQTT over TLS on %s: %w", cfg.MQTT.TLSListen, err)
		}
		a.mqttListeners = append(a.mqttListeners, l)
		if err := a.server.AddListener(l); err != nil {
			return fmt.Errorf("listen for MQTT over TLS on %s: %w", cfg.MQTT.TLSListen, err)
		}
		a.tlsAddr = l.Address()
	}
	if cfg.MQTT.WSListen != "" {
		ws, err := newWSListener("ws", cfg.MQTT.WSListen, cfg.MQTT.WSAllowedOrigins,
			func() { a.metrics.authFailed.WithLabelValues("ws_origin").Inc() })
		if err != nil {
			return fmt.Errorf("listen for MQTT over WebSocket on %s: %w", cfg.MQTT.WSListen, err)
		}
		ws.bounds = boundListener("ws", ws.ln, nil, limit, cfg.MQTT, listenerLog, lm)
		a.mqttListeners = append(a.mqttListeners, ws.bounds)
		if err := a.server.AddListener(ws); err != nil {
			ws.ln.Close()
			return fmt.Errorf("listen for MQTT over WebSocket on %s: %w", cfg.MQTT.WSListen, err)
		}
		a.wsAddr = ws.Address()
	}
	return nil
}

// tlsConfig serves mqtt.tls_cert and its key, read again when they change (certreload).
func (a *Agent) tlsConfig() (*tls.Config, error) {
	m := a.cfg.MQTT
	r, err := certreload.New(certreload.Options{CertFile: m.TLSCert, KeyFile: m.TLSKey, ClientCAFile: m.TLSClientCA,
		CertName: "mqtt.tls_cert", KeyName: "mqtt.tls_key", ClientCAName: "mqtt.tls_client_ca", Listener: "mqtt_tls", Logger: a.logger})
	if err != nil {
		return nil, err
	}
	base := &tls.Config{MinVersion: tls.VersionTLS12}
	if m.TLSClientCA != "" {
		// Devices with a password may still connect over TLS without a certificate.
		base.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return r.ServerConfig(base), nil
}

// Log is the edge log the agent appends to; the forwarder reads it. Valid until Run returns.
func (a *Agent) Log() *storage.Log { return a.log }

// Config is the effective configuration, defaults applied.
func (a *Agent) Config() Config { return a.cfg }

// Registerer lets other parts of the edge process (the forwarder) export metrics on /metrics.
func (a *Agent) Registerer() prometheus.Registerer { return a.metrics.registry }

// MQTTAddr is the bound address of the plain TCP listener ("" when disabled).
func (a *Agent) MQTTAddr() string { return a.tcpAddr }

// TLSAddr is the bound address of the TLS listener ("" when disabled).
func (a *Agent) TLSAddr() string { return a.tlsAddr }

// WSAddr is the bound address of the WebSocket listener ("" when disabled).
func (a *Agent) WSAddr() string { return a.wsAddr }

// HTTPAddr is the bound address of the metrics and health endpoint ("" when disabled).
func (a *Agent) HTTPAddr() string {
	if a.httpLn == nil {
		return ""
	}
	return a.httpLn.Addr().String()
}

// Ready reports whether the agent accepts readings.
func (a *Agent) Ready() bool { return a.ready.Load() }

// Run serves until ctx ends, then shuts down in order: refuse new connections and publishes,
// wait (up to drain_timeout) for pending acks, close the broker (which waits for its hooks), and
// close the log last. It may be called once.
func (a *Agent) Run(ctx context.Context) error {
	if a.ran.Swap(true) {
		return errors.New("edge agent: Run called twice")
	}
	var wg sync.WaitGroup
	bg, stopBG := context.WithCancel(context.Background())
	wg.Go(func() { _ = a.cache.Watch(bg, 2*time.Second) })
	var httpSrv *http.Server
	if a.httpLn != nil {
		// net/http's own complaints (TLS handshakes of scanners, say) go to the agent's log at
		// debug, as central's do, not to stderr.
		httpSrv = &http.Server{Handler: a.httpHandler(), ReadHeaderTimeout: 10 * time.Second,
			ErrorLog: slog.NewLogLogger(a.logger.Handler(), slog.LevelDebug)}
		wg.Go(func() {
			if err := httpSrv.Serve(a.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.logger.Error("HTTP server stopped", "err", err)
			}
		})
	}
	if err := a.server.Serve(); err != nil {
		stopBG()
		wg.Wait()
		a.closeResources()
		return fmt.Errorf("start MQTT broker: %w", err)
	}
	srcErr := make(chan error, 1)
	if a.source != nil {
		wg.Go(func() { srcErr <- a.source.run(bg) })
	}
	admin := a.serveAdmin()
	if a.cfg.AutoMemoryLimit {
		debug.SetMemoryLimit(memoryLimit(0))
	}
	wg.Go(func() { watchMemory(bg, &a.server.Info.ClientsConnected, a.cfg.AutoMemoryLimit) })
	a.ready.Store(true)
	a.logger.Info("edge agent ready", "mqtt", a.tcpAddr, "tls", a.tlsAddr, "ws", a.wsAddr,
		"http", a.HTTPAddr(), "http_tls", a.cfg.HTTPTLS != nil, "data_dir", a.cfg.DataDir, "anonymous", a.anonymousAllowed)

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-srcErr:
		runErr = err
	}
	a.logger.Info("edge agent stopping")
	a.ready.Store(false)
	a.hook.draining.Store(true)
	if a.source != nil {
		a.source.stop()
	}
	a.drain()
	stopBG()
	if httpSrv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = httpSrv.Shutdown(sctx)
		cancel()
	}
	if admin != nil {
		admin.Close()
		os.Remove(AdminSocket(a.cfg.DataDir))
	}
	wg.Wait()
	if err := a.closeResources(); err != nil && runErr == nil {
		runErr = err
	}
	a.logger.Info("edge agent stopped")
	return runErr
}

// drain waits until every queued ack is written or dropped, so readings already appended are
// acknowledged before the connections close.
func (a *Agent) drain() {
	deadline := time.Now().Add(a.cfg.DrainTimeout)
	for a.pending.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := a.pending.Load(); n > 0 {
		a.logger.Warn("shutdown with readings still waiting for their ack; clients will resend them", "pending", n)
	}
}

// Close releases what New opened, for a caller that does not call Run. After Run it does nothing.
func (a *Agent) Close() error { return a.closeResources() }

func (a *Agent) closeResources() error {
	var err error
	a.closed.Do(func() {
		if a.server != nil {
			// Closes listeners and clients and waits for client goroutines, so no hook runs after.
			_ = a.server.Close()
		}
		for _, l := range a.mqttListeners {
			l.Close(func(string) {}) // New failed before the broker served them
		}
		if a.httpLn != nil {
			_ = a.httpLn.Close()
		}
		if a.log != nil {
			err = a.log.Close()
		}
	})
	return err
}

// levelFloor drops records below a level, to quiet a library's chatty logger.
type levelFloor struct {
	slog.Handler
	min slog.Level
}

func (h levelFloor) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h levelFloor) WithAttrs(attrs []slog.Attr) slog.Handler {
	return levelFloor{h.Handler.WithAttrs(attrs), h.min}
}

func (h levelFloor) WithGroup(name string) slog.Handler {
	return levelFloor{h.Handler.WithGroup(name), h.min}
}
