package firmwaresim

import (
	"fmt"
	"strings"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"google.golang.org/protobuf/proto"

	"github.com/tributary-iot/tributary/devices/sparkplug"
	pb "github.com/tributary-iot/tributary/devices/sparkplug/sparkplugpb"
)

// SparkplugConfig makes every simulated device a Sparkplug B edge node: node <id> of Group,
// carrying one device, Device. Each connection starts with NBIRTH (seq 0, a new bdSeq) and
// DBIRTH, which name the metrics and give them aliases; readings follow as DDATA carrying only
// aliases, values and timestamps, with seq counting 0-255 per node. The MQTT will is the node's
// NDEATH; a run that ends cleanly publishes NDEATH before it disconnects.
//
// The node's MQTT client id and username are <group>:<node>, the device id a Tributary edge
// authorizes Sparkplug nodes under. Verification keys are <group>/<node>/<device>, the record key.
type SparkplugConfig struct {
	Group  string // default "sim"
	Device string // default "sensor"
	// SkipFraction is the probability per reading that the node skips a seq, as if a message
	// were lost before the edge: the edge records a sparkplug_seq gap (and may ask for a
	// rebirth). The reading itself is still sent; SeqSkipped counts the skips.
	SkipFraction float64
}

// Sparkplug metric aliases of the simulator's DBIRTH; DDATA sends these numbers only.
const (
	aliasSeq uint64 = iota + 1
	aliasTemperature
	aliasHumidity
	aliasPressure
	aliasVibration
	aliasBattery
)

// SparkplugSeqMetric is the metric carrying the reading's seq (1, 2, ...) that verification checks;
// Sparkplug's own seq wraps at 256 and so cannot tell a lost reading from 256 of them.
const SparkplugSeqMetric = "seq"

var sparkplugMetrics = []struct {
	alias uint64
	name  string
	typ   pb.DataType
}{
	{aliasSeq, SparkplugSeqMetric, pb.DataType_UInt64},
	{aliasTemperature, "temperature", pb.DataType_Double},
	{aliasHumidity, "humidity", pb.DataType_Double},
	{aliasPressure, "pressure", pb.DataType_Double},
	{aliasVibration, "vibration", pb.DataType_Double},
	{aliasBattery, "battery", pb.DataType_Double},
}

func (c *SparkplugConfig) withDefaults() {
	if c.Group == "" {
		c.Group = "sim"
	}
	if c.Device == "" {
		c.Device = "sensor"
	}
}

func (c *SparkplugConfig) validate() error {
	for name, id := range map[string]string{"group": c.Group, "device": c.Device} {
		if strings.ContainsAny(id, "/+#:") {
			return fmt.Errorf("the Sparkplug %s %q must not hold '/', '+', '#' or ':'", name, id)
		}
	}
	if c.SkipFraction < 0 || c.SkipFraction > 0.5 {
		return fmt.Errorf("the Sparkplug skip fraction %g is outside 0..0.5", c.SkipFraction)
	}
	return nil
}

// SparkplugKey is the record key of device n's readings in Sparkplug mode.
func SparkplugKey(c *SparkplugConfig, node string) string {
	return c.Group + "/" + node + "/" + c.Device
}

// sparkplugNode is a device's Sparkplug state: the node's seq and bdSeq. Only the publisher
// goroutine touches it (births run inside connect, which it calls).
type sparkplugNode struct {
	cfg   *SparkplugConfig
	node  string
	seq   uint64 // next Sparkplug seq
	bdSeq uint64 // birth/death sequence of the current connection
}

func (n *sparkplugNode) topic(t sparkplug.MessageType) string {
	s := sparkplug.Namespace + "/" + n.cfg.Group + "/" + string(t) + "/" + n.node
	if t == sparkplug.DBIRTH || t == sparkplug.DDATA || t == sparkplug.DDEATH {
		s += "/" + n.cfg.Device
	}
	return s
}

func (n *sparkplugNode) nextSeq() *uint64 {
	s := n.seq
	n.seq = (n.seq + 1) % 256
	return &s
}

