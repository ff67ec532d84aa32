package edge

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tributary-iot/tributary/storage"
)

// These tests speak raw MQTT over TCP and check the bytes the agent sends against the MQTT 3.1.1
// and 5.0 specifications, where mochi v2.7.9 on its own departs from them (see conformance.go).

// connectWith sends a CONNECT built from pk and reads the answer; closed says the agent closed
// the connection instead of answering.
func connectWith(t *testing.T, addr string, pk packets.Packet) (c *rawClient, ack packets.Packet, closed bool) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c = &rawClient{t: t, conn: conn, r: bufio.NewReader(conn), version: pk.ProtocolVersion}
	pk.FixedHeader.Type = packets.Connect
	if len(pk.Connect.ProtocolName) == 0 {
		pk.Connect.ProtocolName = []byte("MQTT")
	}
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	c.write(buf.Bytes())
	ack, err = c.read()
	if isClosed(err) {
		return c, ack, true
	}
	if err != nil {
		t.Fatalf("read CONNACK: %v", err)
	}
	return c, ack, false
}

func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
}

// expectClose reads until the agent closes the connection; any packet before that fails the
// test (an MQTT 3.1.1 server has no DISCONNECT to send).
func expectClose(t *testing.T, c *rawClient, what string) {
	t.Helper()
	pk, err := c.read()
	switch {
	case isClosed(err):
	case err == nil || pk.FixedHeader.Type != 0:
		t.Fatalf("%s: got packet type %d (reason 0x%02x) before the close, want the connection closed and nothing else",
			what, pk.FixedHeader.Type, pk.ReasonCode)
	default:
		t.Fatalf("%s: %v, want the connection closed", what, err)
	}
}

func v5Connect(id string) packets.Packet {
	return packets.Packet{ProtocolVersion: 5, Connect: packets.ConnectParams{Clean: true, Keepalive: 30, ClientIdentifier: id}}
}

// MQTT 5 CONNACK states the limits the agent enforces: Maximum Packet Size, Retain Available 0,
// and (by its absence) Topic Alias Maximum 0. A publish using a topic alias anyway is a protocol
// error: DISCONNECT 0x94, nothing stored.
func TestConnackAdvertisesLimitsAndTopicAliasRefused(t *testing.T) {
	a, _ := startAgent(t, Config{})
	c, ack, _ := connectWith(t, a.MQTTAddr(), v5Connect("limits"))
	p := ack.Properties
	if ack.ReasonCode != 0 {
		t.Fatalf("CONNACK reason 0x%02x", ack.ReasonCode)
	}
	if want := uint32(a.Config().MQTT.MaxPacketBytes); p.MaximumPacketSize != want {
		t.Errorf("CONNACK Maximum Packet Size %d, want %d", p.MaximumPacketSize, want)
	}
	if !p.RetainAvailableFlag || p.RetainAvailable != 0 {
		t.Errorf("CONNACK Retain Available flag %v value %d, want present and 0", p.RetainAvailableFlag, p.RetainAvailable)
	}
	if p.TopicAliasMaximum != 0 {
		t.Errorf("CONNACK Topic Alias Maximum %d, want 0 (none accepted)", p.TopicAliasMaximum)
	}

	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, ProtocolVersion: 5,
		TopicName: "devices/limits/readings", Payload: []byte("aliased"), PacketID: 1,
		Properties: packets.Properties{TopicAlias: 1, TopicAliasFlag: true}}
	var buf bytes.Buffer
	if err := pk.PublishEncode(&buf); err != nil {
		t.Fatal(err)
	}
	c.write(buf.Bytes())
	got, err := c.read()
	if err != nil || got.FixedHeader.Type != packets.Disconnect || got.ReasonCode != packets.ErrTopicAliasInvalid.Code {
		t.Fatalf("publish with a topic alias: packet type %d reason 0x%02x (%v), want DISCONNECT 0x94",
			got.FixedHeader.Type, got.ReasonCode, err)
	}
	if n := countStream(t, a.Log(), "readings"); n != 0 {
		t.Errorf("%d readings stored from the refused publish", n)
	}
}

