package format

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/tributary-iot/tributary/devices"
)

func load(t testing.TB, spec Spec) *Schema {
	t.Helper()
	s, err := Load(spec, "testdata")
	if err != nil {
		t.Fatalf("load %+v: %v", spec, err)
	}
	return s
}

// protoReading encodes a plant.v1.Reading with the schema's own descriptor, as a device would.
func protoReading(t testing.TB, s *Schema, device string, seq uint64, temp float64) []byte {
	t.Helper()
	md := messageOf(t, s)
	m := dynamicpb.NewMessage(md)
	m.Set(md.Fields().ByName("device"), protoreflect.ValueOfString(device))
	m.Set(md.Fields().ByName("seq"), protoreflect.ValueOfUint64(seq))
	m.Set(md.Fields().ByName("temp"), protoreflect.ValueOfFloat64(temp))
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func messageOf(t testing.TB, s *Schema) protoreflect.MessageDescriptor {
	t.Helper()
	d, err := mustFiles(t, s.Descriptor).FindDescriptorByName(protoreflect.FullName(s.Message))
	if err != nil {
		t.Fatal(err)
	}
	return d.(protoreflect.MessageDescriptor)
}

func TestProtobufSourceAndDescriptorSetAgree(t *testing.T) {
	src := load(t, Spec{Format: Protobuf, Schema: "reading.proto", Message: "plant.v1.Reading"})
	set := load(t, Spec{Format: Protobuf, Schema: "reading.binpb", Message: "plant.v1.Reading"})
	if src.Type != TypeProtobuf || !strings.Contains(src.Text, "message Reading") {
		t.Fatalf("source schema: type %s text %q", src.Type, src.Text)
	}
	if src.ID != ID(TypeProtobuf, src.Text) || src.ID == set.ID {
		t.Fatalf("ids: source %d, set %d: want the source's text id, distinct from the serialized form's", src.ID, set.ID)
	}
	batch := load(t, Spec{Format: Protobuf, Schema: "reading.proto", Message: "plant.v1.Batch"})
	if got := batch.Index; len(got) != 1 || got[0] != 1 {
		t.Fatalf("Batch message index %v, want [1]", got)
	}
	payload := protoReading(t, src, "boiler-1", 7, 21.5)
	for _, s := range []*Schema{src, set} {
		if reason, detail := s.Check(payload); reason != devices.ReasonNone {
			t.Fatalf("valid reading refused: %s %s", reason, detail)
		}
		got, err := s.DecodeJSON(payload)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(got, &m); err != nil || m["device"] != "boiler-1" || m["seq"] != "7" || m["temp"] != 21.5 {
			t.Fatalf("JSON %s (%v)", got, err)
		}
	}
	reason, detail := src.Check(append(payload[:len(payload):len(payload)], 0x1a, 0x05, 'x'))
	if reason != devices.ReasonNotProtobuf || !strings.Contains(detail, "byte "+itoa(len(payload))) {
		t.Fatalf("truncated field: %s %q, want not_protobuf at byte %d", reason, detail, len(payload))
	}
	if _, err := Load(Spec{Format: Protobuf, Schema: "reading.proto"}, "testdata"); err == nil || !strings.Contains(err.Error(), "message:") {
		t.Fatalf("two messages and none named: %v", err)
	}
}

func TestAvro(t *testing.T) {
	s := load(t, Spec{Format: Avro, Schema: "reading.avsc"})
	schema := avro.MustParse(s.Text)
	payload, err := avro.Marshal(schema, map[string]any{"device": "boiler-1", "seq": int64(7), "temp": 21.5, "note": nil})
	if err != nil {
		t.Fatal(err)
	}
	if reason, detail := s.Check(payload); reason != devices.ReasonNone {
		t.Fatalf("valid datum refused: %s %s", reason, detail)
	}
	got, err := s.DecodeJSON(payload)
	if err != nil || !bytes.Contains(got, []byte(`"device":"boiler-1"`)) {
		t.Fatalf("JSON %s (%v)", got, err)
	}
	for name, bad := range map[string][]byte{
		"truncated": payload[:len(payload)-3],
		"trailing":  append(payload[:len(payload):len(payload)], 0),
		"json":      []byte(`{"device":"x"}`),
	} {
		if reason, _ := s.Check(bad); reason != devices.ReasonNotAvro {
			t.Errorf("%s: %s, want not_avro", name, reason)
		}
	}
}

func TestJSONSchema(t *testing.T) {
	s := load(t, Spec{Format: JSON, Schema: "reading.schema.json"})
	if reason, _ := s.Check([]byte(`{"seq":1,"temp":20}`)); reason != devices.ReasonNone {
		t.Fatal(reason)
	}
	for payload, want := range map[string]string{
		`{"seq":1,"temp":200}`: "at /temp: maximum: got 200, want 125",
		`{"seq":-1,"temp":2}`:  "at /seq: minimum: got -1, want 0",
		`{"seq":"1","temp":2}`: "at /seq: type: got string, want integer",
		`{"temp":2}`:           "at /: required: missing property 'seq'",
	} {
		reason, detail := s.Check([]byte(payload))
		if reason != devices.ReasonSchema || detail != want {
			t.Errorf("%s: %s %q, want schema %q", payload, reason, detail, want)
		}
	}
	if _, err := Load(Spec{Format: JSON, Schema: "reading.avsc"}, "testdata"); err != nil {
		t.Logf("an Avro schema read as a JSON Schema: %v", err)
	}
}

func TestWirePrefix(t *testing.T) {
	for _, c := range []struct {
		protobuf bool
		index    []int
		want     []byte
	}{
		{false, nil, []byte{0, 0, 0, 1, 2}},
		{true, []int{0}, []byte{0, 0, 0, 1, 2, 0}},
		{true, []int{1}, []byte{0, 0, 0, 1, 2, 2, 2}},
		{true, []int{1, 0}, []byte{0, 0, 0, 1, 2, 4, 2, 0}},
	} {
		if got := WirePrefix(nil, 258, c.protobuf, c.index); !bytes.Equal(got, c.want) {
			t.Errorf("WirePrefix(258, %v, %v) = %v, want %v", c.protobuf, c.index, got, c.want)
		}
	}
}

func TestRecordRoundTrip(t *testing.T) {
	s := load(t, Spec{Format: Protobuf, Schema: "reading.proto", Message: "plant.v1.Reading"})
	value, err := s.Record("readings")
	if err != nil {
		t.Fatal(err)
	}
	rec, err := ParseRecord(value)
	if err != nil || rec.Subject != "readings-value" || rec.ID != s.ID {
		t.Fatalf("%+v %v", rec, err)
	}
	back, err := Parse(rec.Schema)
	if err != nil {
		t.Fatal(err)
	}
	if reason, _ := back.Check(protoReading(t, s, "d", 1, 2)); reason != devices.ReasonNone {
		t.Fatal(reason)
	}
	tampered := bytes.Replace(value, []byte("Reading"), []byte("Readinh"), 1)
	if _, err := ParseRecord(tampered); err == nil {
		t.Fatal("a record whose text does not match its id was accepted")
	}
}

// TestNonFiniteJSON: a NaN or an infinity, valid in Avro and protobuf floats and doubles, is
// shown as the proto3 JSON mapping's string ("NaN", "Infinity", "-Infinity") in both formats'
// JSON view, wherever it sits in an Avro datum, instead of failing the reading's JSON.
func TestNonFiniteJSON(t *testing.T) {
	var text string
	for _, c := range avroCases {
		if c.name == "non-finite" {
			text = c.schema
		}
	}
	s, err := newAvro(text)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := avro.Marshal(avro.MustParse(text), map[string]any{
		"f": float32(math.NaN()), "d": math.Inf(1), "opt": math.Inf(-1),
		"named": map[string]any{"float": float32(math.Inf(1))},
		"list":  []any{math.NaN(), 1.5, math.Inf(-1)}, "byName": map[string]any{"lo": float32(math.Inf(-1)), "ok": float32(2.5)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if reason, detail := s.Check(payload); reason != devices.ReasonNone {
		t.Fatalf("non-finite datum refused: %s %s", reason, detail)
	}
	got, err := s.DecodeJSON(payload)
	want := `{"byName":{"lo":"-Infinity","ok":2.5},"d":"Infinity","f":"NaN","list":["NaN",1.5,"-Infinity"],"named":{"float":"Infinity"},"opt":"-Infinity"}`
	if err != nil || string(got) != want {
		t.Fatalf("Avro JSON %s (%v), want %s", got, err, want)
	}

	proto := load(t, Spec{Format: Protobuf, Schema: "reading.proto", Message: "plant.v1.Reading"})
	for _, c := range []struct {
		temp float64
		want string
	}{{math.NaN(), "NaN"}, {math.Inf(1), "Infinity"}, {math.Inf(-1), "-Infinity"}} {
		payload := protoReading(t, proto, "boiler-1", 7, c.temp)
		if reason, detail := proto.Check(payload); reason != devices.ReasonNone {
			t.Fatalf("temp %v refused: %s %s", c.temp, reason, detail)
		}
		got, err := proto.DecodeJSON(payload)
		var m map[string]any
		if err == nil {
			err = json.Unmarshal(got, &m)
		}
		if err != nil || m["temp"] != c.want {
			t.Errorf("protobuf temp %v: JSON %s (%v), want temp %q", c.temp, got, err, c.want)
		}
	}
}

// TestAvroYearsPastRFC3339: a date or timestamp before year 0 or after 9999, which Avro can
// carry and RFC 3339 cannot, shows in RFC 3339's layout with all its year's digits instead of
// failing the reading's JSON; years 0 to 9999 stay RFC 3339.
func TestAvroYearsPastRFC3339(t *testing.T) {
	text := `{"type":"record","name":"Y","fields":[
		{"name":"date","type":{"type":"int","logicalType":"date"}},
		{"name":"ms","type":{"type":"long","logicalType":"timestamp-millis"}},
		{"name":"us","type":{"type":"array","items":{"type":"long","logicalType":"timestamp-micros"}}}]}`
	s, err := newAvro(text)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := avro.Marshal(avro.MustParse(text), map[string]any{
		"date": time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		"ms":   time.Date(-1, 12, 31, 23, 59, 59, 1e6, time.UTC),
		"us":   []any{time.Date(292277, 1, 2, 3, 4, 5, 6000, time.UTC), time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)},
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.DecodeJSON(payload)
	want := `{"date":"10000-01-01T00:00:00Z","ms":"-0001-12-31T23:59:59.001Z","us":["292277-01-02T03:04:05.000006Z","9999-12-31T23:59:59Z"]}`
	if err != nil || string(got) != want {
		t.Fatalf("JSON %s (%v), want %s", got, err, want)
	}
}
