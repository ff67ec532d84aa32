package sparkplug

import (
	"encoding/json"
	"math"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/tributary-iot/tributary/devices/sparkplug/sparkplugpb"
)

type memStore struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (s *memStore) LoadAliases(k string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[k], nil
}

func (s *memStore) SaveAliases(k string, b []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[k] = append([]byte(nil), b...)
	return nil
}

func metric(name string, alias uint64, dt pb.DataType, v any) *pb.Payload_Metric {
	m := &pb.Payload_Metric{Datatype: proto.Uint32(uint32(dt)), Timestamp: proto.Uint64(1700000000123)}
	if name != "" {
		m.Name = proto.String(name)
	}
	if alias != 0 {
		m.Alias = proto.Uint64(alias)
	}
	switch v := v.(type) {
	case uint32:
		m.Value = &pb.Payload_Metric_IntValue{IntValue: v}
	case float32:
		m.Value = &pb.Payload_Metric_FloatValue{FloatValue: v}
	case bool:
		m.Value = &pb.Payload_Metric_BooleanValue{BooleanValue: v}
	case string:
		m.Value = &pb.Payload_Metric_StringValue{StringValue: v}
	case []byte:
		m.Value = &pb.Payload_Metric_BytesValue{BytesValue: v}
	}
	return m
}

func process(t *testing.T, h *Host, topic string, p *pb.Payload) (Result, Message) {
	t.Helper()
	b, err := Encode(p)
	if err != nil {
		t.Fatal(err)
	}
	tp, err := ParseTopic(topic)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	res, err := h.Process(tp, dec)
	if err != nil {
		t.Fatal(err)
	}
	var m Message
	if err := json.Unmarshal(res.JSON, &m); err != nil {
		t.Fatalf("stored JSON %s: %v", res.JSON, err)
	}
	return res, m
}

// TestHostResolvesAliasesAcrossRestart: a DDATA carrying only aliases is stored with the names and
// types of its DBIRTH, also by a new Host (a restarted edge) reading the same store; signed ints
// keep their sign; the metric's timestamp and is_historical are kept.
func TestHostResolvesAliasesAcrossRestart(t *testing.T) {
	store := &memStore{m: map[string][]byte{}}
	h := NewHost(store)
	process(t, h, "spBv1.0/plant1/NBIRTH/line3", &pb.Payload{Seq: proto.Uint64(0), Metrics: []*pb.Payload_Metric{
		metric("bdSeq", 0, pb.DataType_Int64, nil), metric("Node Control/Rebirth", 0, pb.DataType_Boolean, false)}})
	process(t, h, "spBv1.0/plant1/DBIRTH/line3/press-7", &pb.Payload{Seq: proto.Uint64(1), Metrics: []*pb.Payload_Metric{
		metric("Temperature", 1, pb.DataType_Float, float32(20)), metric("Offset", 2, pb.DataType_Int16, uint32(0))}})

	h2 := NewHost(store) // restart: only the store survives
	data := &pb.Payload{Seq: proto.Uint64(2), Timestamp: proto.Uint64(1700000000200), Metrics: []*pb.Payload_Metric{
		{Alias: proto.Uint64(1), Timestamp: proto.Uint64(1700000000150), IsHistorical: proto.Bool(true), Value: &pb.Payload_Metric_FloatValue{FloatValue: 21.5}},
		{Alias: proto.Uint64(2), Value: &pb.Payload_Metric_IntValue{IntValue: uint32(0xFFFF_FFFD)}}, // -3 as Int16
	}}
	res, m := process(t, h2, "spBv1.0/plant1/DDATA/line3/press-7", data)
	if res.Gap != nil || res.UnknownAliases != 0 {
		t.Fatalf("after restart: gap %+v, unknown aliases %d", res.Gap, res.UnknownAliases)
	}
	if len(m.Metrics) != 2 {
		t.Fatalf("metrics %s", res.JSON)
	}
	temp, off := m.Metrics[0], m.Metrics[1]
	if temp.Name != "Temperature" || temp.Type != "Float" || temp.Value != 21.5 || !temp.IsHistorical || temp.Timestamp == nil || *temp.Timestamp != 1700000000150 {
		t.Errorf("Temperature: %+v", temp)
	}
	if off.Name != "Offset" || off.Type != "Int16" || off.Value != float64(-3) {
		t.Errorf("Offset: %+v (want -3: Int16 is two's complement in int_value)", off)
	}
	if m.Device != "press-7" || m.Group != "plant1" || m.Node != "line3" || m.Type != DDATA || *m.Seq != 2 {
		t.Errorf("message: %s", res.JSON)
	}
}

