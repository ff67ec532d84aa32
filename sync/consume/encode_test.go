package consume

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"reflect"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/tributary-iot/tributary/storage"
)

var jsonCases = []string{
	`{}`, `[]`, `{"a":1}`, ` {"a" : [1, 2.5, -3e+7, true, false, null, "x\u00e9\n"]} `, `"str"`, `0`, `-0.0e1`,
	`{"device":"sensor-1","seq":12,"temp_c":21.5}`, "{\n  \"a\": 1\n}", `[[[[]]]]`, `{"a":{"b":{}}}`,
	``, ` `, `{`, `}`, `[1,]`, `{"a":1,}`, `{"a"}`, `{"a":}`, `{1:2}`, `01`, `1.`, `.5`, `1e`, `-`, `+1`,
	`tru`, `nul`, `"abc`, `"\x"`, `"\u12"`, "\"a\x01b\"", `[1 2]`, `{"a":1 "b":2}`, `{} {}`, `[}`, `{]`,
	"\"\xff\"", "\"caf\xc3\xa9\"", `NaN`, `1.5e-3`, `"\/"`,
}

func TestValidJSONAgreesWithEncodingJSON(t *testing.T) {
	for _, c := range jsonCases {
		if got, want := validJSON([]byte(c)), json.Valid([]byte(c)) && utf8.ValidString(c); got != want {
			t.Errorf("validJSON(%q) = %v, want %v", c, got, want)
		}
	}
}

func FuzzValidJSON(f *testing.F) {
	for _, c := range jsonCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := validJSON(b), json.Valid(b) && utf8.Valid(b); got != want {
			t.Fatalf("validJSON(%q) = %v, encoding/json and utf8 say %v", b, got, want)
		}
	})
}

func sampleRecord(value string) storage.Record {
	return storage.Record{Key: []byte("sensor-0042"), Value: []byte(value), Timestamp: time.UnixMilli(1_700_000_000_120),
		Headers: []storage.Header{
			{Key: "topic", Value: []byte("devices/sensor-0042/readings")},
			{Key: "content-type", Value: []byte("application/json")},
			{Key: "device-time", Value: []byte("1700000000100")},
			{Key: "client-id", Value: []byte("sensor-0042")},
			{Key: "packet-id", Value: []byte("7")},
			{Key: "edge", Value: []byte("gw-1")},
			{Key: "edge-partition", Value: []byte("1")},
			{Key: "edge-offset", Value: []byte("877")},
			{Key: "central-receive-time", Value: []byte("1700000000130")},
		}}
}

// The line encoder must say what the Message encoding always said: with every header, a line
// decodes to the very Message NewMessage builds; by default only DefaultHeaders stay.
func TestLineDecodesToMessage(t *testing.T) {
	for _, value := range []string{`{"seq":12,"temp_c":21.5}`, "{\n \"seq\": 1\n}", "not json", "", "\x00\xff", `"a string"`} {
		rec := sampleRecord(value)
		want := NewMessage("readings", 3, 1041, &rec)
		wantJSON, _ := json.Marshal(want)
		json.Unmarshal(wantJSON, &want) // compare decoded forms: whitespace inside values may differ
		for _, headers := range []string{"all", ""} {
			hs, _ := ParseHeaders(headers)
			line := newLineEncoder("readings", hs).appendLine(nil, 3, 1041, &rec)
			if bytes.Count(line, []byte("\n")) != 1 || line[len(line)-1] != '\n' {
				t.Fatalf("line is not one line: %q", line)
			}
			var got Message
			if err := json.Unmarshal(line, &got); err != nil {
				t.Fatalf("line %q: %v", line, err)
			}
			w := want
			if value == "" {
				w.ValueBase64 = []byte{} // an empty payload is said explicitly: "value_base64":""
			}
			if headers == "" {
				w.Headers = map[string]string{"topic": "devices/sensor-0042/readings", "device-time": "1700000000100"}
			}
			if !reflect.DeepEqual(got, w) {
				t.Errorf("headers=%q value %q:\n got %+v\nwant %+v\nline %s", headers, value, got, w, line)
			}
			p, off, ok := lineHead(line)
			if !ok || p != 3 || off != 1041 {
				t.Errorf("lineHead(%q) = %d, %d, %v", line, p, off, ok)
			}
			checkLineValueBase64(t, line, got.ValueBase64)
		}
	}
}

// FuzzLine: whatever bytes a device and an edge put in a record, its line is one valid JSON
// object in valid UTF-8 whose head gives back the partition and offset and whose value gives
// back the payload.
func FuzzLine(f *testing.F) {
	f.Add([]byte("sensor-1"), []byte(`{"a":1}`), "topic", []byte("devices/x"), int64(1_700_000_000_000))
	f.Add([]byte("a\"b\\c\n"), []byte("\xff\xfe"), "x\x00y", []byte("\u2028<>&"), int64(-5))
	f.Fuzz(func(t *testing.T, key, value []byte, hk string, hv []byte, ms int64) {
		rec := storage.Record{Key: key, Value: value, Timestamp: time.UnixMilli(ms % (1 << 45)),
			Headers: []storage.Header{{Key: hk, Value: hv}, {Key: "edge-offset", Value: hv}}}
		hs, _ := ParseHeaders("all")
		line := newLineEncoder("read\"ings", hs).appendLine(nil, 5, 99, &rec)
		if !utf8.Valid(line) || bytes.IndexByte(line[:len(line)-1], '\n') >= 0 {
			t.Fatalf("line is not one UTF-8 line: %q", line)
		}
		var m Message
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		if p, off, ok := lineHead(line); !ok || p != 5 || off != 99 {
			t.Fatalf("lineHead(%q) = %d, %d, %v", line, p, off, ok)
		}
		checkLineValueBase64(t, line, m.ValueBase64)
		if m.Value != nil {
			var a, b any
			if json.Unmarshal(value, &a) != nil || json.Unmarshal(m.Value, &b) != nil || !reflect.DeepEqual(a, b) {
				t.Fatalf("value %q came back as %q", value, m.Value)
			}
		} else if !bytes.Equal(m.ValueBase64, value) {
			t.Fatalf("value %q came back as %q", value, m.ValueBase64)
		}
		if !rec.Timestamp.IsZero() && !m.Timestamp.Equal(rec.Timestamp) {
			t.Fatalf("timestamp %v came back as %v", rec.Timestamp, m.Timestamp)
		}
	})
}

// checkLineValueBase64: LineValueBase64 finds the base64 of a line exactly when the decoded line
// has value_base64 (want non-nil), and it decodes to that payload.
func checkLineValueBase64(t *testing.T, line, want []byte) {
	t.Helper()
	b64, start, ok := LineValueBase64(line)
	if ok != (want != nil) {
		t.Fatalf("LineValueBase64(%q) ok = %v, want %v", line, ok, want != nil)
	}
	if !ok {
		return
	}
	if string(line[start:start+len(b64)]) != string(b64) {
		t.Fatalf("LineValueBase64(%q): start %d does not point at %q", line, start, b64)
	}
	if got, err := base64.StdEncoding.DecodeString(string(b64)); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("LineValueBase64(%q) = %q, decodes to %q (%v), want %q", line, b64, got, err, want)
	}
}
