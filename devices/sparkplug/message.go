package sparkplug

import (
	"encoding/base64"
	"fmt"

	// google.golang.org/protobuf decodes and encodes the payloads through the code protoc-gen-go
	// generated from sparkplug_b.proto (see sparkplugpb); the edge already links it through the
	// Prometheus client, so it costs the binary nothing more.
	"google.golang.org/protobuf/proto"

	pb "github.com/tributary-iot/tributary/devices/sparkplug/sparkplugpb"
)

// Message is a Sparkplug message as the edge stores it: JSON with every metric's name resolved,
// its type named, and its value decoded, so consumers at central read it without knowing
// Sparkplug, protobuf, or the births that defined the aliases.
type Message struct {
	Type      MessageType `json:"type"`
	Group     string      `json:"group"`
	Node      string      `json:"node"`
	Device    string      `json:"device,omitempty"`
	Seq       *uint64     `json:"seq,omitempty"`
	Timestamp *uint64     `json:"timestamp,omitempty"` // ms since the epoch, as the node stamped the payload
	UUID      string      `json:"uuid,omitempty"`
	Body      string      `json:"body_base64,omitempty"`
	Metrics   []Metric    `json:"metrics"`
}

// Metric is one metric of a [Message].
type Metric struct {
	// Name is the metric's name, from the message or, for an aliased metric, from the last birth.
	// Empty when the alias is unknown (no birth named it): see Alias.
	Name  string  `json:"name"`
	Alias *uint64 `json:"alias,omitempty"`
	// Type is the DataType's name ("Float", "Int32", ...), from the metric or its birth.
	Type string `json:"type"`
	// Value is the decoded value: numbers, booleans, strings, arrays for the array types, base64
	// for Bytes and File; null when the metric is null.
	Value        any            `json:"value"`
	Timestamp    *uint64        `json:"timestamp,omitempty"` // ms since the epoch
	IsHistorical bool           `json:"is_historical,omitempty"`
	IsTransient  bool           `json:"is_transient,omitempty"`
	IsNull       bool           `json:"is_null,omitempty"`
	Properties   map[string]any `json:"properties,omitempty"`
	Metadata     map[string]any `json:"metadata,omitempty"`
}

// Decode parses a Sparkplug B payload.
func Decode(payload []byte) (*pb.Payload, error) {
	p := &pb.Payload{}
	if err := proto.Unmarshal(payload, p); err != nil {
		return nil, fmt.Errorf("decode Sparkplug B payload: %w", err)
	}
	return p, nil
}

// Encode serialises a payload, for nodes, simulators and the host's commands.
func Encode(p *pb.Payload) ([]byte, error) {
	return proto.Marshal(p)
}

func renderMetric(m *pb.Payload_Metric, name string, t pb.DataType, depth int) Metric {
	out := Metric{Name: name, Type: TypeName(uint32(t)), IsHistorical: m.GetIsHistorical(), IsTransient: m.GetIsTransient(), IsNull: m.GetIsNull()}
	if m.Alias != nil {
		a := m.GetAlias()
		out.Alias = &a
	}
	if m.Timestamp != nil {
		ts := m.GetTimestamp()
		out.Timestamp = &ts
	}
	if !out.IsNull {
		out.Value = metricValue(t, m, depth)
	}
	if ps := m.GetProperties(); ps != nil {
		out.Properties = propertySetValue(ps, depth)
	}
	if md := m.GetMetadata(); md != nil {
		out.Metadata = metadataValue(md)
	}
	return out
}

func metadataValue(md *pb.Payload_MetaData) map[string]any {
	out := map[string]any{}
	if md.IsMultiPart != nil {
		out["is_multi_part"] = md.GetIsMultiPart()
	}
	if md.ContentType != nil {
		out["content_type"] = md.GetContentType()
	}
	if md.Size != nil {
		out["size"] = md.GetSize()
	}
	if md.Seq != nil {
		out["seq"] = md.GetSeq()
	}
	if md.FileName != nil {
		out["file_name"] = md.GetFileName()
	}
	if md.FileType != nil {
		out["file_type"] = md.GetFileType()
	}
	if md.Md5 != nil {
		out["md5"] = md.GetMd5()
	}
	if md.Description != nil {
		out["description"] = md.GetDescription()
	}
	return out
}

func newMessage(t Topic, p *pb.Payload) Message {
	m := Message{Type: t.Type, Group: t.Group, Node: t.Node, Device: t.Device, UUID: p.GetUuid(), Metrics: make([]Metric, 0, len(p.GetMetrics()))}
	if p.Seq != nil {
		s := p.GetSeq()
		m.Seq = &s
	}
	if p.Timestamp != nil {
		ts := p.GetTimestamp()
		m.Timestamp = &ts
	}
	if len(p.GetBody()) > 0 {
		m.Body = base64.StdEncoding.EncodeToString(p.GetBody())
	}
	return m
}
