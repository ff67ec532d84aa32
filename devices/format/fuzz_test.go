package format

import (
	"strconv"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/tributary-iot/tributary/devices"
)

func itoa(n int) string { return strconv.Itoa(n) }

func mustFiles(t testing.TB, desc []byte) *protoregistry.Files {
	t.Helper()
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(desc, &set); err != nil {
		t.Fatal(err)
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// The decoders on the ingest path never panic, and what they accept decodes to JSON.
func fuzzChecker(f *testing.F, s *Schema, seeds ...[]byte) {
	for _, seed := range seeds {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		reason, detail := s.Check(payload)
		if reason != devices.ReasonNone {
			if detail == "" {
				t.Fatalf("refused as %s without a detail", reason)
			}
			return
		}
		if _, err := s.DecodeJSON(payload); err != nil {
			t.Fatalf("accepted but not decodable: %v", err)
		}
	})
}

func FuzzProtobuf(f *testing.F) {
	s := load(f, Spec{Format: Protobuf, Schema: "reading.proto", Message: "plant.v1.Reading"})
	fuzzChecker(f, s, protoReading(f, s, "boiler-1", 7, 21.5), []byte{0x0a, 0xff}, nil)
}

func FuzzAvro(f *testing.F) {
	s := load(f, Spec{Format: Avro, Schema: "reading.avsc"})
	fuzzChecker(f, s, []byte("\x10boiler-1\x0e\x00\x00\x00\x00\x00\x80\x35\x40\x00"), []byte{0xff, 0xff, 0xff, 0xff, 0x0f})
}

func FuzzJSONSchema(f *testing.F) {
	s := load(f, Spec{Format: JSON, Schema: "reading.schema.json"})
	fuzzChecker(f, s, []byte(`{"seq":1,"temp":20}`), []byte(`{"seq":1e400}`), []byte(`[`))
}
