package edge

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/prometheus/client_golang/prometheus"
)

// mqttListener serves the agent's plain and TLS MQTT listeners to mochi in place of
// listeners.TCP, which in v2.7.9 returns from its accept loop on the first Accept error (EMFILE
// included) and so stops taking connections for good, and which puts no deadline on a connection
// before its CONNECT. This one:
//
//   - retries failed accepts with backoff, as net/http does, and reports the listener not
//     accepting (see [Agent.listenerProblem]) until an accept succeeds again;
//   - holds at most connLimit connections of all listeners together, a cap below the process's
//     file descriptor limit: past it, new connections wait in the kernel's backlog instead of
//     making Accept (and every file the agent opens) fail;
//   - closes a connection that has not delivered a whole CONNECT within connectTimeout (the TLS
//     handshake included): mochi sets no read deadline until the CONNECT has been read;
//   - gives every write a deadline (see [trackedConn]), and at shutdown cuts writes to clients
//     that do not read, so neither an ack writer nor mochi's DISCONNECT waits on them.
type mqttListener struct {
	id             string
	ln             net.Listener
	tls            *tls.Config
	limit          *connLimit
	connectTimeout time.Duration
	writeTimeout   time.Duration
	log            *slog.Logger
	metrics        *listenerMetrics

	done      chan struct{}
	closeOnce sync.Once
	// shutdown is the UnixNano deadline every write gets once Close began; 0 before.
	shutdown atomic.Int64
	// problem is why the listener is not accepting now; nil while it is.
	problem atomic.Pointer[error]
	// failures counts failed accepts, so a check scheduled after one knows whether more came.
	failures atomic.Uint64

	mu    sync.Mutex
	conns map[*trackedConn]struct{}
}

// acceptQuiet is how long after a retried accept no failure must come for the listener to count
// as accepting again, when no connection arrives to show it.
const acceptQuiet = 250 * time.Millisecond

// shutdownWriteGrace is how long writes may still take once the broker closes: long enough for
// a DISCONNECT to reach a client that reads, short enough that clients that do not read cost
// shutdown one grace in total, not one each.
const shutdownWriteGrace = time.Second

// writeChunk bounds one write to the socket, so the write deadline measures a stall rather than
// the time a large packet takes over a slow link.
const writeChunk = 64 << 10

func newMQTTListener(id, addr string, tc *tls.Config, limit *connLimit, cfg MQTTConfig, log *slog.Logger, m *listenerMetrics) (*mqttListener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return boundListener(id, ln, tc, limit, cfg, log, m), nil
}

func boundListener(id string, ln net.Listener, tc *tls.Config, limit *connLimit, cfg MQTTConfig, log *slog.Logger, m *listenerMetrics) *mqttListener {
	return &mqttListener{
		id: id, ln: ln, tls: tc, limit: limit,
		connectTimeout: cfg.ConnectTimeout, writeTimeout: cfg.WriteTimeout,
		log: log.With("listener", id), metrics: m,
		done: make(chan struct{}), conns: map[*trackedConn]struct{}{},
	}
}

var _ listeners.Listener = (*mqttListener)(nil)

func (l *mqttListener) ID() string              { return l.id }
func (l *mqttListener) Address() string         { return l.ln.Addr().String() }
func (l *mqttListener) Protocol() string        { return "tcp" }
func (l *mqttListener) Init(*slog.Logger) error { return nil } // bound in newMQTTListener, so New reports a taken port

