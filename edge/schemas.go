package edge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/devices/format"
	"github.com/tributary-iot/tributary/storage"
)

// Record headers of readings on streams with a schema.
const (
	// HeaderSchemaID is the decimal id of the schema the reading was checked against, the id
	// central's registry serves it under (format.ID), so a record keeps its schema version after
	// the stream's schema changes.
	HeaderSchemaID = "schema-id"
	// HeaderSchemaIndex is, for protobuf, the message's Confluent message-index path
	// ("0", "1.0"), for framing values in the Confluent wire format.
	HeaderSchemaIndex = "schema-index"
	// HeaderReasonDetail says, on a dead letter, which rule the payload broke and where.
	HeaderReasonDetail = "reason-detail"
)

// loadSchemas compiles the schema of every declared stream that has one.
func loadSchemas(cfg Config) (map[string]*format.Schema, error) {
	out := map[string]*format.Schema{}
	for name, sc := range cfg.Streams {
		s, err := format.Load(sc.Spec, cfg.ConfigDir)
		if err != nil {
			return nil, fmt.Errorf("streams.%s: %w", name, err)
		}
		if s != nil {
			out[name] = s
		}
	}
	return out, nil
}

// policy is a stream's validation policy, with its schema.
func (a *Agent) policy(stream string) devices.Policy {
	p := a.cfg.policy(stream)
	if s, ok := a.schemas[stream]; ok {
		p.Schema = s
	}
	return p
}

// recordSchemas appends each stream's schema to the schemas stream, which travels to central like
// any stream, unless the stream's last recorded schema is the same one: a changed schema becomes
// a new version at central, an unchanged one adds nothing.
func (a *Agent) recordSchemas(ctx context.Context) error {
	if len(a.schemas) == 0 {
		return nil
	}
	st, err := a.log.CreateStream(devices.SchemaStream, storage.StreamConfig{Partitions: 1})
	if err != nil {
		return fmt.Errorf("create schemas stream: %w", err)
	}
	last := map[string]int32{}
	r := st.Partition(0).NewReader(0, nil)
	for {
		e, err := r.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read schemas stream: %w", err)
		}
		if e.Gap != nil {
			continue
		}
		if s, err := format.ParseRecord(e.Value); err == nil {
			last[s.Stream] = s.ID
		}
	}
	names := make([]string, 0, len(a.schemas))
	for name := range a.schemas {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		s := a.schemas[name]
		if last[name] == s.ID {
			continue
		}
		value, err := s.Record(name)
		if err != nil {
			return err
		}
		if _, _, err := st.Append(ctx, storage.Record{Key: []byte(name), Value: value, Timestamp: time.Now(),
			Headers: []storage.Header{{Key: HeaderSchemaID, Value: strconv.AppendInt(nil, int64(s.ID), 10)}}}); err != nil {
			return fmt.Errorf("record schema of %s: %w", name, err)
		}
		a.logger.Info("stream schema recorded", "stream", name, "type", s.Type, "schema_id", s.ID)
	}
	return nil
}

// schemaHeaders appends a schema's record headers to buf and headers.
func schemaHeaders(s *format.Schema, buf []byte, headers []storage.Header) ([]byte, []storage.Header) {
	start := len(buf)
	buf = strconv.AppendInt(buf, int64(s.ID), 10)
	headers = append(headers, storage.Header{Key: HeaderSchemaID, Value: buf[start:len(buf):len(buf)]})
	if s.Type == format.TypeProtobuf {
		start = len(buf)
		for i, n := range s.Index {
			if i > 0 {
				buf = append(buf, '.')
			}
			buf = strconv.AppendInt(buf, int64(n), 10)
		}
		headers = append(headers, storage.Header{Key: HeaderSchemaIndex, Value: buf[start:len(buf):len(buf)]})
	}
	return buf, headers
}
