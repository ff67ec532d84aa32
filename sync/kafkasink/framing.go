package kafkasink

import (
	"encoding/binary"
	"strconv"
	"strings"

	"github.com/tributary-iot/tributary/storage"
)

// Record headers the edge sets on readings of streams with a schema (edge.HeaderSchemaID,
// edge.HeaderSchemaIndex).
const (
	headerSchemaID    = "schema-id"
	headerSchemaIndex = "schema-index"
)

// confluentValue frames a value in the Confluent wire format when its record names a schema:
// magic byte 0, the schema id as 4 bytes big-endian, then for protobuf (a schema-index header)
// the message-index path as zigzag varints, a lone 0 for the first message. Records without a
// schema id keep their value.
func confluentValue(rec storage.Record) []byte {
	id, err := strconv.ParseInt(string(rec.HeaderValue(headerSchemaID)), 10, 32)
	if err != nil || id <= 0 {
		return rec.Value
	}
	out := make([]byte, 0, len(rec.Value)+8)
	out = append(out, 0)
	out = binary.BigEndian.AppendUint32(out, uint32(id))
	if index := rec.HeaderValue(headerSchemaIndex); index != nil {
		parts := strings.Split(string(index), ".")
		if len(parts) == 1 && parts[0] == "0" {
			out = append(out, 0)
		} else {
			out = binary.AppendVarint(out, int64(len(parts)))
			for _, p := range parts {
				n, _ := strconv.Atoi(p)
				out = binary.AppendVarint(out, int64(n))
			}
		}
	}
	return append(out, rec.Value...)
}
