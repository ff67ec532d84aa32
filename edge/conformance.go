package edge

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// protocolHook corrects, from outside, where mochi v2.7.9 departs from the MQTT 3.1.1 and 5.0
// specifications; the ingest hook (hook.go) stays about readings. Mochi offers no switch for any
// of these, so the hook edits packets as they are read (OnPacketRead, before mochi validates and
// processes them) and as they are encoded (OnPacketEncode, before they are written). What it
// relies on of mochi's internals is listed at each place and pinned by conformance_test.go:
//
//   - a packet whose type is Reserved fails to encode, so WritePacket writes nothing; every
//     caller that matters here (DisconnectClient, SendConnack) closes the connection after it;
//   - processPublish drops a PUBLISH to $SYS/... before any hook or ack;
//   - processPubrel answers PUBCOMP 0x00 for a packet id in the client's inflight state.
//
// Deviations it cannot reach are in deploy/README.md, "MQTT conformance".
type protocolHook struct {
	mqtt.HookBase
	agent *Agent
	log   *slog.Logger

	// wills maps a client id to its device while its will waits to be sent (MQTT 5 wills may
	// be delayed past the session's end, when the ingest hook no longer knows the client).
	willsMu sync.Mutex
	wills   map[string]*session
}

func (h *protocolHook) ID() string { return "tributary-protocol" }

func (h *protocolHook) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mqtt.OnPacketRead,
		mqtt.OnPacketEncode,
		mqtt.OnSessionEstablished,
		mqtt.OnWill,
		mqtt.OnWillSent,
	}, []byte{b})
}

// configureCapabilities sets what the edge supports and CONNACK advertises (see OnPacketEncode).
func configureCapabilities(caps *mqtt.Capabilities) {
	// The edge stores readings; it is not a retained-message store. Mochi kept every retained
	// QoS 0 message in memory (800 of 60 KB took the agent from 15 to 149 MiB).
	caps.RetainAvailable = 0
	// Mochi checks the ACL on a PUBLISH's topic before it resolves an alias, so a publish by
	// alias alone was refused: accept none, and MQTT 5 clients are told so (Topic Alias Maximum
	// absent means 0) and disconnected with 0x94 if they use one anyway.
	caps.TopicAliasMaximum = 0
}

func (h *protocolHook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	switch pk.FixedHeader.Type {
	case packets.Connect:
		if pk.ProtocolVersion < 5 && pk.Connect.WillRetain {
			// MQTT 3.1.1 has no way to say retain is unavailable: keep the will, drop its retain
			// flag. MQTT 5 clients get CONNACK 0x9A from mochi, as the specification asks.
			pk.Connect.WillRetain = false
		}
	case packets.Publish:
		return h.publish(cl, pk)
	case packets.Pubrel:
		// A PUBREC goes out only once its reading is durable, so a PUBREL names a stored reading
		// even when the PUBREC is no longer in mochi's state: the agent restarted, or the
		// session expired. Mochi answered those with PUBCOMP 0x92 "packet identifier not found",
		// which MQTT 5 clients report as a failed publish. Put the id back, and mochi completes
		// the flow with PUBCOMP 0x00.
		if _, ok := cl.State.Inflight.Get(pk.PacketID); !ok {
			now := time.Now().Unix()
			ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec},
				PacketID: pk.PacketID, ProtocolVersion: cl.Properties.ProtocolVersion, Created: now}
			if cl.State.Inflight.Set(ack) {
				atomic.AddInt64(&h.agent.server.Info.Inflight, 1)
			}
		}
	}
	return pk, nil
}

func (h *protocolHook) publish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	v5 := cl.Properties.ProtocolVersion == 5
	if isSysTopic(pk.TopicName) {
		// Mochi drops these before any hook, and for QoS 1/2 sends nothing at all, so the
		// client's packet id never comes back. Refuse them as the ACL refuses other topics: an
		// MQTT 5 client gets a "not authorized" ack, an MQTT 3.1.1 client (which has no negative
		// ack) the closed connection [MQTT-3.3.5-2].
		h.agent.metrics.rejected.WithLabelValues("reserved_topic").Inc()
		h.log.Info("publish refused", "client", cl.ID, "topic", pk.TopicName, "reason", "reserved_topic")
		if pk.FixedHeader.Qos == 0 {
			return pk, nil
		}
		if !v5 {
			return pk, packets.ErrRejectPacket
		}
		ackType := packets.Puback
		if pk.FixedHeader.Qos == 2 {
			ackType = packets.Pubrec // a PUBREC with a failure code ends the QoS 2 flow
		}
		_ = cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: ackType},
			PacketID: pk.PacketID, ReasonCode: packets.ErrNotAuthorized.Code,
			Properties: packets.Properties{ReasonString: "topics under $SYS are the broker's"}})
		return pk, nil // mochi drops it
	}
	if pk.FixedHeader.Retain {
		if v5 {
			// The CONNACK said Retain Available 0: a retained PUBLISH is a protocol error,
			// answered with DISCONNECT 0x9A [MQTT-3.2.2-14].
			h.agent.metrics.rejected.WithLabelValues("retain_not_supported").Inc()
			h.log.Info("publish refused", "client", cl.ID, "topic", pk.TopicName, "reason", "retain_not_supported")
			_ = h.agent.server.DisconnectClient(cl, packets.ErrRetainNotSupported)
			return pk, packets.ErrRejectPacket
		}
		// MQTT 3.1.1 devices set RETAIN by habit; store the reading, retain nothing.
		pk.FixedHeader.Retain = false
	}
	if pk.FixedHeader.Qos == 2 {
		if prev, ok := cl.State.Inflight.Get(pk.PacketID); ok && prev.FixedHeader.Type == packets.Pubrec {
			// A PUBLISH whose PUBREC is outstanding is a resend of a stored reading: it must be
			// answered with PUBREC again and not stored twice [MQTT-4.3.3-9]. Mochi answered
			// 0x91 "packet identifier in use". Clear the id and mark the resend DUP, and the
			// ingest hook acknowledges it from its dedupe memory, in order with the client's
			// other acks.
			if cl.State.Inflight.Delete(pk.PacketID) {
				atomic.AddInt64(&h.agent.server.Info.Inflight, -1)
			}
			pk.FixedHeader.Dup = true
		}
	}
	return pk, nil
}

