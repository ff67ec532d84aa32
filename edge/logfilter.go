package edge

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
)

// Log hygiene: what one MQTT client does must not decide how much the gateway logs. Every line
// that names a client (attribute "client") passes a per-client budget of logLinesPerClient lines
// per logWindow, and all clients together share logLinesAllClients, so fresh client ids do not
// buy fresh budgets without end; the rest are counted in tributary_edge_log_lines_suppressed_total,
// and the next line let through for that client says how many were held back
// (suppressed_before). Lines also gain the client's device, so each event is one line with the
// reason and the device.
const (
	logLinesPerClient  = 5
	logLinesAllClients = 300
	logWindow          = time.Minute
	// maxLogClients bounds the budget table; past it, clients not yet in it share one budget, so
	// a flood of fresh client ids cannot grow memory or the log.
	maxLogClients = 10000
	overflowKey   = "\x00overflow"
)

// lineLimiter holds the per-client budgets.
type lineLimiter struct {
	suppressed prometheus.Counter

	mu      sync.Mutex
	budgets map[string]*lineBudget
	all     lineBudget // every client's lines together; its held is unused
}

type lineBudget struct {
	start time.Time // of the current window
	lines int       // let through in it
	held  int64     // suppressed since the last line let through
}

func newLineLimiter(suppressed prometheus.Counter) *lineLimiter {
	return &lineLimiter{suppressed: suppressed, budgets: map[string]*lineBudget{}}
}

// allow reports whether a line for client may be logged at now and, if so, how many lines of
// that client were suppressed since its last one.
func (l *lineLimiter) allow(client string, now time.Time) (bool, int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.budgets[client]
	if b == nil {
		if len(l.budgets) >= maxLogClients {
			for k, old := range l.budgets {
				if now.Sub(old.start) >= logWindow {
					delete(l.budgets, k)
				}
			}
		}
		if len(l.budgets) >= maxLogClients {
			client = overflowKey
			b = l.budgets[client]
		}
		if b == nil {
			b = &lineBudget{start: now}
			l.budgets[client] = b
		}
	}
	if now.Sub(b.start) >= logWindow {
		b.start, b.lines = now, 0
	}
	if now.Sub(l.all.start) >= logWindow {
		l.all.start, l.all.lines = now, 0
	}
	if b.lines >= logLinesPerClient || l.all.lines >= logLinesAllClients {
		b.held++
		l.suppressed.Inc()
		return false, 0
	}
	b.lines++
	l.all.lines++
	held := b.held
	b.held = 0
	return true, held
}

// clientLimited applies the per-client budget to a handler's records and adds the device.
type clientLimited struct {
	slog.Handler
	lim    *lineLimiter
	device func(clientID string) string // "" when unknown
	client string                       // bound with WithAttrs
}

func (h clientLimited) Handle(ctx context.Context, r slog.Record) error {
	client, hasDevice := h.client, false
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "client":
			client = a.Value.String()
		case "device":
			hasDevice = true
		}
		return true
	})
	if client == "" {
		return h.Handler.Handle(ctx, r)
	}
	ok, held := h.lim.allow(client, time.Now())
	if !ok {
		return nil
	}
	if d := h.device(client); !hasDevice && d != "" || held > 0 {
		r = r.Clone()
		if !hasDevice && d != "" {
			r.AddAttrs(slog.String("device", d))
		}
		if held > 0 {
			r.AddAttrs(slog.Int64("suppressed_before", held))
		}
	}
	return h.Handler.Handle(ctx, r)
}

func (h clientLimited) WithAttrs(attrs []slog.Attr) slog.Handler {
	for _, a := range attrs {
		if a.Key == "client" {
			h.client = a.Value.String()
		}
	}
	h.Handler = h.Handler.WithAttrs(attrs)
	return h
}

func (h clientLimited) WithGroup(name string) slog.Handler {
	h.Handler = h.Handler.WithGroup(name)
	return h
}

// mochiLines turns mochi's own log lines into one line per event:
//   - "error processing packet" carries the whole packet struct (about 2 KB of mostly empty
//     fields). A refused publish (not authorized) was logged by the ingest hook already, so it is
//     dropped; any other error becomes one line with the client, the packet type and the reason.
//   - mochi's listeners log the error that ended a connection with an empty message. The agent
//     serves its own listeners (listener.go, websocket.go), which log that at debug ("MQTT
//     connection ended"); this does the same for any mochi listener, so none logs an empty WARN.
type mochiLines struct{ slog.Handler }

func (h mochiLines) Handle(ctx context.Context, r slog.Record) error {
	switch r.Message {
	case "":
		if !h.Handler.Enabled(ctx, slog.LevelDebug) {
			return nil
		}
		d := slog.NewRecord(r.Time, slog.LevelDebug, "MQTT connection ended", r.PC)
		r.Attrs(func(a slog.Attr) bool { d.AddAttrs(a); return true })
		return h.Handler.Handle(ctx, d)
	case "error processing packet":
		var cause error
		var pk packets.Packet
		var attrs []slog.Attr
		r.Attrs(func(a slog.Attr) bool {
			switch a.Key {
			case "pk":
				pk, _ = a.Value.Any().(packets.Packet)
			case "error":
				cause, _ = a.Value.Any().(error)
			default:
				attrs = append(attrs, a)
			}
			return true
		})
		if errors.Is(cause, packets.ErrNotAuthorized) {
			return nil
		}
		n := slog.NewRecord(r.Time, r.Level, "MQTT packet refused; connection closed", r.PC)
		n.AddAttrs(attrs...)
		n.AddAttrs(slog.String("packet", packetName(pk)), slog.Any("reason", cause))
		return h.Handler.Handle(ctx, n)
	}
	return h.Handler.Handle(ctx, r)
}

func (h mochiLines) WithAttrs(attrs []slog.Attr) slog.Handler {
	return mochiLines{h.Handler.WithAttrs(attrs)}
}

func (h mochiLines) WithGroup(name string) slog.Handler { return mochiLines{h.Handler.WithGroup(name)} }

func packetName(pk packets.Packet) string {
	if n, ok := packets.PacketNames[pk.FixedHeader.Type]; ok {
		return n
	}
	return "unknown"
}

// limitedLogger returns a logger whose client lines pass the agent's per-client budget.
func (a *Agent) limitedLogger(h slog.Handler) *slog.Logger {
	return slog.New(clientLimited{Handler: h, lim: a.logLimit, device: a.deviceOf})
}

// deviceOf is the device a connected client authenticated as; "" when not connected.
func (a *Agent) deviceOf(clientID string) string {
	if a.server == nil || a.hook == nil {
		return ""
	}
	cl, ok := a.server.Clients.Get(clientID)
	if !ok {
		return ""
	}
	if s := a.hook.session(cl); s != nil {
		return s.device
	}
	return ""
}
