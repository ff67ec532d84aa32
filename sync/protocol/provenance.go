package protocol

import (
	"strconv"
	"time"

	"github.com/tributary-iot/tributary/storage"
)

// Provenance is where a central record came from, kept in headers central writes on every record
// it stores (the Prov constants): the edge, the edge partition (the lane) and the record's offset
// there, the lane's incarnation when the edge sends one, and when central received it. Edge,
// Partition, Offset and Incarnation are central's dedupe key.
type Provenance struct {
	Edge        string
	Partition   int   // the edge partition; -1 when absent or not a number
	Offset      int64 // the offset in the edge partition; -1 when absent or not a number
	Incarnation string
	CentralTime time.Time // unix milliseconds on the wire; zero when absent
}

// IsProvenance reports whether a header key is one of provenance's: central writes them, so
// the receiver drops any an edge sent.
func IsProvenance(key string) bool {
	switch key {
	case ProvEdge, ProvEdgePartition, ProvEdgeOffset, ProvEdgeIncarnation, ProvCentralTime:
		return true
	}
	return false
}

// ProvenanceEncoder appends the provenance headers of many records of one lane: the lane's
// fields are formatted once, each record adds its offset.
type ProvenanceEncoder struct {
	edge, partition, incarnation, centralTime []byte
	off                                       [20]byte
}

// NewProvenanceEncoder formats p's lane fields (p.Offset is ignored).
func NewProvenanceEncoder(p Provenance) *ProvenanceEncoder {
	e := &ProvenanceEncoder{edge: []byte(p.Edge), partition: strconv.AppendInt(nil, int64(p.Partition), 10),
		centralTime: strconv.AppendInt(nil, p.CentralTime.UnixMilli(), 10)}
	if p.Incarnation != "" {
		e.incarnation = []byte(p.Incarnation)
	}
	return e
}

// Append appends the headers of the record at offset to hs. The offset's value is valid until
// the next Append: storage copies a record's headers when it takes the record.
func (e *ProvenanceEncoder) Append(hs []storage.Header, offset int64) []storage.Header {
	hs = append(hs,
		storage.Header{Key: ProvEdge, Value: e.edge},
		storage.Header{Key: ProvEdgePartition, Value: e.partition},
		storage.Header{Key: ProvEdgeOffset, Value: strconv.AppendInt(e.off[:0], offset, 10)},
		storage.Header{Key: ProvCentralTime, Value: e.centralTime})
	if e.incarnation != nil {
		hs = append(hs, storage.Header{Key: ProvEdgeIncarnation, Value: e.incarnation})
	}
	return hs
}

// ParseProvenance reads a record's provenance. ok is true when edge, partition and offset are all
// present and valid: the record was forwarded by an edge. Each field is filled on its own
// otherwise, so a reader can show what there is.
func ParseProvenance(hs []storage.Header) (p Provenance, ok bool) {
	p.Partition, p.Offset = -1, -1
	var hasEdge bool
	for _, h := range hs {
		switch h.Key {
		case ProvEdge:
			if !hasEdge {
				p.Edge, hasEdge = string(h.Value), true
			}
		case ProvEdgePartition:
			if p.Partition < 0 {
				if n, err := strconv.Atoi(string(h.Value)); err == nil {
					p.Partition = n
				}
			}
		case ProvEdgeOffset:
			if p.Offset < 0 {
				if n, err := strconv.ParseInt(string(h.Value), 10, 64); err == nil {
					p.Offset = n
				}
			}
		case ProvEdgeIncarnation:
			if p.Incarnation == "" {
				p.Incarnation = string(h.Value)
			}
		case ProvCentralTime:
			if n, err := strconv.ParseInt(string(h.Value), 10, 64); err == nil && p.CentralTime.IsZero() {
				p.CentralTime = time.UnixMilli(n).UTC()
			}
		}
	}
	return p, hasEdge && p.Partition >= 0 && p.Offset >= 0
}
