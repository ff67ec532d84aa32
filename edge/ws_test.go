package edge

import (
	"net"
	"strings"
	"testing"
)

// TestWebSocketPortTakenFailsAtStart: a WebSocket address that cannot be bound is an error of New,
// not a log line after the agent said it was ready.
func TestWebSocketPortTakenFailsAtStart(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	a, err := New(Config{DataDir: t.TempDir(), MQTT: MQTTConfig{Listen: "127.0.0.1:0", WSListen: taken.Addr().String()}, Logger: testLogger(t)})
	if err == nil {
		a.Close()
		t.Fatal("New succeeded with the WebSocket port taken")
	}
	if !strings.Contains(err.Error(), "WebSocket") {
		t.Fatalf("error does not say which listener: %v", err)
	}
}
