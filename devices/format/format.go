// Package format builds the payload checkers a stream's declared format needs (JSON Schema,
// protobuf, Avro) and decodes such payloads to JSON for consumers. Plain bytes and plain JSON
// need none: [devices.Validate] checks those itself, without allocating.
//
// A [Schema] is identified by an id derived from its text, the same at every edge and at central,
// so a record's schema-id header names its schema wherever the record travels, and an unchanged
// schema never makes a new version. Central's registry serves schemas by these ids in the shape of
// a Confluent Schema Registry, so standard deserializers find them.
package format

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/tributary-iot/tributary/devices"
)

// Formats a stream may declare.
const (
	Bytes    = "bytes"
	JSON     = "json"
	Protobuf = "protobuf"
	Avro     = "avro"
)

// Schema types, as the Confluent Schema Registry names them (schemaType).
const (
	TypeJSON     = "JSON"
	TypeProtobuf = "PROTOBUF"
	TypeAvro     = "AVRO"
)

// Content types of conforming payloads.
const (
	ContentTypeProtobuf = "application/x-protobuf"
	ContentTypeAvro     = "avro/binary"
)

// Spec is a stream's declared format, as written in the edge config.
type Spec struct {
	// Format is bytes, json, protobuf or avro; empty means bytes.
	Format string `yaml:"format"`
	// Schema is a file: a JSON Schema (json), a .proto file or a serialized FileDescriptorSet
	// (protobuf; any other extension than .proto), an Avro schema (avro). Relative paths are
	// relative to the config file's folder.
	Schema string `yaml:"schema"`
	// Message is the protobuf message type's full name (package.Message); it may be left out when
	// the file declares exactly one top-level message.
	Message string `yaml:"message"`
}

// Check reports a spec that cannot be loaded, without reading files.
func (s Spec) Check() error {
	switch s.Format {
	case "", Bytes:
		if s.Schema != "" {
			return errors.New("format bytes takes no schema")
		}
	case JSON:
	case Protobuf, Avro:
		if s.Schema == "" {
			return fmt.Errorf("format %s needs a schema file (schema: FILE)", s.Format)
		}
	default:
		return fmt.Errorf("format %q: want bytes, json, protobuf or avro", s.Format)
	}
	if s.Message != "" && s.Format != Protobuf {
		return errors.New("message is for format protobuf only")
	}
	return nil
}

// Schema is a loaded schema: what the edge checks payloads with, and what central serves.
type Schema struct {
	// Type is the registry's schemaType: JSON, PROTOBUF or AVRO.
	Type string `json:"schemaType"`
	// Text is the schema as the registry serves it: the JSON Schema, the .proto source, the
	// Avro schema. A protobuf schema loaded from a descriptor set has no source: its Text is
	// the base64 of the message's FileDescriptorProto (the registry's "serialized" form).
	Text string `json:"schema"`
	// ID is derived from Type and Text; see [ID].
	ID int32 `json:"id"`
	// Message is the protobuf message's full name, Index its Confluent message-index path.
	Message string `json:"message,omitempty"`
	Index   []int  `json:"index,omitempty"`
	// Descriptor is a protobuf schema's serialized FileDescriptorSet (the file and its imports),
	// so consumers decode without compiling .proto source.
	Descriptor []byte `json:"descriptor,omitempty"`

	check   func([]byte) (devices.Reason, string)
	decode  func([]byte) ([]byte, error)
	content string
}

// ID is the schema id of a schema's type and text: the first 31 bits of their SHA-256, never 0.
// Every edge computes the same id for the same schema, so ids need no coordination; a registry
// that ever saw two schemas with one id reports it.
func ID(schemaType, text string) int32 {
	h := sha256.Sum256([]byte(schemaType + "\x00" + text))
	id := int32(binary.BigEndian.Uint32(h[:4]) & 0x7fffffff)
	if id == 0 {
		id = 1
	}
	return id
}

