package edge

import (
	"encoding/json"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"google.golang.org/protobuf/proto"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/devices/sparkplug"
	pb "github.com/tributary-iot/tributary/devices/sparkplug/sparkplugpb"
	"github.com/tributary-iot/tributary/storage"
)

// spNode is a Sparkplug edge node over a real paho connection: it numbers its messages with seq
// as the specification says, and can lose messages on purpose.
type spNode struct {
	t      *testing.T
	c      paho.Client
	group  string
	node   string
	seq    uint64
	conn   net.Conn // the socket, for an ungraceful end (the will fires)
	connMu sync.Mutex
}

func connectNode(t *testing.T, addr, group, node, user, pass string, will []byte) *spNode {
	t.Helper()
	n := &spNode{t: t, group: group, node: node}
	o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(group + ":" + node).
		SetUsername(user).SetPassword(pass).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).
		SetCleanSession(true).
		SetCustomOpenConnectionFn(func(u *url.URL, _ paho.ClientOptions) (net.Conn, error) {
			c, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
			n.connMu.Lock()
			n.conn = c
			n.connMu.Unlock()
			return c, err
		})
	if will != nil {
		o.SetBinaryWill("spBv1.0/"+group+"/NDEATH/"+node, will, 1, false)
	}
	n.c = paho.NewClient(o)
	if tok := n.c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect node %s: %v", node, tok.Error())
	}
	t.Cleanup(func() { n.c.Disconnect(0) })
	return n
}

