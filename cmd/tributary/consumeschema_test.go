package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hamba/avro/v2"

	"github.com/tributary-iot/tributary/devices/format"
	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/central"
	"github.com/tributary-iot/tributary/sync/registry"
)

// TestConsumePrintsSchemaValuesAsJSON runs the consume command against a real central whose log
// holds protobuf and Avro readings with their schemas in the schemas stream (as edges forward
// them), next to a JSON reading, an opaque one and a protobuf value its schema cannot read: the
// schema values print as JSON under "value", the JSON reading as it was stored, the other two
// as value_base64 (the undecodable one said once on stderr), for every output format that
// prints values. Avro and protobuf readings whose doubles are NaN or infinite, as sensors send for "no value", print among the others with
// those numbers as the strings "NaN", "Infinity" and "-Infinity".
func TestConsumePrintsSchemaValuesAsJSON(t *testing.T) {
	testdata := filepath.Join("..", "..", "devices", "format", "testdata")
	proto, err := format.Load(format.Spec{Format: "protobuf", Schema: "reading.proto", Message: "plant.v1.Reading"}, testdata)
	if err != nil {
		t.Fatal(err)
	}
	avsc, err := format.Load(format.Spec{Format: "avro", Schema: "reading.avsc"}, testdata)
	if err != nil {
		t.Fatal(err)
	}
	avroReading := func(seq int64, temp float64) []byte {
		datum, err := avro.Marshal(avro.MustParse(avsc.Text), map[string]any{"device": "dev-2", "seq": seq, "temp": temp, "note": nil})
		if err != nil {
			t.Fatal(err)
		}
		return datum
	}
	schemaHeaders := func(s *format.Schema, index string) []storage.Header {
		h := []storage.Header{{Key: headerSchemaID, Value: []byte(strconv.Itoa(int(s.ID)))}}
		if index != "" {
			h = append(h, storage.Header{Key: headerSchemaIndex, Value: []byte(index)})
		}
		return h
	}
	notProto := []byte{0x0a, 0x40, 'x'} // a string field longer than the value
	records := []storage.Record{
		{Key: []byte("dev-1"), Value: protoReading("dev-1", 3, 21.5), Headers: schemaHeaders(proto, "0")},
		{Key: []byte("dev-2"), Value: avroReading(7, 20.5), Headers: schemaHeaders(avsc, "")},
		{Key: []byte("dev-2"), Value: avroReading(8, math.NaN()), Headers: schemaHeaders(avsc, "")},
		{Key: []byte("dev-2"), Value: avroReading(9, math.Inf(1)), Headers: schemaHeaders(avsc, "")},
		{Key: []byte("dev-1"), Value: protoReading("dev-1", 4, math.Inf(-1)), Headers: schemaHeaders(proto, "0")},
		{Key: []byte("dev-1"), Value: protoReading("dev-1", 5, math.NaN()), Headers: schemaHeaders(proto, "0")},
		{Key: []byte("dev-3"), Value: []byte(`{"seq":4,"temp":19.5}`)},
		{Key: []byte("dev-4"), Value: []byte("\x00\x01opaque")},
		{Key: []byte("dev-5"), Value: notProto, Headers: schemaHeaders(proto, "0")},
	}

	dir := t.TempDir()
	log, err := storage.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	for stream, values := range map[string][]storage.Record{registry.Stream: nil, "telemetry": records} {
		st, err := log.CreateStream(stream, storage.StreamConfig{Partitions: 1})
		if err != nil {
			t.Fatal(err)
		}
		if stream == registry.Stream {
			for _, s := range []*format.Schema{proto, avsc} {
				v, err := s.Record("telemetry")
				if err != nil {
					t.Fatal(err)
				}
				values = append(values, storage.Record{Key: []byte("telemetry"), Value: v})
			}
		}
		for _, r := range values {
			r.Timestamp = time.UnixMilli(1_700_000_000_000)
			if _, _, err := st.Append(context.Background(), r); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := log.Close(); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan string, 1), make(chan error, 1)
	go func() {
		done <- central.Run(ctx, central.Config{DataDir: dir, Listen: "127.0.0.1:0", Ready: func(a string) { ready <- a }})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("central: %v", err)
		}
	}()
	var url string
	select {
	case a := <-ready:
		url = "http://" + a
	case err := <-done:
		t.Fatalf("central: %v", err)
	}
	run := func(args ...string) (stdout, stderr string) {
		var out, errOut bytes.Buffer
		cmd := newRootCmd()
		cmd.SetArgs(append([]string{"consume", "--central", url, "--stream", "telemetry", "--quiet"}, args...))
		cmd.SetOut(&out)
		cmd.SetErr(&errOut)
		if err := cmd.Execute(); err != nil {
			t.Fatalf("consume %v: %v\n%s", args, err, errOut.String())
		}
		return out.String(), errOut.String()
	}

	wantValues := []string{`{"device":"dev-1","seq":"3","temp":21.5}`, `{"device":"dev-2","seq":7,"temp":20.5,"note":null}`,
		`{"device":"dev-2","seq":8,"temp":"NaN","note":null}`, `{"device":"dev-2","seq":9,"temp":"Infinity","note":null}`,
		`{"device":"dev-1","seq":"4","temp":"-Infinity"}`, `{"device":"dev-1","seq":"5","temp":"NaN"}`, `{"seq":4,"temp":19.5}`}
	out, stderr := run()
	lines := bytes.Split(bytes.TrimSuffix([]byte(out), []byte("\n")), []byte("\n"))
	if len(lines) != len(records) {
		t.Fatalf("consume printed %d lines, want %d:\n%s", len(lines), len(records), out)
	}
	for i, line := range lines {
		var got struct {
			Key         string            `json:"key"`
			Headers     map[string]string `json:"headers"`
			Value       json.RawMessage   `json:"value"`
			ValueBase64 []byte            `json:"value_base64"`
		}
		if err := json.Unmarshal(line, &got); err != nil {
			t.Fatalf("line %d is not JSON: %v: %s", i, err, line)
		}
		if got.Key != string(records[i].Key) {
			t.Errorf("line %d: key %q, want %q", i, got.Key, records[i].Key)
		}
		if i < len(wantValues) {
			if !jsonEqual(got.Value, []byte(wantValues[i])) || got.ValueBase64 != nil {
				t.Errorf("line %d: value %s, value_base64 %q; want value %s", i, got.Value, got.ValueBase64, wantValues[i])
			}
		} else if got.Value != nil || !bytes.Equal(got.ValueBase64, records[i].Value) {
			t.Errorf("line %d: value %s, value_base64 %q; want value_base64 of %q", i, got.Value, got.ValueBase64, records[i].Value)
		}
		if records[i].Headers != nil && got.Headers[headerSchemaID] != string(records[i].Headers[0].Value) {
			t.Errorf("line %d: headers %v, want the schema id %s", i, got.Headers, records[i].Headers[0].Value)
		}
	}
	// dev-5's value names the protobuf schema but does not decode with it: said once, with where.
	if want := fmt.Sprintf("consume: the value at partition 0 offset %d does not decode with schema %d (", len(records)-1, proto.ID); !strings.HasPrefix(stderr, want) || strings.Count(stderr, "\n") != 1 {
		t.Errorf("consume said on stderr:\n%s\nwant one line starting %q", stderr, want)
	}

	// --format value prints the decoded values too; raw prints the payload bytes of the others.
	out, _ = run("--format", "value")
	values := bytes.Split(bytes.TrimSuffix([]byte(out), []byte("\n")), []byte("\n"))
	if len(values) != len(records) {
		t.Fatalf("--format value printed %d lines, want %d:\n%s", len(values), len(records), out)
	}
	for i, want := range wantValues {
		if !jsonEqual(values[i], []byte(want)) {
			t.Errorf("--format value line %d: %s, want %s", i, values[i], want)
		}
	}
	last := len(values) - 1
	if want, _ := json.Marshal(base64.StdEncoding.EncodeToString(notProto)); string(values[last]) != string(want) {
		t.Errorf("--format value line %d: %s, want %s", last, values[last], want)
	}
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xs, _ := json.Marshal(x)
	ys, _ := json.Marshal(y)
	return string(xs) == string(ys)
}
