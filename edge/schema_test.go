package edge

import (
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/devices/format"
)

func jsonSchemaConfig(t *testing.T) Config {
	abs, err := filepath.Abs("testdata/schemas")
	if err != nil {
		t.Fatal(err)
	}
	return Config{ConfigDir: abs, Streams: map[string]StreamConfig{
		"readings": {Spec: format.Spec{Format: format.JSON, Schema: "reading.schema.json"}},
	}}
}

// Debian's mosquitto_pub, MQTT 5: a reading that breaks the stream's JSON Schema is answered
// with PUBACK 0x99 and a reason string, lands in the dead-letter stream with the rule and path,
// and the valid readings around it are stored in order. MQTT 3.1.1 gets a plain PUBACK once the
// dead letter is durable.
func TestMosquittoPubSchemaViolation(t *testing.T) {
	pub := program(t, "mosquitto_pub", "/usr/bin")
	a, _ := startAgent(t, jsonSchemaConfig(t))
	host, port, _ := net.SplitHostPort(a.MQTTAddr())
	run := func(version, payload string) (string, error) {
		args := []string{"-h", host, "-p", port, "-q", "1", "-V", version, "-i", "sensor-1",
			"-t", "devices/sensor-1/readings", "-m", payload}
		out, err := exec.Command(pub, args...).CombinedOutput()
		return string(out), err
	}
	for i, p := range []struct {
		version, payload string
		refused          bool
	}{
		{"mqttv5", `{"seq":1,"temp":21.5}`, false},
		{"mqttv5", `{"seq":2,"temp":150}`, true},
		{"mqttv5", `{"seq":3,"temp":22}`, false},
		{"mqttv311", `{"seq":4}`, false}, // no negative PUBACK in 3.1.1: acked once dead-lettered
		{"mqttv5", `{"seq":5,"temp":-3}`, false},
	} {
		out, err := run(p.version, p.payload)
		t.Logf("mosquitto_pub %s %s: err=%v output=%q", p.version, p.payload, err, out)
		if !p.refused {
			if err != nil {
				t.Fatalf("publish %d: %v: %s", i, err, out)
			}
			continue
		}
		// mosquitto_pub 2.0.11 reports a PUBACK reason code of 0x80 or more as "Warning: Publish
		// 1 failed: <reason code's name>." and the reason string on the next line; it still exits 0.
		if !strings.Contains(out, "Publish 1 failed: Payload format invalid.") || !strings.Contains(out, "schema: at /temp: maximum: got 150, want 125") {
			t.Fatalf("publish %d: output %q: want payload format invalid (0x99) and the reason string", i, out)
		}
	}
	var seqs []string
	for _, part := range readStream(t, a.Log(), "readings") {
		for _, r := range part {
			seqs = append(seqs, string(r.Value))
			if got := string(r.HeaderValue(HeaderSchemaID)); got != fmt.Sprint(a.schemas["readings"].ID) {
				t.Errorf("record %s: schema-id %q, want %d", r.Value, got, a.schemas["readings"].ID)
			}
		}
	}
	want := []string{`{"seq":1,"temp":21.5}`, `{"seq":3,"temp":22}`, `{"seq":5,"temp":-3}`}
	if strings.Join(seqs, " ") != strings.Join(want, " ") {
		t.Fatalf("readings stream holds %v, want %v in order", seqs, want)
	}
	dead := readStream(t, a.Log(), devices.DeadLetterStream)[0]
	if len(dead) != 2 {
		t.Fatalf("%d dead letters, want 2", len(dead))
	}
	for i, w := range []struct{ value, detail string }{
		{`{"seq":2,"temp":150}`, "at /temp: maximum"},
		{`{"seq":4}`, "at /: required"},
	} {
		r := dead[i]
		if string(r.Value) != w.value || string(r.HeaderValue(HeaderReason)) != string(devices.ReasonSchema) ||
			!strings.HasPrefix(string(r.HeaderValue(HeaderReasonDetail)), w.detail) {
			t.Errorf("dead letter %d: %s reason %q detail %q; want %s, schema, %q...", i, r.Value,
				r.HeaderValue(HeaderReason), r.HeaderValue(HeaderReasonDetail), w.value, w.detail)
		}
	}
	if n := testutil.ToFloat64(a.metrics.deadLetters.WithLabelValues(string(devices.ReasonSchema))); n != 2 {
		t.Errorf("dead letters counted for schema: %v, want 2", n)
	}
}
