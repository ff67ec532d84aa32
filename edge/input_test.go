package edge

import (
	"testing"
	"unicode/utf8"

	"github.com/tributary-iot/tributary/devices"
)

// TestInvalidUTF8JSON: JSON syntax holding bytes that are not UTF-8 passes json.Valid. On a JSON
// stream it is a dead letter with its own reason; on other streams it is stored marked binary, so
// consumers get it base64-encoded instead of as a broken JSON value.
func TestInvalidUTF8JSON(t *testing.T) {
	a, _ := startAgent(t, Config{JSONStreams: []string{"readings"}, Streams: map[string]StreamConfig{"raw": {}}})
	c, _ := dialRaw(t, a.MQTTAddr(), "dev-u", 4, "", "")
	bad := []byte("{\"name\":\"caf\xe9\",\"temp\":21.5}") // Latin-1 é, as some firmware sends it
	c.publish("devices/dev-u/readings", bad, 1, 1, false)
	c.expectAck(1)
	c.publish("devices/dev-u/raw", bad, 2, 1, false)
	c.expectAck(2)
	c.publish("devices/dev-u/readings", []byte("{\"name\":\"caf\xc3\xa9\"}"), 3, 1, false)
	c.expectAck(3)

	dl := readStream(t, a.Log(), devices.DeadLetterStream)[0]
	if len(dl) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dl))
	}
	if got := string(dl[0].HeaderValue(HeaderReason)); got != string(devices.ReasonInvalidUTF8) {
		t.Errorf("dead letter reason %q, want %q", got, devices.ReasonInvalidUTF8)
	}
	if string(dl[0].Value) != string(bad) {
		t.Errorf("dead letter holds %q, want the payload as sent", dl[0].Value)
	}
	var good int
	for _, p := range readStream(t, a.Log(), "readings") {
		for _, r := range p {
			if !utf8.Valid(r.Value) {
				t.Errorf("readings holds invalid UTF-8 %q", r.Value)
			}
			good++
		}
	}
	if good != 1 {
		t.Errorf("readings has %d records, want the 1 valid one", good)
	}
	raw := readStream(t, a.Log(), "raw")
	var n int
	for _, p := range raw {
		for _, r := range p {
			n++
			if ct := string(r.HeaderValue(HeaderContentType)); ct != devices.ContentTypeBinary {
				t.Errorf("raw stream: content type %q, want %q", ct, devices.ContentTypeBinary)
			}
		}
	}
	if n != 1 {
		t.Errorf("raw stream has %d records, want 1", n)
	}
}
