package format

import (
	"encoding/json"
	"fmt"
	"strconv"

	// Avro binary encoding against a schema file, pinned at v2.31.0 in go.mod: pure Go, decodes
	// into generic values for the JSON view without generated code.
	"github.com/hamba/avro/v2"

	"github.com/tributary-iot/tributary/devices"
)

func newAvro(text string) (*Schema, error) {
	schema, err := avro.Parse(text)
	if err != nil {
		return nil, err
	}
	s := &Schema{Type: TypeAvro, Text: text, ID: ID(TypeAvro, text), content: ContentTypeAvro}
	s.check = func(payload []byte) (devices.Reason, string) {
		if _, err := decodeAvro(schema, payload); err != nil {
			return devices.ReasonNotAvro, "avro " + string(schema.Type()) + ": " + err.Error()
		}
		return devices.ReasonNone, ""
	}
	s.decode = func(payload []byte) ([]byte, error) {
		v, err := decodeAvro(schema, payload)
		if err != nil {
			return nil, err
		}
		return json.Marshal(v)
	}
	return s, nil
}

// decodeAvro decodes one datum and refuses bytes after it: a datum of another schema often
// decodes as a prefix of this one. Avro's binary encoding is canonical, so the datum's own
// encoding tells where it ends.
func decodeAvro(schema avro.Schema, payload []byte) (any, error) {
	var v any
	if err := avro.Unmarshal(schema, payload, &v); err != nil {
		return nil, err
	}
	again, err := avro.Marshal(schema, v)
	if err != nil {
		return nil, fmt.Errorf("re-encode: %w", err)
	}
	if len(again) != len(payload) {
		return nil, fmt.Errorf("datum ends at byte %s of %d", strconv.Itoa(len(again)), len(payload))
	}
	return v, nil
}
