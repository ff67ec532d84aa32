package sparkplug

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Namespace is the first topic level of every Sparkplug B message.
const Namespace = "spBv1.0"

// MessageType is the third level of a Sparkplug topic.
type MessageType string

// The message types an edge node publishes, and the commands a host application sends it.
const (
	NBIRTH MessageType = "NBIRTH"
	NDATA  MessageType = "NDATA"
	NDEATH MessageType = "NDEATH"
	DBIRTH MessageType = "DBIRTH"
	DDATA  MessageType = "DDATA"
	DDEATH MessageType = "DDEATH"
	NCMD   MessageType = "NCMD"
	DCMD   MessageType = "DCMD"
)

// ErrInvalidTopic reports a topic under spBv1.0/ that is not a Sparkplug topic an edge node may
// publish to.
var ErrInvalidTopic = errors.New("invalid Sparkplug topic")

// Topic is a parsed spBv1.0/<group>/<type>/<node>[/<device>] topic.
type Topic struct {
	Group  string
	Type   MessageType
	Node   string
	Device string // empty for node-level messages (NBIRTH, NDATA, NDEATH)
}

// IsTopic reports whether topic is in the Sparkplug B namespace.
func IsTopic(topic string) bool {
	return strings.HasPrefix(topic, Namespace+"/")
}

// ParseTopic parses an edge node's publish topic. Node messages have four levels and device
// messages five; the ids must be non-empty UTF-8 without '/', '+' or '#' (Sparkplug 3.0, 4.1.1).
// Commands (NCMD, DCMD) and the host's STATE topic are refused: they travel to nodes, not from them.
func ParseTopic(topic string) (Topic, error) {
	levels := strings.Split(topic, "/")
	if len(levels) < 4 || len(levels) > 5 || levels[0] != Namespace {
		return Topic{}, fmt.Errorf("%w %q: want %s/<group>/<type>/<node>[/<device>]", ErrInvalidTopic, topic, Namespace)
	}
	t := Topic{Group: levels[1], Type: MessageType(levels[2]), Node: levels[3]}
	if len(levels) == 5 {
		t.Device = levels[4]
	}
	for _, id := range levels[1:] {
		if id == "" || strings.ContainsAny(id, "+#") || !utf8.ValidString(id) {
			return Topic{}, fmt.Errorf("%w %q: empty level or one holding '+', '#' or invalid UTF-8", ErrInvalidTopic, topic)
		}
	}
	switch t.Type {
	case NBIRTH, NDATA, NDEATH:
		if t.Device != "" {
			return Topic{}, fmt.Errorf("%w %q: %s is a node message and takes no device level", ErrInvalidTopic, topic, t.Type)
		}
	case DBIRTH, DDATA, DDEATH:
		if t.Device == "" {
			return Topic{}, fmt.Errorf("%w %q: %s needs a device level", ErrInvalidTopic, topic, t.Type)
		}
	case NCMD, DCMD:
		return Topic{}, fmt.Errorf("%w %q: %s is a command to the node; nodes do not publish it", ErrInvalidTopic, topic, t.Type)
	default:
		return Topic{}, fmt.Errorf("%w %q: unknown message type %q", ErrInvalidTopic, topic, t.Type)
	}
	return t, nil
}

// Key is the log key of the message: <group>/<node>/<device> for device messages and
// <group>/<node> for node messages, so every device's readings keep their order in one partition
// and a node's births, deaths and gap markers keep theirs.
func (t Topic) Key() string {
	if t.Device == "" {
		return t.NodeKey()
	}
	return t.Group + "/" + t.Node + "/" + t.Device
}

// NodeKey is <group>/<node>: the key of node messages and of seq gap markers, and the name under
// which a node's metric aliases are kept.
func (t Topic) NodeKey() string { return t.Group + "/" + t.Node }

// Owner is the device id a node's credentials are registered under: <group>:<node>. A node may
// publish its own topics, spBv1.0/<group>/+/<node>[/<device>], as a device publishes under
// devices/<id>/; other groups or nodes need extra topics in the registry.
func (t Topic) Owner() string { return t.Group + ":" + t.Node }

// CommandTopic is where a host application sends this node commands (NCMD).
func (t Topic) CommandTopic() string {
	return Namespace + "/" + t.Group + "/" + string(NCMD) + "/" + t.Node
}