// publish sends one message at QoS 1 and waits for its PUBACK; seq is stamped unless skip.
func (n *spNode) publish(typ sparkplug.MessageType, device string, metrics ...*pb.Payload_Metric) {
	n.t.Helper()
	topic := "spBv1.0/" + n.group + "/" + string(typ) + "/" + n.node
	if device != "" {
		topic += "/" + device
	}
	p := &pb.Payload{Timestamp: proto.Uint64(uint64(time.Now().UnixMilli())), Metrics: metrics}
	if typ == sparkplug.NBIRTH {
		n.seq = 0
	}
	if typ != sparkplug.NDEATH {
		p.Seq = proto.Uint64(n.seq)
		n.seq = (n.seq + 1) % 256
	}
	b, err := sparkplug.Encode(p)
	if err != nil {
		n.t.Fatal(err)
	}
	if tok := n.c.Publish(topic, 1, false, b); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		n.t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

func spMetric(name string, alias uint64, dt pb.DataType) *pb.Payload_Metric {
	m := &pb.Payload_Metric{Datatype: proto.Uint32(uint32(dt))}
	if name != "" {
		m.Name = proto.String(name)
	}
	if alias != 0 {
		m.Alias = proto.Uint64(alias)
	}
	return m
}

func withFloat(m *pb.Payload_Metric, v float32, ts uint64, historical bool) *pb.Payload_Metric {
	m.Value = &pb.Payload_Metric_FloatValue{FloatValue: v}
	m.Timestamp = proto.Uint64(ts)
	if historical {
		m.IsHistorical = proto.Bool(true)
	}
	return m
}

func (n *spNode) births() {
	n.publish(sparkplug.NBIRTH, "",
		withInt64(spMetric("bdSeq", 0, pb.DataType_Int64), 0),
		withBool(spMetric("Node Control/Rebirth", 0, pb.DataType_Boolean), false))
	n.publish(sparkplug.DBIRTH, "press-7",
		withFloat(spMetric("Temperature", 1, pb.DataType_Float), 20, 1, false),
		withFloat(spMetric("Pressure", 2, pb.DataType_Float), 1.0, 1, false))
}

func withInt64(m *pb.Payload_Metric, v uint64) *pb.Payload_Metric {
	m.Value = &pb.Payload_Metric_LongValue{LongValue: v}
	return m
}

func withBool(m *pb.Payload_Metric, v bool) *pb.Payload_Metric {
	m.Value = &pb.Payload_Metric_BooleanValue{BooleanValue: v}
	return m
}

// aliasOnly is a data metric as nodes send them after a birth: alias and value, no name or type.
func aliasOnly(alias uint64, v float32, ts uint64) *pb.Payload_Metric {
	return &pb.Payload_Metric{Alias: proto.Uint64(alias), Timestamp: proto.Uint64(ts), Value: &pb.Payload_Metric_FloatValue{FloatValue: v}}
}

// spRecords returns the sparkplug stream's records of key, decoded, in offset order.
func spRecords(t *testing.T, l *storage.Log, key string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, part := range readStream(t, l, DefaultSparkplugStream) {
		for _, r := range part {
			if string(r.Key) != key {
				continue
			}
			var m map[string]any
			if err := json.Unmarshal(r.Value, &m); err != nil {
				t.Fatalf("record of %s is not JSON: %v: %q", key, err, r.Value)
			}
			if g := headerOf(r, headerSparkplugGap); g != "" {
				m["_gap_header"] = g
			}
			out = append(out, m)
		}
	}
	return out
}

func headerOf(r storage.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

func metricsOf(t *testing.T, m map[string]any) []map[string]any {
	t.Helper()
	list, _ := m["metrics"].([]any)
	out := make([]map[string]any, 0, len(list))
	for _, x := range list {
		out = append(out, x.(map[string]any))
	}
	return out
}

// TestSparkplugBirthDataAliases: a node with credentials publishes NBIRTH, DBIRTH and DDATA with
// aliases only; the DDATA is stored under <group>/<node>/<device> with the names and types of the
// birth, its metric timestamps and is_historical; an edge restart between birth and data still
// resolves the aliases (they are in meta.db); the node's topics of another node are refused.
func TestSparkplugBirthDataAliases(t *testing.T) {
	dir := t.TempDir()
	addDevice(t, dir, "plant1:line3", "pw")
	a, stop := startAgent(t, Config{DataDir: dir})
	n := connectNode(t, a.MQTTAddr(), "plant1", "line3", "plant1:line3", "pw", nil)
	n.births()
	n.publish(sparkplug.DDATA, "press-7", aliasOnly(1, 21.5, 1700000000100), aliasOnly(2, 1.25, 1700000000101))
	n.c.Disconnect(100)
	stop()

	// Restart on the same data dir: only meta.db remembers the aliases.
	a2, _ := startAgent(t, Config{DataDir: dir})
	n2 := connectNode(t, a2.MQTTAddr(), "plant1", "line3", "plant1:line3", "pw", nil)
	n2.seq = n.seq
	m := aliasOnly(1, 22.0, 1700000000200)
	m.IsHistorical = proto.Bool(true)
	n2.publish(sparkplug.DDATA, "press-7", m)

	recs := spRecords(t, a2.Log(), "plant1/line3/press-7")
	if len(recs) != 3 {
		t.Fatalf("%d records for plant1/line3/press-7, want DBIRTH + 2 DDATA: %v", len(recs), recs)
	}
	for i, want := range []struct {
		typ   string
		name  string
		value float64
		ts    float64
		hist  bool
	}{{"DBIRTH", "Temperature", 20, 1, false}, {"DDATA", "Temperature", 21.5, 1700000000100, false}, {"DDATA", "Temperature", 22, 1700000000200, true}} {
		got := metricsOf(t, recs[i])
		if recs[i]["type"] != want.typ || len(got) == 0 {
			t.Fatalf("record %d: %v, want %s", i, recs[i], want.typ)
		}
		g := got[0]
		hist, _ := g["is_historical"].(bool)
		if g["name"] != want.name || g["type"] != "Float" || g["value"] != want.value || g["timestamp"] != want.ts || hist != want.hist {
			t.Errorf("record %d metric %v, want %s Float %v at %v historical %v", i, g, want.name, want.value, want.ts, want.hist)
		}
	}
	if p := metricsOf(t, recs[1]); len(p) != 2 || p[1]["name"] != "Pressure" || p[1]["value"] != 1.25 {
		t.Errorf("second metric of the first DDATA: %v", p)
	}
	if births := spRecords(t, a2.Log(), "plant1/line3"); len(births) != 1 || births[0]["type"] != "NBIRTH" {
		t.Errorf("node records: %v, want the NBIRTH", births)
	}

	// Another node's topic is not this node's: mochi disconnects an MQTT 3.1.1 client for it.
	tok := n2.c.Publish("spBv1.0/plant1/NDATA/line4", 1, false, []byte{})
	tok.WaitTimeout(2 * time.Second)
	if got := metricSum(t, a2.metrics.registry, "tributary_edge_readings_rejected_total"); got < 1 {
		t.Errorf("publish as another node: %v refusals counted, want 1", got)
	}
}

// TestSparkplugSeqGapRebirth: a node skips a seq (a message lost on the way); the edge stores a gap
// marker with reason sparkplug_seq before the next message, counts it, and (request_rebirth on)
// sends NCMD Node Control/Rebirth = true, which the node receives on its command topic.
func TestSparkplugSeqGapRebirth(t *testing.T) {
	a, _ := startAgent(t, Config{Sparkplug: SparkplugConfig{RequestRebirth: true}})
	n := connectNode(t, a.MQTTAddr(), "plant1", "line3", "", "", nil)
	cmds := make(chan *pb.Payload, 4)
	tok := n.c.Subscribe("spBv1.0/plant1/NCMD/line3", 0, func(_ paho.Client, m paho.Message) {
		if p, err := sparkplug.Decode(m.Payload()); err == nil {
			cmds <- p
		}
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe to NCMD: %v", tok.Error())
	}
	if sub := tok.(*paho.SubscribeToken).Result()["spBv1.0/plant1/NCMD/line3"]; sub == 0x80 {
		t.Fatal("subscription to the node's own NCMD topic refused")
	}
	n.births()
	n.publish(sparkplug.DDATA, "press-7", aliasOnly(1, 21, 1))
	n.seq += 2 // two messages lost before the edge
	n.publish(sparkplug.DDATA, "press-7", aliasOnly(1, 24, 2))

	recs := spRecords(t, a.Log(), "plant1/line3")
	var gap map[string]any
	for _, r := range recs {
		if r["_gap_header"] == "sparkplug_seq" {
			gap = r
		}
	}
	if gap == nil || gap["gap"] != "sparkplug_seq" || gap["expected_seq"] != float64(3) || gap["seq"] != float64(5) || gap["missing"] != float64(2) {
		t.Fatalf("gap marker %v in %v, want expected 3, seq 5, missing 2", gap, recs)
	}
	if got := metricSum(t, a.metrics.registry, "tributary_edge_sparkplug_seq_gaps_total"); got != 1 {
		t.Errorf("seq gaps counted %v, want 1", got)
	}
	if got := metricSum(t, a.metrics.registry, "tributary_edge_sparkplug_missing_messages_total"); got != 2 {
		t.Errorf("missing messages counted %v, want 2", got)
	}
	select {
	case p := <-cmds:
		if len(p.Metrics) != 1 || p.Metrics[0].GetName() != "Node Control/Rebirth" || !p.Metrics[0].GetBooleanValue() {
			t.Fatalf("NCMD %v, want Node Control/Rebirth = true", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no NCMD rebirth request reached the node")
	}
	// Another node's commands are not this node's to read.
	tok = n.c.Subscribe("spBv1.0/plant1/NCMD/line4", 0, func(paho.Client, paho.Message) {})
	if tok.WaitTimeout(5 * time.Second); tok.Error() == nil && tok.(*paho.SubscribeToken).Result()["spBv1.0/plant1/NCMD/line4"] != 0x80 {
		t.Error("subscription to another node's NCMD topic granted")
	}
}

// TestSparkplugDeathAndBadPayload: an NDEATH published by Debian's mosquitto_pub from a binary file
// is stored; the NDEATH a node leaves as its MQTT will is stored when its connection dies; a
// payload that is not Sparkplug B goes to the dead-letter stream with reason not_sparkplug.
func TestSparkplugDeathAndBadPayload(t *testing.T) {
	a, _ := startAgent(t, Config{})
	death, err := sparkplug.Encode(&pb.Payload{Timestamp: proto.Uint64(1700000000000),
		Metrics: []*pb.Payload_Metric{withInt64(spMetric("bdSeq", 0, pb.DataType_Int64), 7)}})
	if err != nil {
		t.Fatal(err)
	}
	// The will: the node's socket dies without DISCONNECT.
	n := connectNode(t, a.MQTTAddr(), "plant1", "line5", "", "", death)
	n.births()
	n.connMu.Lock()
	n.conn.Close()
	n.connMu.Unlock()

	if pub := testprogFind(t, "mosquitto_pub"); pub != "" {
		file := filepath.Join(t.TempDir(), "ndeath.bin")
		if err := os.WriteFile(file, death, 0o600); err != nil {
			t.Fatal(err)
		}
		host, port, _ := net.SplitHostPort(a.MQTTAddr())
		for _, args := range [][]string{
			{"-t", "spBv1.0/plant1/NDEATH/line6", "-f", file},
			{"-t", "spBv1.0/plant1/NDATA/line6", "-m", "not protobuf at all"},
		} {
			args = append([]string{"-h", host, "-p", port, "-q", "1", "-i", "plant1:line6"}, args...)
			if out, err := exec.Command(pub, args...).CombinedOutput(); err != nil {
				t.Fatalf("mosquitto_pub %v: %v %s", args, err, out)
			}
		}
		waitFor(t, func() bool { return len(spRecords(t, a.Log(), "plant1/line6")) == 1 })
		if d := spRecords(t, a.Log(), "plant1/line6")[0]; d["type"] != "NDEATH" || metricsOf(t, d)[0]["value"] != float64(7) {
			t.Errorf("NDEATH from mosquitto_pub: %v", d)
		}
		waitFor(t, func() bool {
			for _, p := range readStream(t, a.Log(), devices.DeadLetterStream) {
				for _, r := range p {
					if headerOf(r, HeaderReason) == "not_sparkplug" && headerOf(r, HeaderTopic) == "spBv1.0/plant1/NDATA/line6" {
						return true
					}
				}
			}
			return false
		})
	}
	waitFor(t, func() bool {
		for _, r := range spRecords(t, a.Log(), "plant1/line5") {
			if r["type"] == "NDEATH" {
				return true
			}
		}
		return false
	})
}

func testprogFind(t *testing.T, name string) string {
	t.Helper()
	return program(t, name, "/usr/bin")
}

// TestSparkplugConfig: off turns Sparkplug ingest off; a bad stream name is refused with the key.
func TestSparkplugConfig(t *testing.T) {
	err := Config{DataDir: t.TempDir(), Sparkplug: SparkplugConfig{Stream: "Bad Name"}}.Check()
	if err == nil || !strings.Contains(err.Error(), "sparkplug.stream") {
		t.Errorf("bad stream: %v", err)
	}
	a, _ := startAgent(t, Config{Sparkplug: SparkplugConfig{Stream: "off"}})
	if a.sparkplug != nil {
		t.Error("sparkplug.stream off still ingests Sparkplug")
	}
}