// isSysTopic matches what mochi's IsValidFilter refuses for publishing.
func isSysTopic(topic string) bool {
	return len(topic) >= len(mqtt.SysPrefix) && strings.EqualFold(topic[:len(mqtt.SysPrefix)], mqtt.SysPrefix)
}

func (h *protocolHook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	switch pk.FixedHeader.Type {
	case packets.Disconnect:
		if pk.ProtocolVersion < 5 {
			// MQTT 3.1.1 has no server DISCONNECT; the server closes the connection, which
			// every caller of DisconnectClient does next.
			pk.FixedHeader.Type = packets.Reserved
		}
	case packets.Connack:
		if pk.ProtocolVersion < 5 {
			if pk.ReasonCode >= packets.ErrUnspecifiedError.Code {
				if code, ok := connackCodeV3(pk.ReasonCode, pk.Properties.ReasonString); ok {
					pk.ReasonCode = code
				} else {
					// No 3.1.1 return code fits (malformed or protocol-violating CONNECT): close
					// without a CONNACK, as 3.1.1 asks for those.
					pk.FixedHeader.Type = packets.Reserved
				}
			}
			return pk
		}
		if pk.ReasonCode == packets.CodeSuccess.Code {
			caps := h.agent.server.Options.Capabilities
			// Mochi enforces these but did not say so: a client learnt the packet limit from a
			// bare close, and assumed retain works.
			pk.Properties.MaximumPacketSize = caps.MaximumPacketSize
			pk.Properties.RetainAvailable, pk.Properties.RetainAvailableFlag = caps.RetainAvailable, true
			pk.Properties.TopicAliasMaximum = caps.TopicAliasMaximum
		}
	}
	return pk
}

// connackCodeV3 maps the MQTT 5 reason codes mochi puts in CONNACKs to MQTT 3.1.1 return codes
// (1 unacceptable protocol version, 2 identifier rejected, 3 server unavailable, 5 not
// authorized); mochi maps only some of them and sent the rest as they are.
// reason is the reason string SendConnack puts beside the code, which tells mochi's several
// 0x82 "protocol violation" refusals apart.
func connackCodeV3(code byte, reason string) (byte, bool) {
	switch code {
	case packets.ErrUnsupportedProtocolVersion.Code:
		return 0x01, true
	case packets.ErrProtocolViolation.Code:
		// An unknown protocol level is answered 0x01 [MQTT-3.1.2-2]; the other violations
		// (reserved flag, flags without their fields) with a close.
		return 0x01, reason == packets.ErrProtocolViolationProtocolVersion.Reason
	case packets.ErrUnspecifiedError.Code, packets.ErrClientIdentifierNotValid.Code:
		// Mochi's only 0x80 on CONNECT: a 3.1.1 client without client id and clean session.
		return 0x02, true
	case packets.ErrServerUnavailable.Code, packets.ErrServerBusy.Code, packets.ErrQuotaExceeded.Code,
		packets.ErrConnectionRateExceeded.Code, packets.ErrServerShuttingDown.Code:
		return 0x03, true
	case packets.ErrNotAuthorized.Code, packets.ErrBadUsernameOrPassword.Code, packets.ErrBanned.Code,
		packets.ErrBadAuthenticationMethod.Code:
		return 0x05, true
	}
	return 0, false
}

// OnWill notes the device of a client whose will is about to be published (or delayed), while
// the ingest hook still knows it.
func (h *protocolHook) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	if s := h.agent.hook.session(cl); s != nil {
		h.willsMu.Lock()
		h.wills[cl.ID] = s
		h.willsMu.Unlock()
	}
	return will, nil
}

// OnSessionEstablished forgets a delayed will the reconnecting client cancelled.
func (h *protocolHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	h.willsMu.Lock()
	delete(h.wills, cl.ID)
	h.willsMu.Unlock()
}

// OnWillSent stores a published will as a reading of its topic: a device's "offline" is a
// reading too, unless the agent is stopping. Mochi publishes wills without OnPublish, so they were never stored. The will's
// topic passes the same ACL as the device's publishes (mochi checks none at CONNECT). There is
// nobody to acknowledge it to, so it is stored as a QoS 0 reading is.
func (h *protocolHook) OnWillSent(cl *mqtt.Client, pk packets.Packet) {
	h.willsMu.Lock()
	s := h.wills[cl.ID]
	delete(h.wills, cl.ID)
	h.willsMu.Unlock()
	if s == nil || h.agent.hook.draining.Load() {
		// Stopping, the agent closes every connection and mochi publishes every will: those
		// say the edge went away, not the device.
		return
	}
	a := h.agent
	route, err := a.authorize(s, pk.TopicName)
	if err != nil {
		a.metrics.rejected.WithLabelValues("will_refused").Inc()
		h.log.Info("will not stored", "client", cl.ID, "device", s.device, "topic", pk.TopicName, "err", err)
		return
	}
	a.ingest(&inbound{route: route, topic: pk.TopicName, payload: pk.Payload, clientID: cl.ID,
		device: s.device, contentType: pk.Properties.ContentType, receiveTime: time.Now()}, nil)
}