// TestHostSeqGapWraps: seq counts 0..255 and wraps; a skipped value is a gap with the count of
// missing messages; an NDEATH stops checking until the next NBIRTH.
func TestHostSeqGapWraps(t *testing.T) {
	h := NewHost(nil)
	topic := "spBv1.0/g/NDATA/n"
	process(t, h, "spBv1.0/g/NBIRTH/n", &pb.Payload{Seq: proto.Uint64(0)})
	for s := uint64(1); s < 300; s++ {
		res, _ := process(t, h, topic, &pb.Payload{Seq: proto.Uint64(s % 256)})
		if res.Gap != nil {
			t.Fatalf("seq %d: unexpected gap %+v", s%256, res.Gap)
		}
	}
	// next is 300%256 = 44; skip 44 and 45.
	res, _ := process(t, h, topic, &pb.Payload{Seq: proto.Uint64(46)})
	if res.Gap == nil || res.Gap.Expected != 44 || res.Gap.Got != 46 || res.Gap.Missing != 2 || !res.Rebirth {
		t.Fatalf("gap %+v rebirth %v, want expected 44 got 46 missing 2", res.Gap, res.Rebirth)
	}
	// Across the wrap: next 47; send 1 → missing 47..255, 0 = 210.
	res, _ = process(t, h, topic, &pb.Payload{Seq: proto.Uint64(1)})
	if res.Gap == nil || res.Gap.Missing != 210 {
		t.Fatalf("wrapping gap %+v, want 210 missing", res.Gap)
	}
	process(t, h, "spBv1.0/g/NDEATH/n", &pb.Payload{})
	if res, _ := process(t, h, "spBv1.0/g/NBIRTH/n", &pb.Payload{Seq: proto.Uint64(0)}); res.Gap != nil {
		t.Fatalf("birth after death: gap %+v", res.Gap)
	}
}

// TestHostUnknownAlias: data whose alias no birth named is kept with an empty name and asks for
// a rebirth.
func TestHostUnknownAlias(t *testing.T) {
	h := NewHost(nil)
	res, m := process(t, h, "spBv1.0/g/DDATA/n/d", &pb.Payload{Seq: proto.Uint64(5), Metrics: []*pb.Payload_Metric{
		{Alias: proto.Uint64(9), Value: &pb.Payload_Metric_DoubleValue{DoubleValue: math.Inf(1)}}}})
	if res.UnknownAliases != 1 || !res.Rebirth || m.Metrics[0].Name != "" || *m.Metrics[0].Alias != 9 || m.Metrics[0].Value != "+Inf" {
		t.Fatalf("unknown alias: %+v %s", res, res.JSON)
	}
}

func TestParseTopic(t *testing.T) {
	for _, c := range []struct {
		topic, key string
		ok         bool
	}{
		{"spBv1.0/g/NBIRTH/n", "g/n", true},
		{"spBv1.0/g/DDATA/n/d", "g/n/d", true},
		{"spBv1.0/g/DDATA/n", "", false},
		{"spBv1.0/g/NDATA/n/d", "", false},
		{"spBv1.0/g/NCMD/n", "", false},
		{"spBv1.0/STATE/host", "", false},
		{"spBv1.0/g//n", "", false},
		{"spBv1.0/g/DDATA/n/d/x", "", false},
		{"spAv1.0/g/DDATA/n/d", "", false},
	} {
		tp, err := ParseTopic(c.topic)
		if (err == nil) != c.ok || (c.ok && tp.Key() != c.key) {
			t.Errorf("%s: %+v %v, want ok=%v key %q", c.topic, tp, err, c.ok, c.key)
		}
	}
}

