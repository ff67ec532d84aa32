package edge

import (
	"bytes"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/packets"
)

// wsConnect opens ws://addr/ with the given Origin (none when empty), sends an MQTT CONNECT and
// returns the HTTP status of the upgrade and, when upgraded, the CONNACK's first byte.
func wsConnect(t *testing.T, addr, origin string) (status int, connack byte) {
	t.Helper()
	h := http.Header{}
	if origin != "" {
		h.Set("Origin", origin)
	}
	d := websocket.Dialer{Subprotocols: []string{"mqtt"}, HandshakeTimeout: 5 * time.Second}
	c, resp, err := d.Dial("ws://"+addr+"/", h)
	if resp != nil {
		status = resp.StatusCode
	}
	if err != nil {
		return status, 0
	}
	defer c.Close()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: "ws-dev"}}
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteMessage(websocket.BinaryMessage, buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, msg, err := c.ReadMessage()
	if err != nil || len(msg) == 0 {
		t.Fatalf("read CONNACK over WebSocket: %v", err)
	}
	return status, msg[0]
}

// TestWebSocketOrigin: a browser page from another origin may not open MQTT over WebSocket to the
// edge unless the operator listed the origin; clients that send no Origin (devices, libraries)
// and same-origin pages still connect.
func TestWebSocketOrigin(t *testing.T) {
	t.Run("default", func(t *testing.T) {
		a, _ := startAgent(t, Config{MQTT: MQTTConfig{WSListen: "127.0.0.1:0"}})
		addr := a.WSAddr()
		if st, _ := wsConnect(t, addr, "http://evil.example"); st != http.StatusForbidden {
			t.Errorf("foreign origin: HTTP %d, want 403", st)
		}
		if st, ack := wsConnect(t, addr, ""); st != http.StatusSwitchingProtocols || ack != packets.Connack<<4 {
			t.Errorf("no Origin: HTTP %d, first byte %#x, want 101 and a CONNACK", st, ack)
		}
		if st, ack := wsConnect(t, addr, "http://"+addr); st != http.StatusSwitchingProtocols || ack != packets.Connack<<4 {
			t.Errorf("same origin: HTTP %d, first byte %#x, want 101 and a CONNACK", st, ack)
		}
		if got := metricSum(t, a.metrics.registry, "tributary_edge_connect_refused_total"); got != 1 {
			t.Errorf("connect_refused_total %v, want the 1 refused origin", got)
		}
	})
	t.Run("configured", func(t *testing.T) {
		a, _ := startAgent(t, Config{MQTT: MQTTConfig{WSListen: "127.0.0.1:0", WSAllowedOrigins: []string{"https://Console.Example.net/"}}})
		addr := a.WSAddr()
		if st, ack := wsConnect(t, addr, "https://console.example.net"); st != http.StatusSwitchingProtocols || ack != packets.Connack<<4 {
			t.Errorf("listed origin: HTTP %d, first byte %#x", st, ack)
		}
		for _, o := range []string{"http://console.example.net", "https://console.example.net:8443", "http://" + addr} {
			if st, _ := wsConnect(t, addr, o); st != http.StatusForbidden {
				t.Errorf("origin %s: HTTP %d, want 403 (only the listed origin)", o, st)
			}
		}
	})
}
