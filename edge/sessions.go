package edge

import (
	"bytes"
	"errors"
	"fmt"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Mochi keeps every persistent session until it expires, with no cap: 9.8 KB of heap each
// (BenchmarkKeptSessionHeap), so the default max_sessions of 10,000 bounds them near 100 MB. sessionTable bounds them: mqtt.max_sessions in all, and
// mqtt.max_sessions_per_device for the client ids one device may hold, so one set of credentials
// cannot fill the gateway's memory by churning client ids.
type sessionTable struct {
	maxTotal, maxPerDevice int

	mu        sync.Mutex
	device    map[string]string // client id → device, for every session mochi holds
	perDevice map[string]int
}

var errSessionLimit = errors.New("session limit reached")

const reasonSessionLimit = "session_limit"

func newSessionTable(maxTotal, maxPerDevice int) *sessionTable {
	return &sessionTable{maxTotal: maxTotal, maxPerDevice: maxPerDevice,
		device: map[string]string{}, perDevice: map[string]int{}}
}

// admit records that device opens or resumes the session of clientID, or refuses it when that
// would pass a limit. A client id the session table knows resumes its session and counts once.
func (t *sessionTable) admit(clientID, device string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	old, ok := t.device[clientID]
	if ok && old == device {
		return nil
	}
	if !ok && len(t.device) >= t.maxTotal {
		return fmt.Errorf("%w: the edge holds max_sessions (%d) sessions; raise mqtt.max_sessions or shorten mqtt.session_expiry",
			errSessionLimit, t.maxTotal)
	}
	if t.perDevice[device] >= t.maxPerDevice {
		return fmt.Errorf("%w: device %s holds max_sessions_per_device (%d) sessions under other client ids; reuse a client id or raise mqtt.max_sessions_per_device",
			errSessionLimit, device, t.maxPerDevice)
	}
	if ok {
		t.forgetLocked(clientID)
	}
	t.device[clientID] = device
	t.perDevice[device]++
	return nil
}

func (t *sessionTable) forget(clientID string) {
	t.mu.Lock()
	t.forgetLocked(clientID)
	t.mu.Unlock()
}

func (t *sessionTable) forgetLocked(clientID string) {
	d, ok := t.device[clientID]
	if !ok {
		return
	}
	delete(t.device, clientID)
	if t.perDevice[d]--; t.perDevice[d] <= 0 {
		delete(t.perDevice, d)
	}
}

func (t *sessionTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.device)
}

// refuseSession answers a CONNECT over the session limits with CONNACK 0x97 "quota exceeded"
// (0x03 "server unavailable" for MQTT 3.1.1, see protocolHook) rather than mochi's "bad user name
// or password", and closes the connection; mochi's own CONNACK then finds it closed.
func (a *Agent) refuseSession(cl *mqtt.Client) {
	_ = a.server.SendConnack(cl, packets.ErrQuotaExceeded, false, nil)
	cl.Stop(packets.ErrQuotaExceeded)
}

// sessionHook forgets the sessions mochi deletes: at disconnect for clean sessions, on expiry for
// the others.
type sessionHook struct {
	mqtt.HookBase
	table *sessionTable
}

func (h *sessionHook) ID() string { return "tributary-sessions" }

func (h *sessionHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnDisconnect, mqtt.OnClientExpired}, []byte{b})
}

func (h *sessionHook) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	if expire && !cl.IsTakenOver() {
		h.table.forget(cl.ID)
	}
}

func (h *sessionHook) OnClientExpired(cl *mqtt.Client) { h.table.forget(cl.ID) }