// Load reads and compiles the schema of a spec; nil for bytes and plain json, which need none.
// dir resolves relative schema paths.
func Load(spec Spec, dir string) (*Schema, error) {
	if err := spec.Check(); err != nil {
		return nil, err
	}
	if spec.Schema == "" {
		return nil, nil
	}
	path := spec.Schema
	if !filepath.IsAbs(path) && dir != "" {
		path = filepath.Join(dir, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read schema: %w", err)
	}
	var s *Schema
	switch spec.Format {
	case JSON:
		s, err = newJSONSchema(string(data))
	case Protobuf:
		if strings.HasSuffix(path, ".proto") {
			s, err = newProtoSource(path, string(data), spec.Message)
		} else {
			s, err = newProtoDescriptorSet(data, spec.Message)
		}
	case Avro:
		s, err = newAvro(string(data))
	}
	if err != nil {
		return nil, fmt.Errorf("schema %s: %w", spec.Schema, err)
	}
	return s, nil
}

// Parse rebuilds a schema from its registry form, for decoding values: a schemas-stream record,
// or what a registry serves (a protobuf schema without Descriptor is compiled from its Text, the
// message picked by Index; "AVRO" is also what an empty Type means there).
func Parse(s Schema) (*Schema, error) {
	var out *Schema
	var err error
	switch s.Type {
	case TypeJSON:
		out, err = newJSONSchema(s.Text)
	case TypeAvro, "":
		out, err = newAvro(s.Text)
	case TypeProtobuf:
		if s.Descriptor == nil {
			out, err = newProtoRegistryText(s.Text, s.Index)
		} else {
			out, err = newProtoFromSet(s.Descriptor, s.Message, s.Text)
		}
	default:
		return nil, fmt.Errorf("schema type %q: want JSON, PROTOBUF or AVRO", s.Type)
	}
	if err != nil {
		return nil, err
	}
	out.ID = s.ID
	return out, nil
}

// Check checks a payload; it implements [devices.Checker].
func (s *Schema) Check(payload []byte) (devices.Reason, string) { return s.check(payload) }

// ContentType implements [devices.Checker].
func (s *Schema) ContentType() string { return s.content }

// DecodeJSON returns a payload as JSON: itself for JSON schemas, the decoded message or datum
// for protobuf and Avro.
func (s *Schema) DecodeJSON(payload []byte) ([]byte, error) { return s.decode(payload) }

// Record is the record value that carries a stream's schema to central: the schema and its
// subject, as JSON (see [ParseRecord]).
func (s *Schema) Record(stream string) ([]byte, error) {
	return json.Marshal(SubjectSchema{Subject: Subject(stream), Stream: stream, Schema: *s})
}

// SubjectSchema is a schema as registered under a subject.
type SubjectSchema struct {
	Subject string `json:"subject"`
	Stream  string `json:"stream"`
	Schema
}

// ParseRecord reads a schemas-stream record value.
func ParseRecord(value []byte) (SubjectSchema, error) {
	var s SubjectSchema
	if err := json.Unmarshal(value, &s); err != nil {
		return s, fmt.Errorf("schema record: %w", err)
	}
	if s.Subject == "" || s.Text == "" {
		return s, errors.New("schema record: no subject or schema")
	}
	if want := ID(s.Type, s.Text); s.ID != want {
		return s, fmt.Errorf("schema record for %s: id %d, but its text has id %d", s.Subject, s.ID, want)
	}
	return s, nil
}

// Subject is the registry subject of a stream's values (Confluent's TopicNameStrategy).
func Subject(stream string) string { return stream + "-value" }

// WirePrefix returns the Confluent wire-format prefix of a value: magic byte 0, the 4-byte
// big-endian schema id and, for protobuf, the message-index path as zigzag varints (a lone 0
// byte for the first top-level message).
func WirePrefix(dst []byte, id int32, protobuf bool, index []int) []byte {
	dst = append(dst, 0)
	dst = binary.BigEndian.AppendUint32(dst, uint32(id))
	if !protobuf {
		return dst
	}
	if len(index) == 1 && index[0] == 0 || len(index) == 0 {
		return append(dst, 0)
	}
	dst = binary.AppendVarint(dst, int64(len(index)))
	for _, i := range index {
		dst = binary.AppendVarint(dst, int64(i))
	}
	return dst
}
