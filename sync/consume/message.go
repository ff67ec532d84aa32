package consume

import (
	"encoding/json"
	"time"
	"unicode/utf8"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/protocol"
)

// Message is one record of the merged stream, in DESIGN's JSON-lines shape. Value holds the
// payload when it is JSON; otherwise ValueBase64 holds it.
type Message struct {
	Stream        string            `json:"stream"`
	Partition     int               `json:"partition"`
	Offset        int64             `json:"offset"`
	Key           string            `json:"key"`
	Timestamp     time.Time         `json:"timestamp"`
	Edge          string            `json:"edge"`
	EdgePartition int               `json:"edge_partition"`
	EdgeOffset    int64             `json:"edge_offset"`
	Headers       map[string]string `json:"headers"`
	Value         json.RawMessage   `json:"value,omitempty"`
	ValueBase64   []byte            `json:"value_base64,omitempty"`
}

// NewMessage converts a central record; provenance headers become the edge fields.
func NewMessage(stream string, partition int, offset int64, rec *storage.Record) Message {
	m := Message{Stream: stream, Partition: partition, Offset: offset, Key: string(rec.Key),
		Timestamp: rec.Timestamp.UTC(), EdgePartition: -1, EdgeOffset: -1, Headers: map[string]string{}}
	pv, _ := protocol.ParseProvenance(rec.Headers)
	m.Edge, m.EdgePartition, m.EdgeOffset = pv.Edge, pv.Partition, pv.Offset
	for _, h := range rec.Headers {
		switch h.Key {
		case protocol.ProvEdge, protocol.ProvEdgePartition, protocol.ProvEdgeOffset:
			// the edge fields above
		default:
			m.Headers[h.Key] = string(h.Value)
		}
	}
	// json.Valid checks syntax only; a value holding bytes that are not UTF-8 would make the whole
	// batch unreadable for a strict decoder, so it travels base64-encoded like any binary value.
	if len(rec.Value) > 0 && json.Valid(rec.Value) && utf8.Valid(rec.Value) {
		m.Value = append(json.RawMessage(nil), rec.Value...)
	} else {
		m.ValueBase64 = append([]byte(nil), rec.Value...)
	}
	return m
}

// Payload returns the record's value bytes, whichever field carries them.
func (m *Message) Payload() []byte {
	if m.Value != nil {
		return m.Value
	}
	return m.ValueBase64
}

// Batch is the answer of a fetch.
type Batch struct {
	Messages []Message `json:"messages"`
	// Offsets are the next offsets per partition: pass them back to continue.
	Offsets map[int]int64 `json:"offsets"`
	// Ends are the partitions' end offsets when the fetch ran.
	Ends map[int]int64 `json:"ends"`
}

// StreamInfo describes a central stream.
type StreamInfo struct {
	Name       string          `json:"name"`
	Partitions []PartitionInfo `json:"partitions"`
}

// PartitionInfo is one partition's offsets.
type PartitionInfo struct {
	Partition int   `json:"partition"`
	Start     int64 `json:"start"`
	End       int64 `json:"end"`
}