// Retained publishes are stored as readings but not kept by the broker: a later subscriber gets
// nothing retained. MQTT 3.1.1 clients keep working (RETAIN is dropped, a will with RETAIN is
// accepted); an MQTT 5 client, told Retain Available 0, is disconnected with 0x9A.
func TestRetainedPublishesNotKept(t *testing.T) {
	a, _ := startAgent(t, Config{AllowSubscribe: true})
	will := packets.Packet{ProtocolVersion: 4, Connect: packets.ConnectParams{Clean: true, Keepalive: 30,
		ClientIdentifier: "ret", WillFlag: true, WillRetain: true, WillTopic: "devices/ret/status", WillPayload: []byte("offline")}}
	c, ack, _ := connectWith(t, a.MQTTAddr(), will)
	if ack.ReasonCode != 0 {
		t.Fatalf("MQTT 3.1.1 CONNECT with a retained will: CONNACK 0x%02x, want 0", ack.ReasonCode)
	}
	payload := bytes.Repeat([]byte("r"), 60<<10)
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true}, ProtocolVersion: 4,
		TopicName: "devices/ret/readings", Payload: payload}
	var buf bytes.Buffer
	if err := pk.PublishEncode(&buf); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		c.write(buf.Bytes())
	}
	c.publish("devices/ret/readings", []byte("last"), 1, 1, false) // QoS 1 after them: all are in by its PUBACK
	c.expectAck(1)
	if n := countStream(t, a.Log(), "readings"); n != 21 {
		t.Errorf("%d readings stored, want 21", n)
	}
	if n := a.server.Topics.Retained.Len() - sysRetained(a); n != 0 {
		t.Errorf("broker keeps %d retained messages besides $SYS, want 0", n)
	}

	// A subscriber would get the retained message right after its SUBACK (through mochi's
	// outbound queue, so the PINGRESP may come first).
	buf.Reset()
	s := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: 4,
		PacketID: 2, Filters: packets.Subscriptions{{Filter: "devices/ret/#"}}}
	if err := s.SubscribeEncode(&buf); err != nil {
		t.Fatal(err)
	}
	c.write(append(buf.Bytes(), packets.Pingreq<<4, 0))
	if got, _ := c.read(); got.FixedHeader.Type != packets.Suback {
		t.Fatalf("got packet type %d, want SUBACK", got.FixedHeader.Type)
	}
	for _, what := range []string{"PINGRESP", "nothing within 500ms"} {
		c.conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		b, err := c.r.Peek(1)
		if what == "PINGRESP" && err == nil && b[0] == packets.Pingresp<<4 {
			c.r.Discard(2)
			continue
		}
		if err == nil {
			t.Fatalf("got packet type %d after the SUBACK, want %s: nothing retained", b[0]>>4, what)
		}
		if what == "PINGRESP" || !isTimeout(err) {
			t.Fatalf("after the SUBACK: %v, want %s", err, what)
		}
	}

	c5, ack5, _ := connectWith(t, a.MQTTAddr(), v5Connect("ret5"))
	if ack5.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02x", ack5.ReasonCode)
	}
	pk = packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: true}, ProtocolVersion: 5,
		TopicName: "devices/ret5/readings", Payload: []byte("retained"), PacketID: 1}
	buf.Reset()
	if err := pk.PublishEncode(&buf); err != nil {
		t.Fatal(err)
	}
	c5.write(buf.Bytes())
	got, err := c5.read()
	if err != nil || got.FixedHeader.Type != packets.Disconnect || got.ReasonCode != packets.ErrRetainNotSupported.Code {
		t.Fatalf("MQTT 5 retained publish: packet type %d reason 0x%02x (%v), want DISCONNECT 0x9A",
			got.FixedHeader.Type, got.ReasonCode, err)
	}
	if n := countStream(t, a.Log(), "readings"); n != 21 {
		t.Errorf("%d readings stored after the refused MQTT 5 publish, want still 21", n)
	}
}

// sysRetained counts the broker's own $SYS retained topics.
func sysRetained(a *Agent) int {
	n := 0
	for topic := range a.server.Topics.Retained.GetAll() {
		if strings.HasPrefix(topic, "$SYS") {
			n++
		}
	}
	return n
}

