package edge

import (
	"bufio"
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/packets"
)

// stuckClient connects with keepalive 0 (so mochi sets no deadline at all), subscribes to its
// own readings, publishes far more than the sockets buffer, and never reads again: the agent's
// writes to it (the fan-out, then the PUBACK of a QoS 1 reading behind it) block.
func stuckClient(t *testing.T, addr, id string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, Control: smallReceiveBuffer}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &rawClient{t: t, conn: conn, r: bufio.NewReader(conn), version: 4}
	var buf bytes.Buffer
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 0, ClientIdentifier: id}}
	if err := pk.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	c.write(buf.Bytes())
	if ack, err := c.read(); err != nil || ack.ReasonCode != 0 {
		t.Fatalf("CONNACK %+v %v", ack, err)
	}
	topic := "devices/" + id + "/readings"
	buf.Reset()
	sub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: 4,
		PacketID: 1, Filters: packets.Subscriptions{{Filter: topic}}}
	if err := sub.SubscribeEncode(&buf); err != nil {
		t.Fatal(err)
	}
	c.write(buf.Bytes())
	if pk, _ := c.read(); pk.FixedHeader.Type != packets.Suback {
		t.Fatalf("got packet type %d, want SUBACK", pk.FixedHeader.Type)
	}
	payload := bytes.Repeat([]byte("x"), 60<<10)
	for range 100 { // 6 MB, twice what loopback sockets buffer
		c.publish(topic, payload, 0, 0, false)
	}
	c.publish(topic, []byte("acked?"), 2, 1, false)
	return conn
}

// A client that stops reading is disconnected write_timeout after its socket stopped taking
// data, so its pending PUBACK and mochi's write lock are released; other devices are served
// meanwhile. Without a write deadline it held them for as long as it kept the connection open.
func TestWriteTimeoutDisconnectsClientThatStopsReading(t *testing.T) {
	a, _ := startAgent(t, Config{AllowSubscribe: true, MQTT: MQTTConfig{WriteTimeout: 500 * time.Millisecond}})
	stuckClient(t, a.MQTTAddr(), "stuck")
	good, _ := dialRaw(t, a.MQTTAddr(), "good", 4, "", "")
	good.publish("devices/good/readings", []byte("1"), 1, 1, false)
	good.expectAck(1)

	deadline := time.Now().Add(15 * time.Second)
	for metricSum(t, a.metrics.registry, "tributary_edge_connected_devices") != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%v clients connected 15s after one stopped reading, want only the good one",
				metricSum(t, a.metrics.registry, "tributary_edge_connected_devices"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := metricSum(t, a.metrics.registry, "tributary_edge_mqtt_write_timeouts_total"); n < 1 {
		t.Errorf("write timeouts counted: %v, want at least 1", n)
	}
	good.publish("devices/good/readings", []byte("2"), 2, 1, false)
	good.expectAck(2)
}

// Shutdown with a client that does not read (write_timeout far away) and a connection that never
// sent CONNECT (connect_timeout far away) still ends within drain_timeout and a second or so:
// systemd's 30 s stop timeout is never reached. Mochi's DISCONNECT used to wait on the client's
// write lock forever.
func TestShutdownNotHeldByClientThatStopsReading(t *testing.T) {
	a, stop := startAgent(t, Config{AllowSubscribe: true, DrainTimeout: 500 * time.Millisecond,
		MQTT: MQTTConfig{WriteTimeout: time.Hour, ConnectTimeout: time.Hour}})
	stuck := stuckClient(t, a.MQTTAddr(), "stuck")
	idle, err := net.Dial("tcp", a.MQTTAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	time.Sleep(500 * time.Millisecond) // the agent's writes to stuck block by now

	start := time.Now()
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	select {
	case <-stopped:
		t.Logf("agent stopped %s after cancel", time.Since(start).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		stuck.Close() // let the agent go, then fail
		idle.Close()
		<-stopped
		t.Fatalf("agent still stopping 10s after cancel; it stopped %s after the stuck client left",
			time.Since(start).Round(time.Millisecond))
	}
}

// WebSocket connections get the TCP listener's bounds: one upgraded that never sends CONNECT is
// closed connect_timeout later, and while open it does not hold shutdown, which waited for it
// forever.
func TestWebSocketConnectionWithoutCONNECT(t *testing.T) {
	dial := func(addr string) *websocket.Conn {
		d := websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: 5 * time.Second}
		c, _, err := d.Dial("ws://"+addr+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	a, _ := startAgent(t, Config{MQTT: MQTTConfig{WSListen: "127.0.0.1:0", ConnectTimeout: 500 * time.Millisecond}})
	c := dial(a.WSAddr())
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := c.ReadMessage(); isTimeout(err) {
		t.Fatal("silent WebSocket connection still open after 5s")
	}
	t.Logf("silent WebSocket connection closed after %s", time.Since(start).Round(time.Millisecond))

	b, stop := startAgent(t, Config{MQTT: MQTTConfig{WSListen: "127.0.0.1:0", ConnectTimeout: time.Hour}})
	c = dial(b.WSAddr())
	time.Sleep(100 * time.Millisecond)
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		c.Close()
		<-stopped
		t.Fatal("shutdown held 10s by a WebSocket connection that sent no CONNECT")
	}
}
