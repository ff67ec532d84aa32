package edge

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	// mochi is the embedded MQTT broker; this file is the one place that touches its hooks.
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tributary-iot/tributary/devices"
)

// session is what the hook knows about one connected client.
type session struct {
	clientID  string
	device    string // authenticated device id; the client id for anonymous clients in "own" mode
	anonymous bool
	ring      *dedupeRing
	gen       uint32 // this connection's generation in ring

	acksOnce sync.Once
	acks     *clientAcks // created on the first QoS 1/2 publish

	results []result // not handed out yet: see newResult

	// checked is the route OnACLCheck found for checkedTopic, the topic of the PUBLISH mochi is
	// processing, for OnPublish to take instead of mapping the topic again. Both run on the
	// client's read goroutine, one right after the other (server.go processPublish).
	checkedTopic string
	checked      devices.Route
}

// checkedRoute returns the route OnACLCheck found for topic, if it was this publish's, and forgets it.
func (s *session) checkedRoute(topic string) (devices.Route, bool) {
	if s.checkedTopic == "" || s.checkedTopic != topic {
		return devices.Route{}, false
	}
	route := s.checked
	s.checkedTopic, s.checked = "", devices.Route{}
	return route, true
}

// resultsPerAllocation is how many results a session allocates at once.
const resultsPerAllocation = 16

// newResult returns a result for the session's next QoS 1/2 reading. Results are allocated
// resultsPerAllocation at a time, one heap allocation per that many readings: a result is shared
// by the dedupe ring, the ack queues and the append until all let go, so it is not recycled. A
// block stays in memory while any of its results is referenced, at most resultsPerAllocation-1
// more than one by one; the ring lets go of its results oldest first. OnPublish runs on the
// client's read goroutine only, so this needs no lock.
func (s *session) newResult() *result {
	if len(s.results) == 0 {
		s.results = make([]result, resultsPerAllocation)
	}
	r := &s.results[0]
	s.results = s.results[1:]
	return r
}

// hook is the agent's single mochi hook: it authenticates CONNECTs, checks the ACL, and turns
// every PUBLISH into a durable append, acknowledging QoS 1/2 only after the group commit.
//
// Mochi runs OnPublish on the client's read goroutine and writes its own PUBACK right after it
// returns, unless the packet it gets back is QoS 0 or the error is packets.ErrRejectPacket (any
// other error is acked as success, see server.go processPublish). So for QoS 1/2 the hook queues
// the append, returns the packet as [ackedByEdge] makes it, and clientAcks writes the PUBACK once
// the append is durable. Mochi then skips its receive-quota and inflight bookkeeping for the packet
// (nothing is added, nothing to free), and fan-out to subscribers: QoS 1/2 readings are stored,
// not relayed.
type hook struct {
	mqtt.HookBase
	agent *Agent
	log   *slog.Logger

	draining atomic.Bool

	mu       sync.RWMutex
	sessions map[*mqtt.Client]*session
}

func (h *hook) ID() string { return "tributary-edge" }

func (h *hook) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mqtt.OnConnectAuthenticate,
		mqtt.OnACLCheck,
		mqtt.OnSessionEstablished,
		mqtt.OnDisconnect,
		mqtt.OnPublish,
	}, []byte{b})
}

var errDraining = errors.New("edge agent is shutting down; reconnect later")

func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	if h.draining.Load() {
		h.agent.metrics.authFailed.WithLabelValues("shutting_down").Inc()
		return false
	}
	s, reason, err := h.authenticate(cl, pk)
	if err != nil {
		h.agent.metrics.authFailed.WithLabelValues(reason).Inc()
		h.log.Info("connect refused", "client", cl.ID, "device", string(pk.Connect.Username), "remote", cl.Net.Remote,
			"listener", cl.Net.Listener, "reason", reason, "err", err)
		if reason == reasonSessionLimit {
			h.agent.refuseSession(cl)
		}
		return false
	}
	h.mu.Lock()
	h.sessions[cl] = s
	h.mu.Unlock()
	return true
}

