package kafkasink

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/tributary-iot/tributary/internal/testprog"
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

// A standard deserializer written elsewhere decodes what the sink frames: python3-confluent-kafka's
// ProtobufDeserializer, with the message class protoc generates from the stream's .proto. (Its
// version in Debian 12 reads message indexes as unsigned varints, not the zigzag ones of the
// Confluent format; the two agree on the first message, the common case tested here.)
func TestConfluentFramingPythonProtobufDeserializer(t *testing.T) {
	py := testprog.Python(t, "python3-confluent-kafka python3-protobuf python3-requests",
		"confluent_kafka.schema_registry.protobuf", "google.protobuf")
	protoc := testprog.Find(t, "protoc", "protobuf-compiler", "/usr/bin")
	dir := t.TempDir()
	src, err := os.ReadFile(filepath.Join("..", "..", "devices", "format", "testdata", "reading.proto"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "reading.proto"), src, 0o600); err != nil {
		t.Fatal(err)
	}
	testprog.Output(t, time.Minute, protoc, "--proto_path="+dir, "--python_out="+dir, filepath.Join(dir, "reading.proto"))
	payload := protowire.AppendTag(nil, 1, protowire.BytesType)
	payload = protowire.AppendString(payload, "boiler-1")
	payload = protowire.AppendTag(payload, 2, protowire.VarintType)
	payload = protowire.AppendVarint(payload, 42)
	rec := storage.Record{Value: payload, Headers: []storage.Header{
		{Key: "schema-id", Value: []byte("1234567")}, {Key: "schema-index", Value: []byte("0")}}}
	framed := confluentValue(rec)
	script := `
import sys, binascii
sys.path.insert(0, sys.argv[1])
import reading_pb2
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer
from google.protobuf import json_format
msg = ProtobufDeserializer(reading_pb2.Reading)(binascii.unhexlify(sys.argv[2]), None)
print(json_format.MessageToJson(msg, indent=None))
`
	out := testprog.Output(t, time.Minute, py, "-c", script, dir, hex.EncodeToString(framed))
	if got := strings.TrimSpace(string(out)); got != `{"device": "boiler-1", "seq": "42"}` {
		t.Fatalf("python's ProtobufDeserializer decoded %s", got)
	}
}
