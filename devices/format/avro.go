package format

import (
	"encoding/json"

	"github.com/tributary-iot/tributary/devices"
)

func newAvro(text string) (*Schema, error) {
	schema, err := parseAvroSchema(text)
	if err != nil {
		return nil, err
	}
	s := &Schema{Type: TypeAvro, Text: text, ID: ID(TypeAvro, text), content: ContentTypeAvro}
	s.check = func(payload []byte) (devices.Reason, string) {
		if _, err := decodeAvroDatum(schema, payload); err != nil {
			return devices.ReasonNotAvro, "avro " + schema.kind + ": " + err.Error()
		}
		return devices.ReasonNone, ""
	}
	s.decode = func(payload []byte) ([]byte, error) {
		v, err := decodeAvroDatum(schema, payload)
		if err != nil {
			return nil, err
		}
		return json.Marshal(v)
	}
	return s, nil
}
