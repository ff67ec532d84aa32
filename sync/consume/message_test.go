package consume

import (
	"encoding/json"
	"testing"
	"unicode/utf8"

	"github.com/tributary-iot/tributary/storage"
)

// TestMessageInvalidUTF8: a value that is JSON syntax but not UTF-8 (from an edge that stored it
// before edges checked, or on a stream not declared JSON) goes out base64-encoded, so the JSON
// line around it stays valid UTF-8 for strict decoders.
func TestMessageInvalidUTF8(t *testing.T) {
	for _, tc := range []struct {
		value  string
		base64 bool
	}{
		{"{\"name\":\"caf\xe9\"}", true},
		{"{\"name\":\"caf\xc3\xa9\"}", false},
		{"\x00\x01", true},
	} {
		m := NewMessage("readings", 0, 7, &storage.Record{Key: []byte("d"), Value: []byte(tc.value)})
		if got := m.ValueBase64 != nil; got != tc.base64 {
			t.Errorf("%q: base64 %v, want %v", tc.value, got, tc.base64)
		}
		line, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if !utf8.Valid(line) {
			t.Errorf("%q: JSON line is not UTF-8: %q", tc.value, line)
		}
		var back Message
		if err := json.Unmarshal(line, &back); err != nil {
			t.Fatal(err)
		}
		if string(back.Payload()) != tc.value {
			t.Errorf("%q: round trip gave %q", tc.value, back.Payload())
		}
	}
}
