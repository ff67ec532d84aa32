package kafkasink

import (
	"context"
	"encoding/binary"
	"strconv"
	"strings"
	"time"

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
	id, ok := schemaID(rec)
	if !ok {
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

// schemaID is the schema id a record's schema-id header names, if any.
func schemaID(rec storage.Record) (int32, bool) {
	id, err := strconv.ParseInt(string(rec.HeaderValue(headerSchemaID)), 10, 32)
	if err != nil || id <= 0 {
		return 0, false
	}
	return int32(id), true
}

// schemaWaitLog is how often the sink says it is still waiting for a schema.
const schemaWaitLog = 30 * time.Second

// awaitSchema returns once central's registry serves the schema a framed record names (at once
// for records without one, or when framing is off), or with ctx's error. Ids once served are
// remembered, so the registry is asked only on an id's first sight.
func (s *Sink) awaitSchema(ctx context.Context, rec storage.Record) error {
	if !s.cfg.ConfluentFraming || s.cfg.SchemaKnown == nil {
		return nil
	}
	id, ok := schemaID(rec)
	if !ok || s.knownSchemas[id] {
		return nil
	}
	start, logged := time.Now(), time.Now()
	for {
		ok, err := s.cfg.SchemaKnown(ctx, id)
		if ok {
			s.knownSchemas[id] = true
			if waited := time.Since(start); waited > time.Second {
				s.logger.Info("kafka sink: schema reached central's registry; producing again", "schema_id", id, "waited", waited.Round(time.Millisecond))
			}
			return nil
		}
		if time.Since(logged) >= schemaWaitLog {
			logged = time.Now()
			s.logger.Warn("kafka sink holds values framed with a schema central's registry does not serve yet; it produces them once the edge's schemas stream arrives",
				"schema_id", id, "waiting", time.Since(start).Round(time.Second), "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
