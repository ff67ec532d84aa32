package format

import (
	"bytes"
	"encoding/json"
	"math"
	"math/big"
	"testing"
	"time"

	// Pinned at v2.31.0 in go.mod, for tests only: its decoding into an `any` defined the
	// JSON view, and it encodes the test data. The binary leaves it out (see avro_schema.go).
	"github.com/hamba/avro/v2"

	"github.com/tributary-iot/tributary/devices"
)

// The JSON view of an Avro datum was github.com/hamba/avro/v2's decoding into an `any`;
// the decoder written here must give the same JSON, so each case is encoded by hamba and
// decoded by both.

type avroCase struct {
	name   string
	schema string
	values []any    // encoded by hamba
	raw    [][]byte // encoded by hand: what hamba never writes (blocks, negative counts)
}

var avroCases = []avroCase{
	{name: "primitives", schema: `{"type":"record","name":"Prim","namespace":"t.p","fields":[
		{"name":"b","type":"boolean"},{"name":"i","type":"int"},{"name":"l","type":"long"},
		{"name":"f","type":"float"},{"name":"d","type":"double"},{"name":"s","type":"string"},
		{"name":"y","type":"bytes"},{"name":"n","type":"null"}]}`,
		values: []any{
			map[string]any{"b": true, "i": 7, "l": int64(-1) << 40, "f": float32(1.5), "d": 21.53, "s": "häh \"x\"", "y": []byte{0, 1, 255}, "n": nil},
			map[string]any{"b": false, "i": -2147483648, "l": int64(9223372036854775807), "f": float32(-0.1), "d": -1e300, "s": "", "y": []byte{}, "n": nil},
		}},
	{name: "nested", schema: `{"type":"record","name":"Outer","namespace":"t.n","fields":[
		{"name":"inner","type":{"type":"record","name":"Inner","fields":[{"name":"x","type":"int"}]}},
		{"name":"again","type":"Inner"},
		{"name":"list","type":{"type":"array","items":"t.n.Inner"}},
		{"name":"byName","type":{"type":"map","values":{"type":"array","items":"long"}}}]}`,
		values: []any{
			map[string]any{"inner": map[string]any{"x": 1}, "again": map[string]any{"x": 2},
				"list":   []any{map[string]any{"x": 3}, map[string]any{"x": 4}},
				"byName": map[string]any{"a": []any{int64(1), int64(2)}, "": []any{}}},
			map[string]any{"inner": map[string]any{"x": 0}, "again": map[string]any{"x": 0}, "list": []any{}, "byName": map[string]any{}},
		}},
	{name: "unions", schema: `{"type":"record","name":"U","namespace":"t.u","fields":[
		{"name":"opt","type":["null","string"]},
		{"name":"last","type":["int","null"]},
		{"name":"when","type":["null",{"type":"long","logicalType":"timestamp-micros"},{"type":"bytes","logicalType":"decimal","precision":4,"scale":1}]},
		{"name":"wall","type":["null",{"type":"long","logicalType":"local-timestamp-millis"}]},
		{"name":"many","type":["null","long","double","bytes",{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]},
			{"type":"enum","name":"E","symbols":["X","Y"]},{"type":"array","items":"int"},{"type":"map","values":"string"},
			{"type":"long","logicalType":"timestamp-millis"}]}]}`,
		values: []any{
			map[string]any{"opt": nil, "last": nil, "many": nil, "when": nil, "wall": nil},
			map[string]any{"opt": "here", "last": 5, "many": map[string]any{"long": int64(3)},
				"when": map[string]any{"bytes.decimal": big.NewRat(-5, 2)}, "wall": map[string]any{"long.local-timestamp-millis": time.UnixMilli(5).UTC()}},
			map[string]any{"opt": "here", "last": 5, "many": map[string]any{"long": int64(3)},
				"when": map[string]any{"long.timestamp-micros": time.UnixMicro(7).UTC()}, "wall": nil},
			map[string]any{"opt": nil, "last": 0, "when": nil, "wall": nil, "many": map[string]any{"double": 2.5}},
			map[string]any{"opt": nil, "last": 0, "when": nil, "wall": nil, "many": map[string]any{"bytes": []byte("ab")}},
			map[string]any{"opt": nil, "last": 0, "when": nil, "wall": nil, "many": map[string]any{"t.u.R": map[string]any{"a": 9}}},
			map[string]any{"opt": nil, "last": 0, "when": nil, "wall": nil, "many": map[string]any{"t.u.E": "Y"}},
			map[string]any{"opt": nil, "last": 0, "when": nil, "wall": nil, "many": map[string]any{"array": []any{1, 2}}},
			map[string]any{"opt": nil, "last": 0, "when": nil, "wall": nil, "many": map[string]any{"map": map[string]any{"k": "v"}}},
			map[string]any{"opt": nil, "last": 0, "when": nil, "wall": nil, "many": map[string]any{"long.timestamp-millis": time.UnixMilli(1700000000123).UTC()}},
		}},
	{name: "top-level union", schema: `["null","string",{"type":"fixed","name":"F4","size":4}]`,
		values: []any{nil, map[string]any{"string": "s"}, map[string]any{"F4": [4]byte{1, 2, 3, 4}}}},
	{name: "enum and fixed", schema: `{"type":"record","name":"EF","fields":[
		{"name":"e","type":{"type":"enum","name":"Color","namespace":"t.c","symbols":["RED","GREEN","BLUE"]}},
		{"name":"f","type":{"type":"fixed","name":"Mac","size":6}},
		{"name":"z","type":{"type":"fixed","name":"Zero","size":0}}]}`,
		values: []any{map[string]any{"e": "BLUE", "f": [6]byte{0xde, 0xad, 0xbe, 0xef, 0, 1}, "z": [0]byte{}}}},
	{name: "logical types", schema: `{"type":"record","name":"L","namespace":"t.l","fields":[
		{"name":"date","type":{"type":"int","logicalType":"date"}},
		{"name":"tmillis","type":{"type":"int","logicalType":"time-millis"}},
		{"name":"tmicros","type":{"type":"long","logicalType":"time-micros"}},
		{"name":"tsms","type":{"type":"long","logicalType":"timestamp-millis"}},
		{"name":"tsus","type":{"type":"long","logicalType":"timestamp-micros"}},
		{"name":"ltsms","type":{"type":"long","logicalType":"local-timestamp-millis"}},
		{"name":"ltsus","type":{"type":"long","logicalType":"local-timestamp-micros"}},
		{"name":"uuid","type":{"type":"string","logicalType":"uuid"}},
		{"name":"dec","type":{"type":"bytes","logicalType":"decimal","precision":9,"scale":2}},
		{"name":"fdec","type":{"type":"fixed","name":"D8","size":8,"logicalType":"decimal","precision":18,"scale":4}},
		{"name":"dur","type":{"type":"fixed","name":"Dur","size":12,"logicalType":"duration"}},
		{"name":"baddec","type":{"type":"bytes","logicalType":"decimal","precision":2,"scale":3}},
		{"name":"unknown","type":{"type":"long","logicalType":"nanos-of-something"}},
		{"name":"wrongbase","type":{"type":"int","logicalType":"timestamp-millis"}}]}`,
		values: []any{map[string]any{
			"date": time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC), "tmillis": 90 * time.Second, "tmicros": 1500 * time.Microsecond,
			"tsms": time.UnixMilli(-1234567).UTC(), "tsus": time.UnixMicro(1700000000123456).UTC(),
			"ltsms": time.UnixMilli(1700000000123).UTC(), "ltsus": time.UnixMicro(1700000000123456).UTC(),
			"uuid": "123e4567-e89b-12d3-a456-426614174000", "dec": big.NewRat(-12345, 100), "fdec": big.NewRat(31415926, 10000),
			"dur": avro.LogicalDuration{Months: 1, Days: 2, Milliseconds: 3}, "baddec": []byte{7}, "unknown": int64(5), "wrongbase": 6,
		}}},
	{name: "recursive", schema: `{"type":"record","name":"Node","fields":[{"name":"v","type":"int"},{"name":"next","type":["null","Node"]}]}`,
		values: []any{map[string]any{"v": 1, "next": map[string]any{"Node": map[string]any{"v": 2, "next": nil}}}}},
	{name: "blocks", schema: `{"type":"record","name":"Blocks","fields":[{"name":"a","type":{"type":"array","items":"int"}},{"name":"m","type":{"type":"map","values":"string"}}]}`,
		raw: [][]byte{
			// a: blocks of 2 and 1 items, m: blocks of 1 and 1 entries.
			{0x04, 0x02, 0x04, 0x02, 0x06, 0x00, 0x02, 0x02, 'a', 0x02, 'x', 0x02, 0x02, 'b', 0x02, 'y', 0x00},
			// a: a block of -2 items with its size in bytes (2), then a block of 1; m: a block of -1 of 4 bytes.
			{0x03, 0x04, 0x02, 0x04, 0x02, 0x06, 0x00, 0x01, 0x08, 0x02, 'k', 0x02, 'v', 0x00},
		}},
	{name: "bare primitive", schema: `"double"`, values: []any{3.25}},
	// NaN and the infinities are valid Avro floats and doubles, which JSON numbers cannot hold:
	// in a field, a bare union, a union that names its branch, an array and a map.
	{name: "non-finite", schema: `{"type":"record","name":"NF","namespace":"t.f","fields":[
		{"name":"f","type":"float"},{"name":"d","type":"double"},
		{"name":"opt","type":["null","double"]},
		{"name":"named","type":["null","float",{"type":"array","items":"double"}]},
		{"name":"list","type":{"type":"array","items":"double"}},
		{"name":"byName","type":{"type":"map","values":"float"}}]}`,
		values: []any{
			map[string]any{"f": float32(math.NaN()), "d": math.Inf(1), "opt": math.Inf(-1),
				"named": map[string]any{"float": float32(math.Inf(1))},
				"list":  []any{math.NaN(), 1.5, math.Inf(-1)}, "byName": map[string]any{"lo": float32(math.Inf(-1)), "ok": float32(2.5)}},
			map[string]any{"f": float32(math.Inf(-1)), "d": math.NaN(), "opt": math.NaN(),
				"named": map[string]any{"array": []any{math.Inf(1), math.NaN()}}, "list": []any{}, "byName": map[string]any{}},
		}},
	// Dates and timestamps can carry years RFC 3339 cannot (before 0, after 9999).
	{name: "years past RFC 3339", schema: `{"type":"record","name":"Y","namespace":"t.y","fields":[
		{"name":"date","type":{"type":"int","logicalType":"date"}},
		{"name":"tsms","type":{"type":"long","logicalType":"timestamp-millis"}},
		{"name":"tsus","type":["null",{"type":"long","logicalType":"timestamp-micros"}]},
		{"name":"ltsms","type":{"type":"long","logicalType":"local-timestamp-millis"}}]}`,
		values: []any{
			map[string]any{"date": time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), "tsms": time.Date(-1, 12, 31, 23, 59, 59, 1e6, time.UTC),
				"tsus": time.Date(292277, 1, 2, 3, 4, 5, 6000, time.UTC), "ltsms": time.Date(12345, 6, 7, 8, 9, 10, 0, time.UTC)},
			map[string]any{"date": time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC), "tsms": time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC),
				"tsus": nil, "ltsms": time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
		}},
	// Every NaN bit pattern is a NaN: sign set, signalling, with a payload.
	{name: "NaN bit patterns", schema: `{"type":"array","items":"double"}`,
		raw: [][]byte{{0x06,
			0x01, 0, 0, 0, 0, 0, 0xf0, 0x7f, // signalling NaN
			0, 0, 0, 0, 0, 0, 0xf8, 0xff, // negative quiet NaN
			0xef, 0xbe, 0xad, 0xde, 0, 0, 0xf8, 0x7f, // quiet NaN with a payload
			0x00}}},
	{name: "array of maps of unions", schema: `{"type":"array","items":{"type":"map","values":["null","boolean"]}}`,
		values: []any{[]any{map[string]any{"t": map[string]any{"boolean": true}, "n": nil}, map[string]any{}}}},
}