// Serve accepts connections until Close, handing each to mochi's establish on its own goroutine.
func (l *mqttListener) Serve(establish listeners.EstablishFn) {
	var delay time.Duration
	var failingSince time.Time
	for {
		if !l.limit.acquire(l.done, l.log) {
			return
		}
		conn, err := l.ln.Accept()
		if err != nil {
			l.limit.release()
			select {
			case <-l.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				// Closed, but not by Close: nothing will accept on this address again.
				err = fmt.Errorf("MQTT listener %s on %s stopped: %w; restart the edge agent", l.id, l.Address(), err)
				l.problem.Store(&err)
				l.log.Error("MQTT listener stopped", "err", err)
				return
			}
			// EMFILE, ENFILE, ENOBUFS, ECONNABORTED and the like pass: retry, backing off so a
			// connection that keeps failing does not spin a CPU.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			l.metrics.acceptErrors.Inc()
			if failingSince.IsZero() || l.problem.Load() == nil {
				failingSince = time.Now()
				l.log.Warn("MQTT accept failed; retrying with backoff", "err", err)
			}
			perr := fmt.Errorf("MQTT listener %s is not accepting connections since %s: %w",
				l.id, failingSince.UTC().Format(time.RFC3339), err)
			p := &perr
			l.problem.Store(p)
			// The retry may find no connection waiting (the ones that failed were aborted by
			// their clients, which Accept skips), and then blocks without a success to clear
			// the problem: if no accept has failed again a while after the retry, the listener
			// is accepting again.
			gen := l.failures.Add(1)
			time.AfterFunc(delay+acceptQuiet, func() {
				if l.failures.Load() == gen {
					l.problem.CompareAndSwap(p, nil)
				}
			})
			select {
			case <-l.done:
				return
			case <-time.After(delay):
			}
			continue
		}
		if !failingSince.IsZero() {
			l.log.Info("MQTT accept works again", "failed_for", time.Since(failingSince).Round(time.Millisecond))
			failingSince, delay = time.Time{}, 0
			l.problem.Store(nil)
		}
		c := l.track(conn)
		var nc net.Conn = c
		if l.tls != nil {
			nc = tls.Server(c, l.tls)
		}
		go func() {
			// Refused and idle connections end here too; the ingest hook logs what operators need.
			if err := establish(l.id, nc); err != nil {
				l.log.Debug("MQTT connection ended", "remote", c.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

// track wraps an accepted connection: a read deadline for its CONNECT (mochi replaces it with
// the keepalive deadline once the CONNECT is read), write deadlines, and its slot of the limit.
func (l *mqttListener) track(conn net.Conn) *trackedConn {
	c := &trackedConn{Conn: conn, l: l}
	if l.connectTimeout > 0 {
		_ = conn.SetReadDeadline(time.Now().Add(l.connectTimeout))
	}
	l.mu.Lock()
	l.conns[c] = struct{}{}
	shutdown := l.shutdown.Load()
	l.mu.Unlock()
	if shutdown != 0 {
		_ = conn.SetWriteDeadline(time.Unix(0, shutdown))
	}
	return c
}

func (l *mqttListener) untrack(c *trackedConn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
	l.limit.release()
}

// Close stops accepting, cuts writes that still wait on a client after shutdownWriteGrace, has
// mochi disconnect this listener's clients, and closes the connections that are not clients yet.
func (l *mqttListener) Close(closeClients listeners.CloseFn) {
	l.closeOnce.Do(func() {
		close(l.done)
		_ = l.ln.Close()
		deadline := time.Now().Add(shutdownWriteGrace)
		l.shutdown.Store(deadline.UnixNano())
		l.mu.Lock()
		for c := range l.conns {
			_ = c.Conn.SetWriteDeadline(deadline)
		}
		l.mu.Unlock()
		closeClients(l.id)
		// What is left never completed its CONNECT (or is still being authenticated): mochi
		// waits for those connections' goroutines, so end them now rather than at
		// connect_timeout.
		l.mu.Lock()
		rest := make([]*trackedConn, 0, len(l.conns))
		for c := range l.conns {
			rest = append(rest, c)
		}
		l.mu.Unlock()
		for _, c := range rest {
			_ = c.Close()
		}
	})
}

// acceptor is an mqttListener as a net.Listener, for the WebSocket listener's HTTP server:
// its connections get the same cap, deadlines and shutdown; net/http retries failed accepts
// itself, and /readyz reports them meanwhile.
type acceptor struct{ l *mqttListener }

func (a acceptor) Accept() (net.Conn, error) {
	if !a.l.limit.acquire(a.l.done, a.l.log) {
		return nil, net.ErrClosed
	}
	conn, err := a.l.ln.Accept()
	if err != nil {
		a.l.limit.release()
		select {
		case <-a.l.done:
		default:
			a.l.metrics.acceptErrors.Inc()
			perr := fmt.Errorf("MQTT listener %s is not accepting connections: %w", a.l.id, err)
			a.l.problem.Store(&perr)
		}
		return nil, err
	}
	a.l.problem.Store(nil)
	return a.l.track(conn), nil
}

func (a acceptor) Close() error   { return a.l.ln.Close() }
func (a acceptor) Addr() net.Addr { return a.l.ln.Addr() }

// connectDeadline gives conn, now carrying MQTT (a WebSocket after its upgrade), connectTimeout
// for its CONNECT: net/http cleared its own read deadline once the request's header was read.
func (l *mqttListener) connectDeadline(conn net.Conn) {
	if l.connectTimeout > 0 {
		_ = conn.SetReadDeadline(time.Now().Add(l.connectTimeout))
	}
}

// notAccepting returns why the listener takes no connections now, or nil.
func (l *mqttListener) notAccepting() error {
	if p := l.problem.Load(); p != nil {
		return *p
	}
	return nil
}

// openConns is how many of this listener's connections are open.
func (l *mqttListener) openConns() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

// trackedConn is an accepted connection as mochi sees it. Mochi's keepalive deadline
// (SetDeadline) applies to reads only; writes get writeTimeout per chunk instead, and none at all
// without this wrapper: a client that stops reading would hold its write lock, and with it the
// ack writer and shutdown, for as long as it likes. A write that times out leaves a packet half
// sent, so the connection is closed.
type trackedConn struct {
	net.Conn
	l         *mqttListener
	closeOnce sync.Once
	failed    atomic.Bool
}

// SetDeadline sets the read deadline only: see trackedConn.
func (c *trackedConn) SetDeadline(t time.Time) error { return c.Conn.SetReadDeadline(t) }

func (c *trackedConn) Write(b []byte) (int, error) {
	if c.failed.Load() {
		return 0, net.ErrClosed
	}
	n := 0
	for n < len(b) {
		end := min(n+writeChunk, len(b))
		c.setWriteDeadline()
		m, err := c.Conn.Write(b[n:end])
		n += m
		if err != nil {
			if errors.Is(err, syscall.EPIPE) || isTimeout(err) {
				c.failed.Store(true)
				_ = c.Close()
			}
			if isTimeout(err) {
				c.l.metrics.writeTimeouts.Inc()
				return n, fmt.Errorf("client %s took no data for %s, closed: %w", c.RemoteAddr(), c.l.writeTimeout, err)
			}
			return n, err
		}
	}
	return n, nil
}

// setWriteDeadline gives the next write writeTimeout, or the shutdown deadline once Close began.
// Close stores the shutdown deadline before it sets it on every connection, so a write that
// missed it here finds it on the second look, or Close's SetWriteDeadline comes after this one.
func (c *trackedConn) setWriteDeadline() {
	if s := c.l.shutdown.Load(); s != 0 {
		_ = c.Conn.SetWriteDeadline(time.Unix(0, s))
		return
	}
	if c.l.writeTimeout > 0 {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(c.l.writeTimeout))
	}
	if s := c.l.shutdown.Load(); s != 0 {
		_ = c.Conn.SetWriteDeadline(time.Unix(0, s))
	}
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() { c.l.untrack(c) })
	return err
}

// SyscallConn gives the ack writer the socket for its non-blocking direct writes (acks.go).
func (c *trackedConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.New("connection has no file descriptor")
	}
	return sc.SyscallConn()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// connLimit caps the connections of all MQTT listeners together.
type connLimit struct {
	max   int
	slots chan struct{}
	full  atomic.Bool // the last acquire had to wait; logged once per episode
}

func newConnLimit(max int) *connLimit {
	return &connLimit{max: max, slots: make(chan struct{}, max)}
}

// acquire takes a slot, waiting while every slot is taken; false when done closes first.
func (cl *connLimit) acquire(done <-chan struct{}, log *slog.Logger) bool {
	select {
	case cl.slots <- struct{}{}:
		cl.full.Store(false)
		return true
	default:
	}
	if !cl.full.Swap(true) {
		log.Warn("MQTT connection limit reached; new connections wait until one closes",
			"max_connections", cl.max)
	}
	select {
	case cl.slots <- struct{}{}:
		return true
	case <-done:
		return false
	}
}

func (cl *connLimit) release() { <-cl.slots }

type listenerMetrics struct {
	acceptErrors  prometheus.Counter
	writeTimeouts prometheus.Counter
}

func newListenerMetrics(r prometheus.Registerer, open func() float64, limit int) *listenerMetrics {
	m := &listenerMetrics{
		acceptErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tributary_edge_mqtt_accept_errors_total",
			Help: "Failed accepts on the MQTT listeners (such as EMFILE); each is retried with backoff.",
		}),
		writeTimeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tributary_edge_mqtt_write_timeouts_total",
			Help: "MQTT connections closed because the client took no data for mqtt.write_timeout.",
		}),
	}
	r.MustRegister(m.acceptErrors, m.writeTimeouts,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tributary_edge_mqtt_connections",
			Help: "Open TCP and TLS connections of the MQTT listeners, before and after CONNECT.",
		}, open),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tributary_edge_mqtt_max_connections",
			Help: "Connections the MQTT listeners hold at most (mqtt.max_connections, below the file descriptor limit).",
		}, func() float64 { return float64(limit) }),
	)
	return m
}

// connectionLimit is the shared cap of the agent's MQTT listeners: mqtt.max_connections, at
// most what the file descriptor limit leaves room for.
func (a *Agent) connectionLimit() *connLimit {
	n := fdConnectionLimit()
	if want := a.cfg.MQTT.MaxConnections; want > n {
		a.logger.Warn("mqtt.max_connections is above what the open-file limit leaves room for; using the lower figure (raise LimitNOFILE to allow more)",
			"max_connections", want, "using", n)
	} else if want > 0 {
		n = want
	}
	a.cfg.MQTT.MaxConnections = n
	return newConnLimit(n)
}

func (a *Agent) openConns() float64 {
	n := 0
	for _, l := range a.mqttListeners {
		n += l.openConns()
	}
	return float64(n)
}

// listenerProblem says why an MQTT listener is not accepting connections, or nil.
func (a *Agent) listenerProblem() error {
	for _, l := range a.mqttListeners {
		if err := l.notAccepting(); err != nil {
			return err
		}
	}
	return nil
}