func (h *hook) authenticate(cl *mqtt.Client, pk packets.Packet) (*session, string, error) {
	a := h.agent
	s := &session{clientID: cl.ID}
	if cn, ok := peerCertCN(cl); ok {
		if err := a.cache.AuthenticateCert(cn); err != nil {
			return nil, authReason(err), err
		}
		s.device = cn
	} else if user := string(pk.Connect.Username); user != "" {
		if reason, err := h.checkPassword(cl.Net.Remote, user, string(pk.Connect.Password)); err != nil {
			return nil, reason, err
		}
		s.device = user
	} else {
		if !a.anonymousAllowed {
			return nil, "anonymous", errors.New("anonymous clients are refused: a listener is not on loopback and allow_anonymous is false; register the device with tributary devices add")
		}
		s.anonymous = true
		s.device = cl.ID
	}
	if !s.anonymous {
		// The client id keys the MQTT session (a CONNECT with a connected or kept id takes that
		// session over) and the resend memory, so an authenticated device gets its own namespace
		// of client ids: "<device>/<client id>" unless it uses its device id (device ids have no
		// '/'). No device can take over another's session or share its resend memory.
		switch pk.Connect.ClientIdentifier {
		case s.device:
		case "":
			cl.ID = s.device // mochi assigned a random one; MQTT 5 clients are told this one
			if cl.Properties.ProtocolVersion == 5 {
				cl.Properties.Props.AssignedClientID = s.device
			}
		default:
			cl.ID = s.device + "/" + pk.Connect.ClientIdentifier
		}
	}
	if err := a.sessions.admit(cl.ID, s.device); err != nil {
		return nil, reasonSessionLimit, err
	}
	s.clientID = cl.ID
	s.ring, s.gen = a.dedupe.attach(cl.ID)
	return s, "", nil
}

func authReason(err error) string {
	switch {
	case errors.Is(err, devices.ErrUnknownDevice):
		return "unknown_device"
	case errors.Is(err, devices.ErrBadPassword):
		return "bad_password"
	case errors.Is(err, devices.ErrDeviceDisabled):
		return "disabled"
	case errors.Is(err, devices.ErrNoPassword), errors.Is(err, devices.ErrNoCertIdentity):
		return "wrong_credential_type"
	}
	return "other"
}

// peerCertCN returns the CN of a client certificate that crypto/tls verified against the
// configured client CA. The handshake has completed: mochi read the CONNECT through it.
func peerCertCN(cl *mqtt.Client) (string, bool) {
	tc, ok := cl.Net.Conn.(*tls.Conn)
	if !ok {
		return "", false
	}
	st := tc.ConnectionState()
	if len(st.VerifiedChains) == 0 || len(st.PeerCertificates) == 0 {
		return "", false
	}
	cn := st.PeerCertificates[0].Subject.CommonName
	return cn, cn != ""
}

func (h *hook) session(cl *mqtt.Client) *session {
	h.mu.RLock()
	s := h.sessions[cl]
	h.mu.RUnlock()
	return s
}

func (h *hook) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	h.agent.metrics.connected.Inc()
}

func (h *hook) OnDisconnect(cl *mqtt.Client, err error, expire bool) {
	h.mu.Lock()
	s := h.sessions[cl]
	delete(h.sessions, cl)
	h.mu.Unlock()
	if s == nil {
		return
	}
	h.agent.metrics.connected.Dec()
	if cause, ok := cl.StopCause().(packets.Code); ok && cause == packets.CodeDisconnect {
		// The client sent DISCONNECT (mochi stops it with this code only then): it saw the acks
		// of what was durable, so reusing their packet ids later is new readings.
		s.ring.delivered(s.gen)
	}
	h.agent.dedupe.detach(s.ring)
	if s.acks != nil {
		s.acks.close()
	}
}

// OnACLCheck refuses publishes outside the device's own topics, and subscriptions unless allowed.
// Mochi disconnects an MQTT 3 client refused on a QoS 1/2 publish and answers MQTT 5 with reason
// "not authorized"; QoS 0 publishes are dropped.
func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	s := h.session(cl)
	if s == nil {
		return false
	}
	if !write {
		if h.agent.sparkplug != nil && h.agent.sparkplugSubscribeAllowed(s, topic) {
			return true
		}
		prefix := "devices/" + s.device + "/"
		return h.agent.cfg.AllowSubscribe && s.device != "" && strings.HasPrefix(topic, prefix)
	}
	s.checkedTopic = ""
	route, err := h.agent.authorize(s, topic)
	if err != nil {
		reason := refusalReason(err)
		h.agent.metrics.rejected.WithLabelValues(string(reason)).Inc()
		if reason != reasonUndeclaredStream || h.agent.firstUndeclared(s.device, topic) {
			h.log.Info("publish refused", "client", cl.ID, "device", s.device, "topic", topic, "reason", reason)
		}
		// An MQTT 5 client is told which stream is not declared, in OnPublish: mochi's own
		// refusal here could only say "not authorized".
		return errors.Is(err, errUndeclaredStream) && cl.Properties.ProtocolVersion == 5
	}
	s.checkedTopic, s.checked = topic, route
	return true
}

