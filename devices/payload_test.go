package devices

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestValidate(t *testing.T) {
	jsonStream := Policy{JSON: true, MaxPayloadBytes: 64}
	rawStream := Policy{MaxPayloadBytes: 64}
	at := func(s string) time.Time {
		t.Helper()
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return v.UTC()
	}
	tests := []struct {
		name    string
		payload string
		policy  Policy
		want    Reading
		reason  Reason
	}{
		{"empty", "", jsonStream, Reading{}, ReasonEmpty},
		{"empty raw", "", rawStream, Reading{}, ReasonEmpty},
		{"oversized", `{"v":"` + strings.Repeat("x", 64) + `"}`, jsonStream, Reading{}, ReasonOversized},
		{"exactly at limit", strings.Repeat("7", 64), jsonStream, Reading{ContentType: ContentTypeJSON}, ReasonNone},
		{"default limit", strings.Repeat("x", DefaultMaxPayloadBytes+1), Policy{}, Reading{}, ReasonOversized},
		{"not json", `temp=21.5`, jsonStream, Reading{}, ReasonNotJSON},
		{"truncated json", `{"temp":21.5`, jsonStream, Reading{}, ReasonNotJSON},
		{"json number", `21.5`, jsonStream, Reading{ContentType: ContentTypeJSON}, ReasonNone},
		{"json array", `[1,2]`, jsonStream, Reading{ContentType: ContentTypeJSON}, ReasonNone},
		{"no time", `{"temp":21.5}`, jsonStream, Reading{ContentType: ContentTypeJSON}, ReasonNone},
		{"ts seconds", `{"ts":1718000000}`, jsonStream, Reading{ContentType: ContentTypeJSON, DeviceTime: time.Unix(1718000000, 0).UTC()}, ReasonNone},
		{"ts millis", `{"ts":1718000000123}`, jsonStream, Reading{ContentType: ContentTypeJSON, DeviceTime: time.UnixMilli(1718000000123).UTC()}, ReasonNone},
		{"ts fractional seconds", `{"ts":1718000000.5}`, jsonStream, Reading{ContentType: ContentTypeJSON, DeviceTime: time.Unix(1718000000, 5e8).UTC()}, ReasonNone},
		{"ts exponent", `{"ts":1.718e9}`, jsonStream, Reading{ContentType: ContentTypeJSON, DeviceTime: time.Unix(1718000000, 0).UTC()}, ReasonNone},
		{"ts rfc3339", `{"ts":"2024-06-10T06:13:20+02:00"}`, jsonStream, Reading{ContentType: ContentTypeJSON, DeviceTime: at("2024-06-10T04:13:20Z")}, ReasonNone},
		{"time rfc3339 nano", `{"time":"2024-06-10T06:13:20.25Z"}`, jsonStream, Reading{ContentType: ContentTypeJSON, DeviceTime: at("2024-06-10T06:13:20.25Z")}, ReasonNone},
		{"ts wins over time", `{"time":1,"ts":2}`, jsonStream, Reading{ContentType: ContentTypeJSON, DeviceTime: time.Unix(2, 0).UTC()}, ReasonNone},
		{"nested ts ignored", `{"a":{"ts":"x"},"b":["ts"],"c":"ts"}`, jsonStream, Reading{ContentType: ContentTypeJSON}, ReasonNone},
		{"escaped key", `{"\u0074s":5}`, jsonStream, Reading{ContentType: ContentTypeJSON, DeviceTime: time.Unix(5, 0).UTC()}, ReasonNone},
		{"escaped value", `{"ts":"2024-06-10T06:13:20\u005a"}`, jsonStream, Reading{ContentType: ContentTypeJSON, DeviceTime: at("2024-06-10T06:13:20Z")}, ReasonNone},
		{"bad ts string", `{"ts":"yesterday"}`, jsonStream, Reading{}, ReasonBadDeviceTime},
		{"bad ts no zone", `{"ts":"2024-06-10T06:13:20"}`, jsonStream, Reading{}, ReasonBadDeviceTime},
		{"bad ts negative", `{"ts":-1}`, jsonStream, Reading{}, ReasonBadDeviceTime},
		{"bad ts microseconds", `{"ts":1718000000123456}`, jsonStream, Reading{}, ReasonBadDeviceTime},
		{"bad ts bool", `{"ts":true}`, jsonStream, Reading{}, ReasonBadDeviceTime},
		{"bad ts null", `{"ts":null}`, jsonStream, Reading{}, ReasonBadDeviceTime},
		{"bad ts on raw stream is kept", `{"ts":"yesterday"}`, rawStream, Reading{ContentType: ContentTypeJSON}, ReasonNone},
		{"time on raw stream", `{"ts":7}`, rawStream, Reading{ContentType: ContentTypeJSON, DeviceTime: time.Unix(7, 0).UTC()}, ReasonNone},
		{"text on raw stream", `temp=21.5`, rawStream, Reading{ContentType: ContentTypeText}, ReasonNone},
		{"almost json on raw stream", `{temp=21.5`, rawStream, Reading{ContentType: ContentTypeText}, ReasonNone},
		{"binary on raw stream", "\x00\xff\x10", rawStream, Reading{ContentType: ContentTypeBinary}, ReasonNone},
		{"whitespace", "  {\n\"ts\" :\t3 }\n", jsonStream, Reading{ContentType: ContentTypeJSON, DeviceTime: time.Unix(3, 0).UTC()}, ReasonNone},
		{"invalid utf-8 in string", "{\"name\":\"\xff\xfe\"}", jsonStream, Reading{}, ReasonInvalidUTF8},
		{"truncated utf-8 sequence", "{\"name\":\"caf\xc3\"}", jsonStream, Reading{}, ReasonInvalidUTF8},
		{"utf-16 surrogate as utf-8", "[\"\xed\xa0\x80\"]", jsonStream, Reading{}, ReasonInvalidUTF8},
		{"valid utf-8 kept", "{\"name\":\"caf\xc3\xa9\"}", jsonStream, Reading{ContentType: ContentTypeJSON}, ReasonNone},
		{"invalid utf-8 on raw stream is binary", "{\"name\":\"\xff\"}", rawStream, Reading{ContentType: ContentTypeBinary}, ReasonNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, reason := Validate([]byte(tt.payload), tt.policy)
			if reason != tt.reason {
				t.Fatalf("reason = %q, want %q", reason, tt.reason)
			}
			if got.ContentType != tt.want.ContentType || !got.DeviceTime.Equal(tt.want.DeviceTime) {
				t.Fatalf("reading = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// referenceDeviceTime finds the first top-level "ts" and "time" values with encoding/json's
// decoder, to check the hand-written scanner's value boundaries and key matching.
func referenceDeviceTime(payload []byte) (ts, tm json.RawMessage, isObject bool) {
	dec := json.NewDecoder(bytes.NewReader(payload))
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return nil, nil, false
	}
	for dec.More() {
		keyTok, err := dec.Token()
		if err != nil {
			return nil, nil, false
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, nil, false
		}
		switch keyTok {
		case "ts":
			if ts == nil {
				ts = raw
			}
		case "time":
			if tm == nil {
				tm = raw
			}
		}
	}
	return ts, tm, true
}

func FuzzValidate(f *testing.F) {
	for _, s := range []string{
		`{"ts":1718000000123,"temp":21.5}`, `{"time":"2024-06-10T06:13:20Z"}`, `{"a":{"ts":1},"ts":2}`,
		`{"\u0074s":5}`, `{"ts":"x\"y"}`, `[1,{"ts":1}]`, `"ts"`, `{"ts":1e400}`, `{"ts":-0.5}`,
		`{"time":1,"ts":null}`, "temp=21.5", "\x00\x01", `{"ts":1,"ts":2}`, ``, `  {} `, "{\"a\":\"\xff\"}",
	} {
		f.Add([]byte(s), true)
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, payload []byte, isJSON bool) {
		p := Policy{JSON: isJSON, MaxPayloadBytes: 4096}
		r, reason := Validate(payload, p)
		valid := json.Valid(payload)
		switch {
		case len(payload) == 0:
			if reason != ReasonEmpty {
				t.Fatalf("empty payload: reason %q", reason)
			}
			return
		case len(payload) > p.MaxPayloadBytes:
			if reason != ReasonOversized {
				t.Fatalf("oversized payload: reason %q", reason)
			}
			return
		case isJSON && !valid:
			if reason != ReasonNotJSON {
				t.Fatalf("invalid JSON on JSON stream: reason %q", reason)
			}
			return
		case valid && !utf8.Valid(payload):
			if isJSON && reason != ReasonInvalidUTF8 || !isJSON && r.ContentType != ContentTypeBinary {
				t.Fatalf("JSON syntax with invalid UTF-8: %+v, %q", r, reason)
			}
			return
		}
		if valid != (r.ContentType == ContentTypeJSON) && reason == ReasonNone {
			t.Fatalf("json.Valid = %v but content type %q", valid, r.ContentType)
		}
		if !valid {
			return
		}
		ts, tm, _ := referenceDeviceTime(payload)
		raw := ts
		if raw == nil {
			raw = tm
		}
		if raw == nil {
			if reason != ReasonNone || !r.DeviceTime.IsZero() {
				t.Fatalf("no time field: %+v, %q", r, reason)
			}
			return
		}
		want, ok := parseDeviceTime(raw)
		switch {
		case !ok && isJSON:
			if reason != ReasonBadDeviceTime {
				t.Fatalf("time %s unparsable: reason %q", raw, reason)
			}
		case !ok:
			if reason != ReasonNone || !r.DeviceTime.IsZero() {
				t.Fatalf("time %s unparsable on raw stream: %+v, %q", raw, r, reason)
			}
		default:
			if reason != ReasonNone || !r.DeviceTime.Equal(want) {
				t.Fatalf("time %s: got %v, %q; want %v", raw, r.DeviceTime, reason, want)
			}
		}
	})
}

func BenchmarkValidate(b *testing.B) {
	cases := []struct {
		name    string
		payload string
		policy  Policy
	}{
		{"json-ts-millis", `{"device":"boiler-0042","seq":918273,"ts":1718000000123,"temp":21.53,"hum":48.2,"bat":3.71}`, Policy{JSON: true}},
		{"json-time-rfc3339", `{"device":"boiler-0042","seq":918273,"temp":21.53,"hum":48.2,"time":"2024-06-10T06:13:20.123Z"}`, Policy{JSON: true}},
		{"json-no-time", `{"device":"boiler-0042","seq":918273,"temp":21.53,"hum":48.2,"bat":3.71,"tags":["a","b"]}`, Policy{JSON: true}},
		{"binary-raw", "\x01\x02\x03\xff\x00\x10\x20\x30\x40\x50\x60\x70\x80\x90\xa0\xb0\xc0\xd0", Policy{}},
		{"text-raw", "temp=21.53,hum=48.2,bat=3.71", Policy{}},
	}
	for _, c := range cases {
		payload := []byte(c.payload)
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(payload)))
			for b.Loop() {
				if _, reason := Validate(payload, c.policy); reason != ReasonNone {
					b.Fatal(reason)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "readings/s")
		})
	}
	// The approach Validate avoids, for comparison.
	b.Run("baseline-unmarshal-map", func(b *testing.B) {
		payload := []byte(cases[0].payload)
		b.ReportAllocs()
		for b.Loop() {
			var m map[string]any
			if err := json.Unmarshal(payload, &m); err != nil {
				b.Fatal(err)
			}
			_ = m["ts"]
		}
	})
}
