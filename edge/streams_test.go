package edge

import (
	"strings"
	"testing"
)

// TestUndeclaredStreams: by default only declared streams take readings (an MQTT 5 client gets
// PUBACK 0x90); undeclared_streams: create makes them on demand as before; a bad value is a config
// error that names the choices.
func TestUndeclaredStreams(t *testing.T) {
	a, _ := startAgent(t, Config{})
	c, _ := dialRaw(t, a.MQTTAddr(), "dev-s", 5, "", "")
	c.publish("devices/dev-s/telemetry", []byte(`{"v":1}`), 1, 1, false)
	pk, err := c.read()
	if err != nil || pk.PacketID != 1 || pk.ReasonCode != 0x90 || !strings.Contains(pk.Properties.ReasonString, `"telemetry"`) {
		t.Fatalf("publish to an undeclared stream: %+v %v, want PUBACK 1 with 0x90 naming the stream", pk.ReasonCode, err)
	}
	c.publish("devices/dev-s/readings", []byte(`{"v":2}`), 2, 1, false)
	c.expectAck(2)
	if _, err := a.Log().Stream("telemetry"); err == nil {
		t.Error("the undeclared stream was created")
	}

	b, _ := startAgent(t, Config{UndeclaredStreams: "create"})
	c2, _ := dialRaw(t, b.MQTTAddr(), "dev-s", 5, "", "")
	c2.publish("devices/dev-s/telemetry", []byte(`{"v":1}`), 1, 1, false)
	c2.expectAck(1)
	var n int
	for _, p := range readStream(t, b.Log(), "telemetry") {
		n += len(p)
	}
	if n != 1 {
		t.Errorf("undeclared_streams create: telemetry holds %d readings, want 1", n)
	}

	err = Config{DataDir: t.TempDir(), UndeclaredStreams: "allow"}.Check()
	if err == nil || !strings.Contains(err.Error(), "refuse or create") {
		t.Errorf("undeclared_streams allow: %v, want an error naming refuse and create", err)
	}
}