// death is the NDEATH payload of the current connection: bdSeq ties it to its NBIRTH.
func (n *sparkplugNode) death() []byte {
	b, _ := sparkplug.Encode(&pb.Payload{Timestamp: proto.Uint64(uint64(time.Now().UnixMilli())),
		Metrics: []*pb.Payload_Metric{{Name: proto.String("bdSeq"), Datatype: proto.Uint32(uint32(pb.DataType_Int64)),
			Value: &pb.Payload_Metric_LongValue{LongValue: n.bdSeq}}}})
	return b
}

// births publishes NBIRTH and DBIRTH on a fresh connection and waits for their PUBACKs (QoS 1),
// so every DDATA after them can be resolved.
func (n *sparkplugNode) births(client paho.Client, r Reading, timeout time.Duration) error {
	n.seq = 0
	now := proto.Uint64(uint64(time.Now().UnixMilli()))
	nbirth := &pb.Payload{Timestamp: now, Seq: n.nextSeq(), Metrics: []*pb.Payload_Metric{
		{Name: proto.String("bdSeq"), Datatype: proto.Uint32(uint32(pb.DataType_Int64)), Value: &pb.Payload_Metric_LongValue{LongValue: n.bdSeq}},
		{Name: proto.String("Node Control/Rebirth"), Datatype: proto.Uint32(uint32(pb.DataType_Boolean)), Value: &pb.Payload_Metric_BooleanValue{}},
	}}
	dbirth := &pb.Payload{Timestamp: now, Seq: n.nextSeq()}
	for _, m := range sparkplugMetrics {
		dbirth.Metrics = append(dbirth.Metrics, setValue(&pb.Payload_Metric{
			Name: proto.String(m.name), Alias: proto.Uint64(m.alias), Datatype: proto.Uint32(uint32(m.typ)),
			Timestamp: now}, m.alias, r))
	}
	for _, msg := range []struct {
		t sparkplug.MessageType
		p *pb.Payload
	}{{sparkplug.NBIRTH, nbirth}, {sparkplug.DBIRTH, dbirth}} {
		b, err := sparkplug.Encode(msg.p)
		if err != nil {
			return err
		}
		tok := client.Publish(n.topic(msg.t), 1, false, b)
		if !tok.WaitTimeout(timeout) {
			return fmt.Errorf("publish %s: no PUBACK in %v", msg.t, timeout)
		}
		if err := tok.Error(); err != nil {
			return fmt.Errorf("publish %s: %w", msg.t, err)
		}
	}
	return nil
}

// data is the DDATA payload of a reading: aliases, values and the device's timestamp only.
func (n *sparkplugNode) data(r Reading, skip bool) []byte {
	if skip {
		n.nextSeq() // the message with this seq is "lost"
	}
	ts := proto.Uint64(uint64(r.TS))
	p := &pb.Payload{Timestamp: ts, Seq: n.nextSeq(), Metrics: make([]*pb.Payload_Metric, 0, len(sparkplugMetrics))}
	for _, m := range sparkplugMetrics {
		p.Metrics = append(p.Metrics, setValue(&pb.Payload_Metric{Alias: proto.Uint64(m.alias), Timestamp: ts}, m.alias, r))
	}
	b, _ := sparkplug.Encode(p)
	return b
}

// setValue sets a metric's value from the reading: seq as UInt64, the signals as Double.
func setValue(m *pb.Payload_Metric, alias uint64, r Reading) *pb.Payload_Metric {
	switch alias {
	case aliasSeq:
		m.Value = &pb.Payload_Metric_LongValue{LongValue: r.Seq}
	case aliasTemperature:
		m.Value = &pb.Payload_Metric_DoubleValue{DoubleValue: r.Temperature}
	case aliasHumidity:
		m.Value = &pb.Payload_Metric_DoubleValue{DoubleValue: r.Humidity}
	case aliasPressure:
		m.Value = &pb.Payload_Metric_DoubleValue{DoubleValue: r.Pressure}
	case aliasVibration:
		m.Value = &pb.Payload_Metric_DoubleValue{DoubleValue: r.Vibration}
	case aliasBattery:
		m.Value = &pb.Payload_Metric_DoubleValue{DoubleValue: r.Battery}
	}
	return m
}