func TestArraysAndRebirthRequest(t *testing.T) {
	got := bytesValue(pb.DataType_Int16Array, []byte{0xFF, 0xFF, 0x02, 0x00})
	if b, _ := json.Marshal(got); string(b) != "[-1,2]" {
		t.Errorf("Int16Array: %s", b)
	}
	if b, _ := json.Marshal(bytesValue(pb.DataType_StringArray, []byte("ab\x00c\x00"))); string(b) != `["ab","c"]` {
		t.Errorf("StringArray: %s", b)
	}
	b, err := RebirthRequest(5)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Decode(b)
	if err != nil || len(p.Metrics) != 1 || p.Metrics[0].GetName() != "Node Control/Rebirth" || !p.Metrics[0].GetBooleanValue() ||
		p.Metrics[0].GetDatatype() != uint32(pb.DataType_Boolean) {
		t.Fatalf("rebirth request: %v %v", p, err)
	}
	if TypeName(99) != "Unknown(99)" || TypeName(uint32(pb.DataType_DateTimeArray)) != "DateTimeArray" {
		t.Error("TypeName")
	}
}

// FuzzProcess: any payload on any topic decodes or is refused without panicking, and what is
// stored is valid JSON.
func FuzzProcess(f *testing.F) {
	seed, _ := Encode(&pb.Payload{Seq: proto.Uint64(1), Metrics: []*pb.Payload_Metric{metric("a", 1, pb.DataType_Float, float32(1))}})
	f.Add("spBv1.0/g/DBIRTH/n/d", seed)
	f.Add("spBv1.0/g/DDATA/n/d", []byte{0x12, 0x02, 0x10, 0x01})
	h := NewHost(&memStore{m: map[string][]byte{}})
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		tp, err := ParseTopic(topic)
		if err != nil {
			return
		}
		p, err := Decode(payload)
		if err != nil {
			return
		}
		res, err := h.Process(tp, p)
		if err != nil {
			if !strings.Contains(err.Error(), "too many") {
				t.Fatal(err)
			}
			return
		}
		if !json.Valid(res.JSON) {
			t.Fatalf("invalid JSON %s", res.JSON)
		}
	})
}

// BenchmarkProcessDDATA: decoding a six-metric DDATA carrying aliases only, resolving them and
// rendering the stored JSON, per message: the edge's cost per Sparkplug reading.
func BenchmarkProcessDDATA(b *testing.B) {
	h := NewHost(nil)
	birth := &pb.Payload{Seq: proto.Uint64(0)}
	data := &pb.Payload{Timestamp: proto.Uint64(1700000000000)}
	for i := uint64(1); i <= 6; i++ {
		birth.Metrics = append(birth.Metrics, metric("metric-"+string(rune('a'+i)), i, pb.DataType_Double, nil))
		data.Metrics = append(data.Metrics, &pb.Payload_Metric{Alias: proto.Uint64(i), Timestamp: proto.Uint64(1700000000000),
			Value: &pb.Payload_Metric_DoubleValue{DoubleValue: 21.5 + float64(i)}})
	}
	bt, _ := ParseTopic("spBv1.0/g/DBIRTH/n/d")
	if _, err := h.Process(bt, birth); err != nil {
		b.Fatal(err)
	}
	dt, _ := ParseTopic("spBv1.0/g/DDATA/n/d")
	payload := make([][]byte, 256)
	for s := range payload {
		data.Seq = proto.Uint64(uint64(s))
		payload[s], _ = Encode(data)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		p, err := Decode(payload[(i+1)%256])
		if err != nil {
			b.Fatal(err)
		}
		if _, err := h.Process(dt, p); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "messages/s")
}
