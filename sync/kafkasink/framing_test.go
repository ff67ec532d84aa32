package kafkasink

import (
	"bytes"
	"testing"

	"github.com/tributary-iot/tributary/storage"
)

func TestConfluentValue(t *testing.T) {
	rec := func(headers ...string) storage.Record {
		r := storage.Record{Value: []byte("v")}
		for i := 0; i < len(headers); i += 2 {
			r.Headers = append(r.Headers, storage.Header{Key: headers[i], Value: []byte(headers[i+1])})
		}
		return r
	}
	for _, c := range []struct {
		rec  storage.Record
		want []byte
	}{
		{rec(), []byte("v")},
		{rec("schema-id", "258"), []byte{0, 0, 0, 1, 2, 'v'}},
		{rec("schema-id", "258", "schema-index", "0"), []byte{0, 0, 0, 1, 2, 0, 'v'}},
		{rec("schema-id", "258", "schema-index", "1.0"), []byte{0, 0, 0, 1, 2, 4, 2, 0, 'v'}},
		{rec("schema-id", "junk"), []byte("v")},
	} {
		if got := confluentValue(c.rec); !bytes.Equal(got, c.want) {
			t.Errorf("%v: %v, want %v", c.rec.Headers, got, c.want)
		}
	}
}
