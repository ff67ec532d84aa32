package edge

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	// gorilla/websocket is what mochi's own WebSocket listener is built on; this listener uses it
	// directly only to decide which Origins may connect, which mochi's does not let a caller set.
	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// wsListener serves MQTT over WebSocket (ws://ADDR/, subprotocol "mqtt") in place of mochi's
// listener, which accepts every Origin: any web page a user on the gateway's network opens could
// then talk MQTT to the edge with that user's network position. A browser always sends Origin;
// with no allowed_origins configured only same-origin pages (Origin host = Host) and clients
// that send no Origin (devices, libraries) may connect.
type wsListener struct {
	id      string
	ln      net.Listener
	allowed []string // lower-case origins, or "*"
	log     *slog.Logger
	refused func()

	srv      *http.Server
	upgrader websocket.Upgrader
	once     sync.Once
	// bounds gives the connections the TCP listener's cap, deadlines and shutdown (listener.go).
	bounds *mqttListener
}

func newWSListener(id, addr string, allowed []string, refused func()) (*wsListener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	l := &wsListener{id: id, ln: ln, refused: refused}
	for _, o := range allowed {
		l.allowed = append(l.allowed, strings.ToLower(strings.TrimRight(o, "/")))
	}
	// The handler checks Origin itself, to answer with what to change; the upgrader must not refuse again.
	l.upgrader = websocket.Upgrader{Subprotocols: []string{"mqtt"}, CheckOrigin: func(*http.Request) bool { return true },
		HandshakeTimeout: 10 * time.Second}
	return l, nil
}

var _ listeners.Listener = (*wsListener)(nil)

func (l *wsListener) ID() string       { return l.id }
func (l *wsListener) Address() string  { return l.ln.Addr().String() }
func (l *wsListener) Protocol() string { return "ws" }

func (l *wsListener) Init(log *slog.Logger) error {
	l.log = log.With("listener", l.id)
	l.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(l.log.Handler(), slog.LevelDebug)}
	return nil
}

func (l *wsListener) Serve(establish listeners.EstablishFn) {
	l.srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if origin := r.Header.Get("Origin"); !l.originAllowed(origin, r.Host) {
			l.refused()
			l.log.Info("WebSocket connection refused: origin not allowed", "origin", origin, "remote", r.RemoteAddr)
			http.Error(w, "origin "+origin+" may not connect; an operator allows it with mqtt.ws_allowed_origins", http.StatusForbidden)
			return
		}
		c, err := l.upgrader.Upgrade(w, r, nil)
		if err != nil {
			return // the upgrader answered the client
		}
		defer c.Close()
		l.bounds.connectDeadline(c.NetConn())
		if err := establish(l.id, &wsConn{Conn: c.NetConn(), c: c}); err != nil && !errors.Is(err, io.EOF) {
			l.log.Debug("WebSocket client ended", "err", err)
		}
	})
	if err := l.srv.Serve(acceptor{l.bounds}); err != nil && !errors.Is(err, http.ErrServerClosed) {
		l.log.Error("WebSocket listener stopped", "err", err)
	}
}

func (l *wsListener) Close(closeClients listeners.CloseFn) {
	l.once.Do(func() {
		if l.srv != nil {
			l.srv.Close() // also ends upgraded connections' handlers once mochi closes the clients
		}
		l.ln.Close() // in case Serve never ran
	})
	l.bounds.Close(closeClients) // cuts writes to stuck clients, closes connections without CONNECT
}

// originAllowed: no Origin (not a browser), a configured origin, "*", or with none configured the
// same origin as the request's Host.
func (l *wsListener) originAllowed(origin, host string) bool {
	if origin == "" {
		return true
	}
	o := strings.ToLower(strings.TrimRight(origin, "/"))
	for _, a := range l.allowed {
		if a == "*" || a == o {
			return true
		}
	}
	if len(l.allowed) > 0 {
		return false
	}
	u, err := url.Parse(origin)
	return err == nil && strings.EqualFold(u.Host, host)
}

// wsConn carries MQTT's byte stream in binary WebSocket messages; a packet may span messages.
type wsConn struct {
	net.Conn
	c *websocket.Conn
	r io.Reader // the message being read, nil between messages
}

func (ws *wsConn) Read(p []byte) (int, error) {
	for {
		if ws.r == nil {
			op, r, err := ws.c.NextReader()
			if err != nil {
				return 0, err
			}
			if op != websocket.BinaryMessage {
				return 0, listeners.ErrInvalidMessage
			}
			ws.r = r
		}
		n, err := ws.r.Read(p)
		if errors.Is(err, io.EOF) {
			ws.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

func (ws *wsConn) Write(p []byte) (int, error) {
	if err := ws.c.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (ws *wsConn) Close() error { return ws.Conn.Close() }
