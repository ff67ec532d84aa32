package sparkplug

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	pb "github.com/tributary-iot/tributary/devices/sparkplug/sparkplugpb"
)

// AliasStore keeps each node's alias table across restarts. Save is called once per birth, never
// per data message, so it may be a durable (fsync'd) write.
type AliasStore interface {
	// LoadAliases returns what SaveAliases last stored for the node, or nil.
	LoadAliases(nodeKey string) ([]byte, error)
	SaveAliases(nodeKey string, table []byte) error
}

// Limits bound the memory one node can make the host hold.
const (
	MaxAliasesPerNode = 1 << 16
	MaxNodes          = 10000
)

// ErrTooManyAliases refuses a birth defining more aliases than MaxAliasesPerNode, and
// ErrTooManyNodes a birth of a new node past MaxNodes.
var (
	ErrTooManyAliases = errors.New("birth defines too many metric aliases")
	ErrTooManyNodes   = errors.New("too many Sparkplug nodes tracked")
)

// Gap reports Sparkplug sequence numbers that did not arrive: the node sent Got where Expected
// was next, so Missing messages (seq wraps at 256) were lost before they reached the edge.
type Gap struct {
	Expected uint64 `json:"expected_seq"`
	Got      uint64 `json:"seq"`
	Missing  uint64 `json:"missing"`
}

// Result is what [Host.Process] learned from one message.
type Result struct {
	// JSON is the message to store (a [Message]).
	JSON []byte
	// Gap is set when seq did not follow the node's previous message.
	Gap *Gap
	// UnknownAliases counts data metrics whose alias no birth named (the edge came up after the
	// birth and before it was stored, or the node skipped its birth).
	UnknownAliases int
	// Rebirth is set when a host application should ask the node to rebirth: a seq gap, an
	// unknown alias, or data from a node whose birth this host has not seen.
	Rebirth bool
}

// alias is what a birth said about one metric.
type alias struct {
	Name   string `json:"n"`
	Type   uint32 `json:"t"`
	Device string `json:"d,omitempty"`
}

// aliasTable is a node's state as saved: the aliases of its NBIRTH and DBIRTHs, and the types
// of metrics born without an alias (data may send them by name without a datatype).
type aliasTable struct {
	Version int               `json:"v"`
	Aliases map[uint64]alias  `json:"aliases"`
	Types   map[string]uint32 `json:"types"` // "<device>\x00<name>" → datatype
}

type node struct {
	mu    sync.Mutex
	table aliasTable
	born  bool // a birth arrived or was loaded
	seqOK bool // next is known
	next  uint64
}

// Host tracks Sparkplug edge nodes as a host application does: it resolves metric aliases from
// each node's last birth, checks seq, and renders messages as JSON. It is safe for concurrent use;
// messages of one node must be processed in the order they arrived.
type Host struct {
	store AliasStore

	mu    sync.Mutex
	nodes map[string]*node
}

// NewHost returns a host keeping alias tables in store (nil keeps them in memory only).
func NewHost(store AliasStore) *Host {
	return &Host{store: store, nodes: map[string]*node{}}
}

func (h *Host) node(key string) (*node, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if n := h.nodes[key]; n != nil {
		return n, nil
	}
	if len(h.nodes) >= MaxNodes {
		return nil, fmt.Errorf("%w: %d; node %q is not tracked", ErrTooManyNodes, MaxNodes, key)
	}
	n := &node{table: aliasTable{Version: 1, Aliases: map[uint64]alias{}, Types: map[string]uint32{}}}
	if h.store != nil {
		b, err := h.store.LoadAliases(key)
		if err != nil {
			return nil, fmt.Errorf("load aliases of Sparkplug node %q: %w", key, err)
		}
		if b != nil {
			var t aliasTable
			if err := json.Unmarshal(b, &t); err == nil && t.Version == 1 {
				if t.Aliases == nil {
					t.Aliases = map[uint64]alias{}
				}
				if t.Types == nil {
					t.Types = map[string]uint32{}
				}
				n.table, n.born = t, true
			}
		}
	}
	h.nodes[key] = n
	return n, nil
}

