package main

import (
	"encoding/json"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/tributary-iot/tributary/devices/format"
	"github.com/tributary-iot/tributary/internal/testprog"
)

// protoReading encodes plant.v1.Reading (devices/format/testdata/reading.proto) by hand, as a
// device's firmware would, without this project's code.
func protoReading(device string, seq uint64, temp float64) []byte {
	b := protowire.AppendTag(nil, 1, protowire.BytesType)
	b = protowire.AppendString(b, device)
	b = protowire.AppendTag(b, 2, protowire.VarintType)
	b = protowire.AppendVarint(b, seq)
	b = protowire.AppendTag(b, 3, protowire.Fixed64Type)
	return protowire.AppendFixed64(b, math.Float64bits(temp))
}

// TestSchemaStreamsEndToEnd runs the real edge and central binaries: Debian's mosquitto_pub
// publishes protobuf and Avro readings to streams declared with a .proto and an Avro schema; a
// reading that is neither goes to the dead-letter stream; central's registry subset serves both
// schemas under the ids the records carry; tributary consume prints the values as JSON.
func TestSchemaStreamsEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	pub := testprog.Find(t, "mosquitto_pub", "mosquitto-clients", "/usr/bin")
	tributary, _ := buildBinaries(t)
	dir := t.TempDir()
	for _, f := range []string{"reading.proto", "reading.avsc"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "devices", "format", "testdata", f))
		if err != nil {
			t.Fatal(err)
		}
		writeTestFile(t, filepath.Join(dir, f), b)
	}
	conf := filepath.Join(dir, "edge.yaml")
	writeTestFile(t, conf, []byte(`streams:
  telemetry:
    format: protobuf
    schema: reading.proto
    message: plant.v1.Reading
  metrics:
    format: avro
    schema: reading.avsc
`))
	centralAddr, mqttAddr, httpAddr := freePort(t), freePort(t), freePort(t)
	centralURL := "http://" + centralAddr
	startProc(t, tributary, "central", "--data-dir", filepath.Join(dir, "central"), "--listen", centralAddr)
	waitHTTP(t, centralURL+"/healthz")
	tokenFile := filepath.Join(dir, "edge.token")
	addEdgeToken(t, tributary, filepath.Join(dir, "central"), tokenFile)
	startProc(t, tributary, "edge", "--config", conf, "--data-dir", filepath.Join(dir, "edge"), "--mqtt-listen", mqttAddr,
		"--http-listen", httpAddr, "--central", centralURL, "--edge-id", "gw-1", "--central-token-file", tokenFile)
	waitHTTP(t, "http://"+httpAddr+"/readyz")

	host, port, _ := net.SplitHostPort(mqttAddr)
	publish := func(topic string, payload []byte) string {
		f := filepath.Join(dir, "payload.bin")
		writeTestFile(t, f, payload)
		out, err := exec.Command(pub, "-h", host, "-p", port, "-q", "1", "-V", "mqttv5", "-i", "dev-1", "-t", topic, "-f", f).CombinedOutput()
		if err != nil {
			t.Fatalf("mosquitto_pub %s: %v: %s", topic, err, out)
		}
		return string(out)
	}
	avroSchema := avro.MustParse(string(readTestFile(t, filepath.Join(dir, "reading.avsc"))))
	for i := 1; i <= 3; i++ {
		publish("devices/dev-1/telemetry", protoReading("dev-1", uint64(i), 20+float64(i)))
		datum, err := avro.Marshal(avroSchema, map[string]any{"device": "dev-1", "seq": int64(i), "temp": 20.5, "note": nil})
		if err != nil {
			t.Fatal(err)
		}
		publish("devices/dev-1/metrics", datum)
	}
	if out := publish("devices/dev-1/telemetry", []byte{0x0a, 0x40, 'x'}); !strings.Contains(out, "Payload format invalid") {
		t.Errorf("a truncated protobuf reading: mosquitto_pub said %q, want payload format invalid", out)
	}

	consume := func(stream string) []map[string]any {
		deadline := time.Now().Add(20 * time.Second)
		for {
			out, err := exec.Command(tributary, "consume", "--central", centralURL, "--stream", stream, "--from-beginning", "--quiet").Output()
			var lines []map[string]any
			for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				var m map[string]any
				if json.Unmarshal([]byte(l), &m) == nil {
					lines = append(lines, m)
				}
			}
			if err == nil && len(lines) >= 3 || time.Now().After(deadline) {
				return lines
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	for _, c := range []struct{ stream, seq string }{{"telemetry", `"seq":"2"`}, {"metrics", `"seq":2`}} {
		lines := consume(c.stream)
		if len(lines) != 3 {
			t.Fatalf("%s: %d records at central, want 3", c.stream, len(lines))
		}
		v, _ := json.Marshal(lines[1]["value"])
		if !strings.Contains(string(v), `"device":"dev-1"`) || !strings.Contains(string(v), c.seq) {
			t.Errorf("%s: consume printed %v, want the decoded value as JSON", c.stream, lines[1])
		}
	}
	if lines := consume("deadletter"); len(lines) != 1 {
		t.Errorf("%d dead letters at central, want 1", len(lines))
	}

	get := func(path string) string {
		resp, err := http.Get(centralURL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/vnd.schemaregistry.v1+json" {
			t.Fatalf("GET %s: %s %q %s", path, resp.Status, resp.Header.Get("Content-Type"), b)
		}
		return string(b)
	}
	if got := get("/subjects"); got != `["metrics-value","telemetry-value"]`+"\n" {
		t.Errorf("/subjects: %s", got)
	}
	proto := string(readTestFile(t, filepath.Join(dir, "reading.proto")))
	var byID struct{ Schema, SchemaType string }
	json.Unmarshal([]byte(get("/schemas/ids/"+strconv.Itoa(int(format.ID(format.TypeProtobuf, proto))))), &byID)
	if byID.SchemaType != "PROTOBUF" || byID.Schema != proto {
		t.Errorf("protobuf schema by id: %+v", byID)
	}
	var latest struct {
		ID      int32
		Version int
		Schema  string
	}
	json.Unmarshal([]byte(get("/subjects/metrics-value/versions/1")), &latest)
	if latest.Version != 1 || latest.ID != format.ID(format.TypeAvro, latest.Schema) || !strings.Contains(latest.Schema, `"Reading"`) {
		t.Errorf("avro subject version 1: %+v", latest)
	}
}

func writeTestFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func readTestFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