func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil // the agent's own publishes, if any, are not readings
	}
	s := h.session(cl)
	if s == nil || h.draining.Load() {
		// Not acked: the client resends after it reconnects to the restarted agent.
		cl.Stop(errDraining)
		return pk, packets.ErrRejectPacket
	}
	a := h.agent
	qos := pk.FixedHeader.Qos
	a.metrics.receivedQoS[min(qos, 2)].Inc()
	route, ok := s.checkedRoute(pk.TopicName)
	var err error
	if !ok {
		route, err = a.authorize(s, pk.TopicName)
	}
	if errors.Is(err, errUndeclaredStream) && cl.Properties.ProtocolVersion == 5 {
		if qos == 0 {
			return pk, packets.ErrRejectPacket
		}
		// Topic Name invalid: "not malformed, but not accepted by this Server" (MQTT 5, 3.4.2.1).
		return pk, packets.Code{Code: packets.ErrTopicNameInvalid.Code, Reason: fmt.Sprintf(
			"stream %q is not declared at this edge: check the topic, or declare the stream in the edge config", route.Stream)}
	}
	if err != nil {
		// OnACLCheck passed moments ago; the registry changed in between.
		cl.Stop(fmt.Errorf("publish to %s: %w", pk.TopicName, err))
		return pk, packets.ErrRejectPacket
	}
	now := time.Now()
	in := inbound{
		route: route, topic: pk.TopicName, payload: pk.Payload, clientID: cl.ID, device: s.device,
		packetID: pk.PacketID, qos: qos, contentType: pk.Properties.ContentType, receiveTime: now,
	}
	if qos == 0 {
		a.ingest(&in, nil)
		return pk, nil
	}
	s.acksOnce.Do(func() {
		s.acks = newClientAcks(cl, a.server, a.metrics, &a.pending, a.cfg.MaxPendingPerClient)
	})
	in.hash = payloadHash(pk.TopicName, pk.Payload)
	if !s.acks.acquire() {
		cl.Stop(errDraining)
		return pk, packets.ErrRejectPacket
	}
	if res := s.ring.resendOf(pk.PacketID, in.hash, s.gen, pk.FixedHeader.Dup); res != nil {
		a.metrics.resends(pk.FixedHeader.Dup).Inc()
		s.acks.push(pk.PacketID, qos, res, now.Sub(epoch))
		return ackedByEdge(pk), nil
	}
	res := s.newResult()
	in.res = res
	s.ring.add(pk.PacketID, in.hash, s.gen, res)
	if s.acks.push(pk.PacketID, qos, res, now.Sub(epoch)) {
		a.ingest(&in, nil) // completes res
	} else {
		res.complete(errDraining)
	}
	return ackedByEdge(pk), nil
}

// ackedByEdge is what OnPublish hands back to mochi for a QoS 1/2 reading the edge acknowledges
// itself: the same packet at QoS 0, marked Ignore, without retain. Mochi v2.7.9's processPublish
// takes a QoS 0 packet returned without error down its QoS 0 branch, where Ignore stops fan-out
// (publishToSubscribers) and retaining (retainMessage), and returns before it counts the receive
// quota, records inflight state or writes a PUBACK. TestAckedByEdgeInMochi pins this.
//
// It replaces returning packets.ErrRejectPacket, which mochi answers the same way but at five heap
// allocations per reading: the error boxed on return, boxed again by each errors.Is that tests
// for it (Hooks.OnPublish, processPublish), and the hook id and the packet boxed for a debug log
// line that is built whether or not debug is enabled. Those were more than the edge's own.
func ackedByEdge(pk packets.Packet) packets.Packet {
	pk.FixedHeader.Qos = 0
	pk.FixedHeader.Retain = false
	pk.Ignore = true
	return pk
}