// Process checks and renders one message of topic t. A birth's aliases are saved before it
// returns; an error means nothing was learned and the message should not be acknowledged.
func (h *Host) Process(t Topic, p *pb.Payload) (Result, error) {
	n, err := h.node(t.NodeKey())
	if err != nil {
		return Result{}, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()

	var res Result
	switch t.Type {
	case NBIRTH, DBIRTH:
		if err := h.birth(n, t, p); err != nil {
			return Result{}, err
		}
	case NDATA, DDATA, DDEATH:
		res.Rebirth = !n.born
	}
	// seq: every message but NDEATH carries it; NBIRTH starts the count again (it is 0 in 3.0,
	// any value in older nodes), and after NDEATH nothing is expected until the next NBIRTH.
	switch {
	case t.Type == NDEATH:
		n.seqOK = false
	case p.Seq == nil:
	case t.Type == NBIRTH || !n.seqOK:
		n.next, n.seqOK = (p.GetSeq()+1)%256, true
	default:
		got := p.GetSeq() % 256
		if got != n.next {
			res.Gap = &Gap{Expected: n.next, Got: got, Missing: (got + 256 - n.next) % 256}
			res.Rebirth = true
		}
		n.next = (got + 1) % 256
	}

	msg := newMessage(t, p)
	for _, m := range p.GetMetrics() {
		name, typ := m.GetName(), pb.DataType(m.GetDatatype())
		if m.Alias != nil && (name == "" || m.Datatype == nil) {
			a, ok := n.table.Aliases[m.GetAlias()]
			switch {
			case ok && name == "":
				name = a.Name
				fallthrough
			case ok:
				if m.Datatype == nil {
					typ = pb.DataType(a.Type)
				}
			case name == "":
				res.UnknownAliases++
			}
		}
		if m.Datatype == nil && name != "" {
			if dt, ok := n.table.Types[t.Device+"\x00"+name]; ok {
				typ = pb.DataType(dt)
			}
		}
		msg.Metrics = append(msg.Metrics, renderMetric(m, name, typ, 0))
	}
	if res.UnknownAliases > 0 {
		res.Rebirth = true
	}
	res.JSON, err = json.Marshal(msg)
	if err != nil {
		return Result{}, fmt.Errorf("render Sparkplug message: %w", err)
	}
	return res, nil
}

// birth records the aliases and types of an NBIRTH (which starts the node's table again, as every
// device must rebirth after it) or a DBIRTH (which replaces that device's entries), and saves them.
func (h *Host) birth(n *node, t Topic, p *pb.Payload) error {
	next := aliasTable{Version: 1, Aliases: map[uint64]alias{}, Types: map[string]uint32{}}
	if t.Type == DBIRTH {
		for k, a := range n.table.Aliases {
			if a.Device != t.Device {
				next.Aliases[k] = a
			}
		}
		for k, v := range n.table.Types {
			if dev, _, _ := cutNUL(k); dev != t.Device {
				next.Types[k] = v
			}
		}
	}
	for _, m := range p.GetMetrics() {
		if m.GetName() == "" {
			continue
		}
		next.Types[t.Device+"\x00"+m.GetName()] = m.GetDatatype()
		if m.Alias != nil {
			next.Aliases[m.GetAlias()] = alias{Name: m.GetName(), Type: m.GetDatatype(), Device: t.Device}
		}
	}
	if len(next.Aliases) > MaxAliasesPerNode || len(next.Types) > MaxAliasesPerNode {
		return fmt.Errorf("%w: node %q would have %d, at most %d", ErrTooManyAliases, t.NodeKey(), max(len(next.Aliases), len(next.Types)), MaxAliasesPerNode)
	}
	if h.store != nil {
		b, err := json.Marshal(next)
		if err != nil {
			return fmt.Errorf("encode aliases of Sparkplug node %q: %w", t.NodeKey(), err)
		}
		if err := h.store.SaveAliases(t.NodeKey(), b); err != nil {
			return fmt.Errorf("save aliases of Sparkplug node %q: %w", t.NodeKey(), err)
		}
	}
	n.table, n.born = next, true
	return nil
}

func cutNUL(s string) (before, after string, found bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// RebirthRequest is the NCMD payload asking a node to publish its births again
// (Sparkplug 3.0, "Node Control/Rebirth" = true).
func RebirthRequest(timestampMs uint64) ([]byte, error) {
	name, typ, v := "Node Control/Rebirth", uint32(pb.DataType_Boolean), true
	return Encode(&pb.Payload{
		Timestamp: &timestampMs,
		Metrics: []*pb.Payload_Metric{{
			Name: &name, Timestamp: &timestampMs, Datatype: &typ,
			Value: &pb.Payload_Metric_BooleanValue{BooleanValue: v},
		}},
	})
}