// MQTT 3.1.1 has no server DISCONNECT: a refused QoS 1 publish and a session taken over end
// with the connection closed and no packet.
func TestNoServerDisconnectPacketForMQTT311(t *testing.T) {
	a, _ := startAgent(t, Config{})
	c, _ := dialRaw(t, a.MQTTAddr(), "own", 4, "", "")
	c.publish("devices/someone-else/readings", []byte("x"), 1, 1, false)
	expectClose(t, c, "QoS 1 publish to another device's topic")

	first, _ := dialRaw(t, a.MQTTAddr(), "twice", 4, "", "")
	second, _ := dialRaw(t, a.MQTTAddr(), "twice", 4, "", "")
	expectClose(t, first, "session taken over by a second connection")
	second.publish("devices/twice/readings", []byte("1"), 1, 1, false)
	second.expectAck(1)
}

// QoS 1 and 2 publishes to $SYS/... are answered: MQTT 5 with "not authorized", MQTT 3.1.1 by
// closing the connection. Mochi dropped them without a word, so the client's packet id never
// came back.
func TestSysTopicPublishAnswered(t *testing.T) {
	a, _ := startAgent(t, Config{})
	c, _, _ := connectWith(t, a.MQTTAddr(), v5Connect("sys5"))
	c.publish("$SYS/broker/uptime", []byte("1"), 1, 1, false)
	if got, err := c.read(); err != nil || got.FixedHeader.Type != packets.Puback || got.PacketID != 1 ||
		got.ReasonCode != packets.ErrNotAuthorized.Code {
		t.Fatalf("MQTT 5 QoS 1 to $SYS: type %d id %d reason 0x%02x (%v), want PUBACK 1 0x87",
			got.FixedHeader.Type, got.PacketID, got.ReasonCode, err)
	}
	c.publish("$sys/x", []byte("1"), 2, 2, false)
	if got, err := c.read(); err != nil || got.FixedHeader.Type != packets.Pubrec || got.PacketID != 2 ||
		got.ReasonCode != packets.ErrNotAuthorized.Code {
		t.Fatalf("MQTT 5 QoS 2 to $sys: type %d id %d reason 0x%02x (%v), want PUBREC 2 0x87",
			got.FixedHeader.Type, got.PacketID, got.ReasonCode, err)
	}
	c.publish("devices/sys5/readings", []byte("still here"), 3, 1, false)
	c.expectAck(3)

	c3, _ := dialRaw(t, a.MQTTAddr(), "sys3", 4, "", "")
	c3.publish("$SYS/broker/uptime", []byte("1"), 1, 1, false)
	expectClose(t, c3, "MQTT 3.1.1 QoS 1 to $SYS")
	if n := countStream(t, a.Log(), "readings"); n != 1 {
		t.Errorf("%d readings stored, want 1", n)
	}
}

// MQTT 3.1.1 CONNACKs carry 3.1.1 return codes, not MQTT 5 reason codes.
func TestConnack311ReturnCodes(t *testing.T) {
	dir := t.TempDir()
	addDevice(t, dir, "dev", "secret")
	a, _ := startAgent(t, Config{DataDir: dir})
	for _, tc := range []struct {
		name string
		pk   packets.Packet
		want byte
	}{
		{"protocol level 3 under the name MQTT", packets.Packet{ProtocolVersion: 3,
			Connect: packets.ConnectParams{Clean: true, Keepalive: 30, ClientIdentifier: "lvl"}}, 0x01},
		{"no client id without clean session", packets.Packet{ProtocolVersion: 4,
			Connect: packets.ConnectParams{Clean: false, Keepalive: 30}}, 0x02},
		{"wrong password", packets.Packet{ProtocolVersion: 4, Connect: packets.ConnectParams{Clean: true, Keepalive: 30,
			ClientIdentifier: "dev", UsernameFlag: true, Username: []byte("dev"), PasswordFlag: true, Password: []byte("wrong")}}, 0x05},
	} {
		_, ack, closed := connectWith(t, a.MQTTAddr(), tc.pk)
		if closed || ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != tc.want {
			t.Errorf("%s: CONNACK type %d code 0x%02x (closed %v), want CONNACK 0x%02x",
				tc.name, ack.FixedHeader.Type, ack.ReasonCode, closed, tc.want)
		}
	}
}

