package edge

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// deferringHook hands every QoS 1/2 PUBLISH back to mochi as the ingest hook does.
type deferringHook struct{ mqtt.HookBase }

func (h *deferringHook) ID() string           { return "deferring" }
func (h *deferringHook) Provides(b byte) bool { return b == mqtt.OnPublish }
func (h *deferringHook) OnPublish(_ *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Qos == 0 {
		return pk, nil
	}
	return ackedByEdge(pk), nil
}

// TestAckedByEdgeInMochi pins what the ingest hook relies on when it returns [ackedByEdge]'s
// packet for a QoS 1 reading, on a bare mochi broker that would otherwise ack, retain and relay
// it: no PUBACK (the edge sends it once the reading is durable), no inflight entry, no retained
// message, no delivery to a subscriber. A QoS 0 publish on the same topic, which the hook leaves
// alone, shows the subscription and retaining work.
func TestAckedByEdgeInMochi(t *testing.T) {
	s := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := s.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.AddHook(new(deferringHook), nil); err != nil {
		t.Fatal(err)
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
	if err := s.AddListener(tcp); err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	var relayed atomic.Int64
	if err := s.Subscribe("readings/#", 1, func(*mqtt.Client, packets.Subscription, packets.Packet) { relayed.Add(1) }); err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", tcp.Address(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := connectRaw(t, conn, "dev-1", 4, "", "", true)

	// Mochi handles one client's packets in order on its read goroutine and answers PINGREQ
	// there, so whatever it did for the PUBLISH is done, and any PUBACK written, before PINGRESP.
	pingAfter := func(publish []byte) []byte {
		t.Helper()
		c.write(append(publish, 0xc0, 0x00)) // PINGREQ
		got := make([]byte, 2)
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c.r, got); err != nil {
			t.Fatalf("read PINGRESP: %v", err)
		}
		return got
	}
	pingresp := []byte{0xd0, 0x00}

	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: true},
		ProtocolVersion: 4, TopicName: "readings/1", Payload: []byte("21.5"), PacketID: 7,
	}
	var buf bytes.Buffer
	if err := pk.PublishEncode(&buf); err != nil {
		t.Fatal(err)
	}
	if got := pingAfter(buf.Bytes()); !bytes.Equal(got, pingresp) {
		t.Fatalf("after a QoS 1 PUBLISH the hook deferred, mochi sent % x before PINGRESP: it acked a reading that may not be durable", got)
	}
	mc, ok := s.Clients.Get("dev-1")
	if !ok {
		t.Fatal("client not registered")
	}
	if n := mc.State.Inflight.Len(); n != 0 {
		t.Errorf("mochi keeps %d inflight entries for the deferred reading", n)
	}
	if n := atomic.LoadInt64(&s.Info.Inflight); n != 0 {
		t.Errorf("server counts %d inflight messages for the deferred reading", n)
	}
	if n := len(s.Topics.Messages("readings/#")); n != 0 {
		t.Errorf("mochi retained the deferred reading (%d retained)", n)
	}
	if n := relayed.Load(); n != 0 {
		t.Errorf("mochi relayed the deferred reading to %d subscribers", n)
	}

	pk.FixedHeader.Qos, pk.PacketID = 0, 0
	buf.Reset()
	if err := pk.PublishEncode(&buf); err != nil {
		t.Fatal(err)
	}
	if got := pingAfter(buf.Bytes()); !bytes.Equal(got, pingresp) {
		t.Fatalf("after a QoS 0 PUBLISH mochi sent % x, want PINGRESP", got)
	}
	if n, kept := relayed.Load(), len(s.Topics.Messages("readings/#")); n != 1 || kept != 1 {
		t.Fatalf("the QoS 0 publish was relayed %d times and %d messages are retained, want 1 and 1: the checks above prove nothing", n, kept)
	}
}