// jsonView is hamba's decoded value with what its JSON fails on shown as the JSON view shows
// it, the only places the two differ: NaNs and infinities named as the proto3 JSON mapping
// names them, times before year 0 or after 9999 in RFC 3339's layout with all the year's
// digits. Everything else is left as hamba decoded it.
func jsonView(v any) any {
	name := func(f float64) any {
		switch {
		case math.IsNaN(f):
			return "NaN"
		case math.IsInf(f, 1):
			return "Infinity"
		case math.IsInf(f, -1):
			return "-Infinity"
		}
		return nil
	}
	switch v := v.(type) {
	case float32:
		if n := name(float64(v)); n != nil {
			return n
		}
	case float64:
		if n := name(v); n != nil {
			return n
		}
	case time.Time:
		if y := v.Year(); y < 0 || y > 9999 {
			return v.Format(time.RFC3339Nano)
		}
	case map[string]any:
		for k, x := range v {
			v[k] = jsonView(x)
		}
	case []any:
		for i, x := range v {
			v[i] = jsonView(x)
		}
	}
	return v
}

func hambaJSON(t testing.TB, schema avro.Schema, payload []byte) []byte {
	t.Helper()
	var v any
	if err := avro.Unmarshal(schema, payload, &v); err != nil {
		t.Fatalf("hamba decodes % x: %v", payload, err)
	}
	out, err := json.Marshal(jsonView(v))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestAvroMatchesHamba(t *testing.T) {
	for _, c := range avroCases {
		t.Run(c.name, func(t *testing.T) {
			s, err := newAvro(c.schema)
			if err != nil {
				t.Fatalf("our parse: %v", err)
			}
			hs, err := avro.Parse(c.schema)
			if err != nil {
				t.Fatalf("hamba parse: %v", err)
			}
			payloads := append([][]byte{}, c.raw...)
			for _, v := range c.values {
				p, err := avro.Marshal(hs, v)
				if err != nil {
					t.Fatalf("hamba encodes %v: %v", v, err)
				}
				payloads = append(payloads, p)
			}
			for _, p := range payloads {
				if reason, detail := s.Check(p); reason != devices.ReasonNone {
					t.Fatalf("% x refused: %s %s", p, reason, detail)
				}
				got, err := s.DecodeJSON(p)
				if err != nil {
					t.Fatal(err)
				}
				if want := hambaJSON(t, hs, p); !bytes.Equal(got, want) {
					t.Errorf("% x:\n got %s\nwant %s", p, got, want)
				}
				t.Logf("%s", got)
				for n := range p {
					if reason, detail := s.Check(p[:n]); reason != devices.ReasonNotAvro || detail == "" {
						t.Errorf("% x cut to %d bytes: %s %q, want not_avro", p, n, reason, detail)
					}
				}
				if reason, detail := s.Check(append(p[:len(p):len(p)], 0)); reason != devices.ReasonNotAvro || detail == "" {
					t.Errorf("% x with a byte after it: %s %q, want not_avro", p, reason, detail)
				}
			}
		})
	}
}

func TestAvroRefuses(t *testing.T) {
	s, err := newAvro(avroCases[2].schema) // unions
	if err != nil {
		t.Fatal(err)
	}
	e, err := newAvro(`{"type":"enum","name":"Two","symbols":["A","B"]}`)
	if err != nil {
		t.Fatal(err)
	}
	b, err := newAvro(`"boolean"`)
	if err != nil {
		t.Fatal(err)
	}
	a, err := newAvro(`{"type":"array","items":"null"}`)
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		s       *Schema
		payload []byte
	}{
		"union branch past the end": {s, []byte{0x00, 0x00, 0x00, 0x00, 0x00, 0x14}},
		"negative union branch":     {s, []byte{0x01}},
		"union branch of 6 bytes":   {s, []byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x00}},
		"enum symbol past the end":  {e, []byte{0x04}},
		"boolean not 0 or 1":        {b, []byte{0x02}},
		"long of 11 bytes":          {s, []byte{0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
		"negative string length":    {s, []byte{0x02, 0x01}},
		"forged block count":        {a, []byte{0xfe, 0xff, 0xff, 0xff, 0x0f}},
	} {
		if reason, detail := c.s.Check(c.payload); reason != devices.ReasonNotAvro || detail == "" {
			t.Errorf("%s: %s %q, want not_avro", name, reason, detail)
		} else {
			t.Logf("%s: %s", name, detail)
		}
	}
}

func TestAvroSchemaRefused(t *testing.T) {
	for _, text := range []string{
		`"nosuch"`,
		`{"type":"record","name":"R","fields":[{"name":"a","type":"Missing"}]}`,
		`["null",["int"]]`,
		`["int","int"]`,
		`{"type":"enum","name":"E","symbols":["A","A"]}`,
		`{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"a","type":"int"}]}`,
		`{"type":"record","name":"1R","fields":[]}`,
		`{"type":"fixed","name":"F"}`,
		`{"type":"array"}`,
	} {
		if _, err := newAvro(text); err == nil {
			t.Errorf("%s: parsed", text)
		}
		if _, err := avro.Parse(text); err == nil {
			t.Errorf("%s: hamba parsed it, so refusing it is new", text)
		}
	}
}

// FuzzAvroMatchesHamba: the decoder never panics, and what it accepts hamba decodes to the
// same JSON.
func FuzzAvroMatchesHamba(f *testing.F) {
	text := avroCases[2].schema // unions, with a record, an enum, an array and a map among them
	s, err := newAvro(text)
	if err != nil {
		f.Fatal(err)
	}
	hs := avro.MustParse(text)
	for _, v := range avroCases[2].values {
		p, err := avro.Marshal(hs, v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(p)
	}
	f.Add([]byte{0x00, 0x00, 0x0c, 0x03, 0x04, 0x02, 0x04, 0x00})
	for _, d := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		p, err := avro.Marshal(hs, map[string]any{"opt": nil, "last": 0, "when": nil, "wall": nil, "many": map[string]any{"double": d}})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		if reason, _ := s.Check(payload); reason != devices.ReasonNone {
			return
		}
		got, err := s.DecodeJSON(payload)
		var v any
		if herr := avro.Unmarshal(hs, payload, &v); herr != nil {
			t.Fatalf("accepted, hamba refuses: %v", herr)
		}
		want, jerr := json.Marshal(jsonView(v))
		if err != nil || jerr != nil {
			t.Fatalf("JSON error %v, hamba's %v", err, jerr)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("got %s\nwant %s", got, want)
		}
	})
}

// BenchmarkAvroCheck: the check per reading, this decoder against the one it replaced (hamba's
// decode into an `any`, then its re-encode to find where the datum ends), in the same run.
func BenchmarkAvroCheck(b *testing.B) {
	s := load(b, Spec{Format: Avro, Schema: "reading.avsc"})
	hs := avro.MustParse(s.Text)
	payload, err := avro.Marshal(hs, map[string]any{"device": "boiler-0042", "seq": int64(918273), "temp": 21.53, "note": nil})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("ours", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if reason, _ := s.Check(payload); reason != devices.ReasonNone {
				b.Fatal(reason)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "readings/s")
	})
	b.Run("hamba", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var v any
			if err := avro.Unmarshal(hs, payload, &v); err != nil {
				b.Fatal(err)
			}
			again, err := avro.Marshal(hs, v)
			if err != nil || len(again) != len(payload) {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "readings/s")
	})
}