// pubrel sends PUBREL id and returns the agent's PUBCOMP.
func pubrel(t *testing.T, c *rawClient, id uint16) packets.Packet {
	t.Helper()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, ProtocolVersion: c.version, PacketID: id}
	var buf bytes.Buffer
	if err := pk.PubrelEncode(&buf); err != nil {
		t.Fatal(err)
	}
	c.write(buf.Bytes())
	got, err := c.read()
	if err != nil || got.FixedHeader.Type != packets.Pubcomp || got.PacketID != id {
		t.Fatalf("PUBREL %d: got type %d id %d (%v), want PUBCOMP", id, got.FixedHeader.Type, got.PacketID, err)
	}
	return got
}

func expectPubrec(t *testing.T, c *rawClient, id uint16, what string) {
	t.Helper()
	got, err := c.read()
	if err != nil || got.FixedHeader.Type != packets.Pubrec || got.PacketID != id || got.ReasonCode != 0 {
		t.Fatalf("%s: type %d id %d reason 0x%02x (%v), want PUBREC %d 0x00",
			what, got.FixedHeader.Type, got.PacketID, got.ReasonCode, err, id)
	}
}

// MQTT 5 QoS 2 over a slow link: a PUBREL 1.5 s after the PUBREC completes with PUBCOMP 0x00
// (mochi's inflight sweep had dropped the PUBREC: 0x92), and so does a PUBREL that reaches a
// restarted agent. Each reading is stored once.
func TestQoS2PubrelLateAndAfterRestart(t *testing.T) {
	dir := t.TempDir()
	a, stop := startAgent(t, Config{DataDir: dir})
	pk := v5Connect("slow")
	pk.Connect.Clean = false
	pk.Properties.SessionExpiryInterval, pk.Properties.SessionExpiryIntervalFlag = 3600, true
	c, _, _ := connectWith(t, a.MQTTAddr(), pk)
	c.publish("devices/slow/readings", []byte("late"), 7, 2, false)
	expectPubrec(t, c, 7, "QoS 2 publish")
	time.Sleep(1500 * time.Millisecond)
	if got := pubrel(t, c, 7); got.ReasonCode != 0 {
		t.Fatalf("PUBREL 1.5s after PUBREC: PUBCOMP 0x%02x, want 0x00", got.ReasonCode)
	}

	c.publish("devices/slow/readings", []byte("before restart"), 8, 2, false)
	expectPubrec(t, c, 8, "QoS 2 publish before the restart")
	c.conn.Close()
	stop()
	a, _ = startAgent(t, Config{DataDir: dir})
	c, ack, _ := connectWith(t, a.MQTTAddr(), pk)
	if ack.ReasonCode != 0 {
		t.Fatalf("CONNACK 0x%02x", ack.ReasonCode)
	}
	if got := pubrel(t, c, 8); got.ReasonCode != 0 {
		t.Fatalf("PUBREL after the restart: PUBCOMP 0x%02x, want 0x00", got.ReasonCode)
	}
	if n := countStream(t, a.Log(), "readings"); n != 2 {
		t.Errorf("%d readings stored, want 2", n)
	}
}

// A QoS 2 PUBLISH resent while its PUBREC is outstanding (the PUBREC was lost with the
// connection) is answered PUBREC 0x00 again, not 0x91, and stored once [MQTT-4.3.3-9].
func TestQoS2ResendWhilePubrecOutstanding(t *testing.T) {
	a, _ := startAgent(t, Config{})
	pk := v5Connect("resend")
	pk.Connect.Clean = false
	pk.Properties.SessionExpiryInterval, pk.Properties.SessionExpiryIntervalFlag = 3600, true
	c, _, _ := connectWith(t, a.MQTTAddr(), pk)
	c.publish("devices/resend/readings", []byte("once"), 9, 2, false)
	expectPubrec(t, c, 9, "QoS 2 publish")
	c.conn.Close() // as if the PUBREC had been lost with the connection

	c, ack, _ := connectWith(t, a.MQTTAddr(), pk)
	if !ack.SessionPresent {
		t.Fatal("session not present on reconnect")
	}
	expectPubrec(t, c, 9, "PUBREC resent with the session") // mochi resends its inflight state
	c.publish("devices/resend/readings", []byte("once"), 9, 2, true)
	expectPubrec(t, c, 9, "resent QoS 2 PUBLISH")
	if got := pubrel(t, c, 9); got.ReasonCode != 0 {
		t.Fatalf("PUBCOMP 0x%02x, want 0x00", got.ReasonCode)
	}
	if n := countStream(t, a.Log(), "readings"); n != 1 {
		t.Errorf("%d readings stored, want 1", n)
	}
}

// A device's will is stored as a reading of its topic when the device drops without DISCONNECT;
// a will on a topic the device may not publish to is not stored, a clean DISCONNECT sends no
// will, and the wills mochi publishes when the agent itself stops are not stored.
func TestWillStoredAsReading(t *testing.T) {
	dir := t.TempDir()
	a, stop := startAgent(t, Config{DataDir: dir})
	conn := func(id, topic string) *rawClient {
		c, ack, _ := connectWith(t, a.MQTTAddr(), packets.Packet{ProtocolVersion: 4, Connect: packets.ConnectParams{
			Clean: true, Keepalive: 30, ClientIdentifier: id, WillFlag: true, WillTopic: topic, WillPayload: []byte(id + " offline")}})
		if ack.ReasonCode != 0 {
			t.Fatalf("CONNACK 0x%02x", ack.ReasonCode)
		}
		return c
	}
	dropped := conn("w1", "devices/w1/readings")
	foreign := conn("w2", "devices/someone-else/readings")
	polite := conn("w3", "devices/w3/readings")
	dropped.conn.Close()
	foreign.conn.Close()
	polite.write([]byte{packets.Disconnect << 4, 0})
	polite.conn.Close()

	deadline := time.Now().Add(5 * time.Second)
	for {
		got := storedReadings(t, a)
		if len(got) == 1 && got[0] == "w1=w1 offline" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stored %q, want only w1's will", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	if got := storedReadings(t, a); len(got) != 1 {
		t.Errorf("stored %q, want only w1's will", got)
	}

	conn("w4", "devices/w4/readings") // still connected when the agent stops
	stop()
	l, err := storage.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if n := countStream(t, l, "readings"); n != 1 {
		t.Errorf("%d readings after the agent stopped, want still 1: the shutdown's wills are not the devices'", n)
	}
}

// Debian's mosquitto_pub, a client written elsewhere, reads the MQTT 5 CONNACK: told Retain
// Available 0, it sends its -r publish without RETAIN, which is stored (a PUBLISH with RETAIN
// would have been answered DISCONNECT 0x9A). Over MQTT 3.1.1 the retained publish is stored and
// its RETAIN dropped. The broker keeps nothing retained either way.
func TestMosquittoPubRetainAgainstRetainAvailable0(t *testing.T) {
	pub := program(t, "mosquitto_pub", "/usr/bin")
	a, _ := startAgent(t, Config{})
	host, port, _ := net.SplitHostPort(a.MQTTAddr())
	run := func(args ...string) {
		t.Helper()
		// QoS 0: mochi retained only those (QoS 1/2 readings never reach its retain step).
		out, err := exec.Command(pub, append([]string{"-h", host, "-p", port, "-q", "0", "-r"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("mosquitto_pub %v: %v %s", args, err, out)
		}
	}
	run("-V", "mqttv5", "-i", "mr5", "-t", "devices/mr5/readings", "-m", "v5")
	run("-i", "mr3", "-t", "devices/mr3/readings", "-m", "v311")
	deadline := time.Now().Add(5 * time.Second)
	for got := storedReadings(t, a); len(got) != 2; got = storedReadings(t, a) {
		if time.Now().After(deadline) {
			t.Fatalf("stored %q, want both readings", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := a.server.Topics.Retained.Len() - sysRetained(a); n != 0 {
		t.Errorf("broker keeps %d retained messages besides $SYS, want 0", n)
	}
}
