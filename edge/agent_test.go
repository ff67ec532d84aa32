package edge

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tributary-iot/tributary/devices"
)

type reading struct {
	Device string `json:"device"`
	Seq    int    `json:"seq"`
	TS     int64  `json:"ts"`
}

// Real paho clients publish QoS 1; every acked reading is in the log, in per-device order, with
// the documented headers.
func TestPahoQoS1AckedReadingsInLogInOrder(t *testing.T) {
	a, _ := startAgent(t, Config{})
	const devicesN, perDevice = 8, 150
	var wg sync.WaitGroup
	for d := range devicesN {
		id := fmt.Sprintf("dev-%d", d)
		c := pahoClient(t, a.MQTTAddr(), id, "", "")
		wg.Go(func() {
			toks := make([]paho.Token, 0, perDevice)
			for i := range perDevice {
				p, _ := json.Marshal(reading{Device: id, Seq: i, TS: time.Now().UnixMilli()})
				toks = append(toks, c.Publish("devices/"+id+"/readings", 1, false, p))
			}
			for _, tok := range toks {
				if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
					t.Errorf("publish: %v", tok.Error())
					return
				}
			}
		})
	}
	wg.Wait()
	next := map[string]int{}
	for _, part := range readStream(t, a.Log(), "readings") {
		for _, r := range part {
			var rd reading
			if err := json.Unmarshal(r.Value, &rd); err != nil {
				t.Fatalf("payload %q: %v", r.Value, err)
			}
			if string(r.Key) != rd.Device {
				t.Fatalf("key %q for device %q", r.Key, rd.Device)
			}
			if rd.Seq != next[rd.Device] {
				t.Fatalf("device %s: seq %d, want %d (order broken or duplicate)", rd.Device, rd.Seq, next[rd.Device])
			}
			next[rd.Device]++
			for _, h := range []string{HeaderTopic, HeaderContentType, HeaderDeviceTime, HeaderReceiveTime, HeaderClientID, HeaderPacketID, HeaderPayloadHash} {
				if r.HeaderValue(h) == nil {
					t.Fatalf("record lacks header %s", h)
				}
			}
			if got := string(r.HeaderValue(HeaderTopic)); got != "devices/"+rd.Device+"/readings" {
				t.Fatalf("topic header %q", got)
			}
			if dt, _ := strconv.ParseInt(string(r.HeaderValue(HeaderDeviceTime)), 10, 64); dt != rd.TS {
				t.Fatalf("device-time %d, want %d", dt, rd.TS)
			}
		}
	}
	for d := range devicesN {
		if n := next[fmt.Sprintf("dev-%d", d)]; n != perDevice {
			t.Errorf("dev-%d: %d readings in log, want %d", d, n, perDevice)
		}
	}
}

func addDevice(t testing.TB, dataDir, id, password string, extra ...string) {
	t.Helper()
	reg := devices.NewRegistry(filepath.Join(dataDir, "devices.db"), &devices.RegistryOptions{BcryptCost: 4})
	if err := reg.Add(devices.Device{ID: id, ExtraTopics: extra}, password); err != nil {
		t.Fatal(err)
	}
}

func TestAuthAndACLRefusals(t *testing.T) {
	dir := t.TempDir()
	addDevice(t, dir, "boiler-1", "s3cret")
	addDevice(t, dir, "boiler-2", "other")
	a, _ := startAgent(t, Config{DataDir: dir})

	connect := func(id, user, pass string) (packets.Packet, *rawClient) {
		c, ack := dialRaw(t, a.MQTTAddr(), id, 4, user, pass)
		return ack, c
	}
	if ack, _ := connect("x", "ghost", "pw"); ack.ReasonCode == 0 {
		t.Error("unknown device accepted")
	}
	if ack, _ := connect("x", "boiler-1", "wrong"); ack.ReasonCode == 0 {
		t.Error("wrong password accepted")
	}
	ack, c := connect("b1", "boiler-1", "s3cret")
	if ack.ReasonCode != 0 {
		t.Fatalf("registered device refused: code %d", ack.ReasonCode)
	}
	c.publish("devices/boiler-1/readings", []byte(`{"v":1}`), 1, 1, false)
	c.expectAck(1)
	// Publishing as another device: MQTT 3 clients are disconnected, nothing is stored.
	c.publish("devices/boiler-2/readings", []byte(`{"v":2}`), 2, 1, false)
	if pk, err := c.read(); err == nil && pk.FixedHeader.Type != packets.Disconnect {
		t.Fatalf("publish under another device's topic answered with packet %d, want disconnect", pk.FixedHeader.Type)
	}
	// MQTT 5: a PUBACK with reason "not authorized".
	c5, ack := dialRaw(t, a.MQTTAddr(), "b1v5", 5, "boiler-1", "s3cret")
	if ack.ReasonCode != 0 {
		t.Fatalf("v5 connect refused: %d", ack.ReasonCode)
	}
	c5.publish("devices/boiler-2/readings", []byte(`{"v":3}`), 9, 1, false)
	pk, err := c5.read()
	if err != nil || pk.FixedHeader.Type != packets.Puback || pk.ReasonCode != packets.ErrNotAuthorized.Code {
		t.Fatalf("v5 publish as another device: %+v %v, want PUBACK not authorized", pk.FixedHeader, err)
	}
	if n := countStream(t, a.Log(), "readings"); n != 1 {
		t.Fatalf("%d readings stored, want 1", n)
	}
	// Anonymous on loopback-only listeners is fine, but only under its own client id.
	anon, ack := dialRaw(t, a.MQTTAddr(), "anon-1", 4, "", "")
	if ack.ReasonCode != 0 {
		t.Fatalf("anonymous on loopback refused: %d", ack.ReasonCode)
	}
	anon.publish("devices/boiler-1/readings", []byte(`{}`), 3, 1, false)
	if pk, err := anon.read(); err == nil && pk.FixedHeader.Type != packets.Disconnect {
		t.Fatal("anonymous client published as a registered device")
	}
}

func TestAnonymousRefusedOnNonLoopbackListener(t *testing.T) {
	a, _ := startAgent(t, Config{MQTT: MQTTConfig{Listen: "0.0.0.0:0"}})
	_, port, _ := netSplit(a.MQTTAddr())
	_, ack := dialRaw(t, "127.0.0.1:"+port, "anon", 4, "", "")
	if ack.ReasonCode == 0 {
		t.Fatal("anonymous client accepted on a 0.0.0.0 listener")
	}
	b, _ := startAgent(t, Config{MQTT: MQTTConfig{Listen: "0.0.0.0:0"}, AllowAnonymous: true})
	_, port, _ = netSplit(b.MQTTAddr())
	if _, ack := dialRaw(t, "127.0.0.1:"+port, "anon", 4, "", ""); ack.ReasonCode != 0 {
		t.Fatal("allow_anonymous: anonymous client refused")
	}
}

func TestDeadLetters(t *testing.T) {
	a, _ := startAgent(t, Config{MaxPayloadBytes: 100, JSONStreams: []string{"readings"}})
	c, _ := dialRaw(t, a.MQTTAddr(), "dl-1", 4, "", "")
	c.publish("devices/dl-1/readings", bytes.Repeat([]byte("x"), 500), 1, 1, false)
	c.expectAck(1) // a dead letter is stored durably, so it is acked
	c.publish("devices/dl-1/readings", []byte("not json"), 2, 1, false)
	c.expectAck(2)
	c.publish("devices/dl-1/readings", []byte(`{"ok":true}`), 3, 1, false)
	c.expectAck(3)
	dl := readStream(t, a.Log(), devices.DeadLetterStream)[0]
	if len(dl) != 2 {
		t.Fatalf("%d dead letters, want 2", len(dl))
	}
	want := []struct{ reason, size string }{{"oversized", "500"}, {"not_json", ""}}
	for i, w := range want {
		r := dl[i]
		if got := string(r.HeaderValue(HeaderReason)); got != w.reason {
			t.Errorf("dead letter %d reason %q, want %q", i, got, w.reason)
		}
		if got := string(r.HeaderValue(HeaderDevice)); got != "dl-1" {
			t.Errorf("dead letter %d device %q", i, got)
		}
		if got := string(r.HeaderValue(HeaderPayloadSize)); got != w.size {
			t.Errorf("dead letter %d payload-size %q, want %q", i, got, w.size)
		}
		if string(r.Key) != "dl-1" {
			t.Errorf("dead letter key %q", r.Key)
		}
	}
	if len(dl[0].Value) != 100 {
		t.Errorf("oversized dead letter kept %d bytes, want the first 100", len(dl[0].Value))
	}
	if n := countStream(t, a.Log(), "readings"); n != 1 {
		t.Errorf("%d readings stored, want 1", n)
	}
}

// One client with up to 100 in flight shares fsyncs: many readings per group commit, and the
// PUBACKs come back in packet order even though the readings land in different partitions.
func TestPipelinedClientAcksInOrderAndSharesFsyncs(t *testing.T) {
	a, _ := startAgent(t, Config{AnonymousPublish: "any", MaxPendingPerClient: 100})
	c, _ := dialRaw(t, a.MQTTAddr(), "bridge", 4, "", "")
	const total, window = 3000, 100
	before := a.Log().Stats().Fsyncs
	var sent, acked int
	id := func(i int) uint16 { return uint16(i%60000 + 1) }
	for acked < total {
		var batch []byte
		for sent < total && sent-acked < window {
			topic := fmt.Sprintf("devices/sensor-%d/readings", sent%50)
			batch = append(batch, c.publishBytes(topic, []byte(`{"seq":`+strconv.Itoa(sent)+`}`), id(sent), 1, false)...)
			sent++
		}
		if len(batch) > 0 {
			c.write(batch)
		}
		c.expectAck(id(acked)) // in order, or expectAck fails
		acked++
	}
	fsyncs := a.Log().Stats().Fsyncs - before
	t.Logf("%d readings, %d fsyncs", total, fsyncs)
	if fsyncs >= total/4 {
		t.Errorf("%d fsyncs for %d readings: the client is held to about one reading per fsync", fsyncs, total)
	}
	if n := countStream(t, a.Log(), "readings"); n != total {
		t.Errorf("%d readings stored, want %d", n, total)
	}
}

// Suppressing mochi's PUBACK (ackedByEdge) must not leak its flow-control state: an MQTT 5
// client that keeps more than Receive Maximum... no, exactly Receive Maximum in flight, many times
// over, and reuses every packet id, is never disconnected for exceeding its quota, and mochi holds
// no inflight entry for it afterwards.
func TestInflightBookkeepingWithSuppressedPuback(t *testing.T) {
	const window = 16
	a, _ := startAgent(t, Config{MaxPendingPerClient: window})
	c, ack := dialRaw(t, a.MQTTAddr(), "v5dev", 5, "", "")
	if ack.Properties.ReceiveMaximum != window {
		t.Fatalf("CONNACK Receive Maximum %d, want %d", ack.Properties.ReceiveMaximum, window)
	}
	const rounds = 200
	for r := range rounds {
		var batch []byte
		for i := range window {
			batch = append(batch, c.publishBytes("devices/v5dev/readings", []byte(fmt.Sprintf(`{"r":%d,"i":%d}`, r, i)), uint16(i+1), 1, false)...)
		}
		c.write(batch)
		for i := range window {
			c.expectAck(uint16(i + 1))
		}
	}
	cl, ok := a.server.Clients.Get("v5dev")
	if !ok {
		t.Fatal("client gone")
	}
	if n := cl.State.Inflight.Len(); n != 0 {
		t.Errorf("mochi holds %d inflight entries for the client", n)
	}
	if n := countStream(t, a.Log(), "readings"); n != rounds*window {
		t.Errorf("%d readings stored, want %d", n, rounds*window)
	}
}

// A DUP resend of a stored reading is acked without storing it twice, also after a restart; a
// DUP with another payload under the same id is a new reading.
func TestDupResendDeduplicated(t *testing.T) {
	dir := t.TempDir()
	a, stop := startAgent(t, Config{DataDir: dir})
	c, _ := dialRaw(t, a.MQTTAddr(), "dup-1", 4, "", "")
	c.publish("devices/dup-1/readings", []byte(`{"seq":1}`), 7, 1, false)
	c.expectAck(7)
	c.publish("devices/dup-1/readings", []byte(`{"seq":1}`), 7, 1, true)
	c.expectAck(7)
	if n := countStream(t, a.Log(), "readings"); n != 1 {
		t.Fatalf("%d records after a DUP resend, want 1", n)
	}
	stop()

	a, _ = startAgent(t, Config{DataDir: dir})
	c, _ = dialRaw(t, a.MQTTAddr(), "dup-1", 4, "", "")
	c.publish("devices/dup-1/readings", []byte(`{"seq":1}`), 7, 1, true)
	c.expectAck(7)
	if n := countStream(t, a.Log(), "readings"); n != 1 {
		t.Fatalf("%d records after a DUP resend across a restart, want 1", n)
	}
	c.publish("devices/dup-1/readings", []byte(`{"seq":2}`), 7, 1, true)
	c.expectAck(7)
	if n := countStream(t, a.Log(), "readings"); n != 2 {
		t.Fatalf("%d records after a DUP with a new payload, want 2", n)
	}
	// Another client reusing the same packet id and payload is not a duplicate.
	c2, _ := dialRaw(t, a.MQTTAddr(), "dup-2", 4, "", "")
	c2.publish("devices/dup-2/readings", []byte(`{"seq":1}`), 7, 1, true)
	c2.expectAck(7)
	if n := countStream(t, a.Log(), "readings"); n != 3 {
		t.Fatalf("%d records, want 3", n)
	}
}

func TestQoS2ExactlyOnceFlow(t *testing.T) {
	a, _ := startAgent(t, Config{})
	c := pahoClient(t, a.MQTTAddr(), "q2", "", "")
	for i := range 50 {
		tok := c.Publish("devices/q2/readings", 2, false, fmt.Sprintf(`{"seq":%d}`, i))
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("QoS 2 publish %d: %v", i, tok.Error())
		}
	}
	if n := countStream(t, a.Log(), "readings"); n != 50 {
		t.Fatalf("%d stored, want 50", n)
	}
}

// A failed append is never acked: with the quota reached under backpressure the client is
// disconnected without a PUBACK.
func TestFailedAppendNotAcked(t *testing.T) {
	a, _ := startAgent(t, Config{QuotaBytes: 1})
	c, _ := dialRaw(t, a.MQTTAddr(), "full", 4, "", "")
	// The quota check needs the disk size to exceed the quota; write until refused.
	for i := range 200 {
		c.publish("devices/full/readings", bytes.Repeat([]byte("y"), 1000), uint16(i+1), 1, false)
		pk, err := c.read()
		if err != nil {
			return // disconnected without an ack: what we want
		}
		if pk.FixedHeader.Type != packets.Puback {
			t.Fatalf("unexpected packet %d", pk.FixedHeader.Type)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("200 readings acked past a 1-byte quota")
}

func TestHTTPEndpoints(t *testing.T) {
	a, _ := startAgent(t, Config{HTTPListen: "127.0.0.1:0"})
	c, _ := dialRaw(t, a.MQTTAddr(), "m1", 4, "", "")
	c.publish("devices/m1/readings", []byte(`{"v":1}`), 1, 1, false)
	c.expectAck(1)
	// The counter moves just after the PUBACK is written.
	for i := 0; i < 100 && !bytes.Contains(httpGet(t, "http://"+a.HTTPAddr()+"/metrics"), []byte("tributary_edge_readings_acked_total 1")); i++ {
		time.Sleep(10 * time.Millisecond)
	}
	for path, want := range map[string]string{
		"/healthz": "ok",
		"/readyz":  "ready",
		"/metrics": "tributary_edge_readings_acked_total 1",
	} {
		body := httpGet(t, "http://"+a.HTTPAddr()+path)
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("%s lacks %q:\n%s", path, want, body)
		}
	}
	body := httpGet(t, "http://"+a.HTTPAddr()+"/metrics")
	for _, m := range []string{"tributary_edge_fsync_seconds_bucket", "tributary_edge_connected_devices 1", "tributary_edge_log_disk_bytes"} {
		if !bytes.Contains(body, []byte(m)) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
}

func TestConfigFileAndDefaults(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "edge.yaml")
	writeFile(t, path, `data_dir: `+dir+`
mqtt:
  listen: 127.0.0.1:0
default_partitions: 3
streams:
  power: {partitions: 2, json: true}
mapping:
  - pattern: plant/{device}/{stream}
`)
	cfg := Config{ConfigDir: dir}
	if err := ReadConfigFile(path, &cfg); err != nil {
		t.Fatal(err)
	}
	a, _ := startAgent(t, cfg)
	s, _ := a.Log().Stream("readings")
	if s.Partitions() != 3 {
		t.Errorf("default stream has %d partitions, want 3", s.Partitions())
	}
	c, _ := dialRaw(t, a.MQTTAddr(), "p1", 4, "", "")
	c.publish("plant/p1/power", []byte(`nope`), 1, 1, false)
	c.expectAck(1)
	c.publish("plant/p1/power", []byte(`{"w":5}`), 2, 1, false)
	c.expectAck(2)
	if s, err := a.Log().Stream("power"); err != nil || s.Partitions() != 2 {
		t.Fatalf("stream power: %v", err)
	}
	if n := countStream(t, a.Log(), "power"); n != 1 {
		t.Errorf("power has %d records, want 1 (the other is a dead letter)", n)
	}
	writeFile(t, path, "bogus_key: 1\n")
	if err := ReadConfigFile(path, &Config{}); err == nil || !strings.Contains(err.Error(), "bogus_key") {
		t.Errorf("unknown config key: %v, want an error naming it", err)
	}
}

// An edge upgraded to a smaller default partition count keeps the streams it has on disk as they
// were created: partition counts cannot change without moving keys.
func TestStreamsOnDiskKeepPartitionCount(t *testing.T) {
	dir := t.TempDir()
	a, stop := startAgent(t, Config{DataDir: dir, AnonymousPublish: "any", DefaultPartitions: 8})
	c, _ := dialRaw(t, a.MQTTAddr(), "d1", 4, "", "")
	c.publish("devices/d1/readings", []byte(`{"seq":1}`), 1, 1, false)
	c.expectAck(1)
	stop()

	a, _ = startAgent(t, Config{DataDir: dir, AnonymousPublish: "any"})
	if a.cfg.DefaultPartitions != DefaultPartitionCount || DefaultPartitionCount == 8 {
		t.Fatalf("default partitions %d: this test needs a default other than 8", a.cfg.DefaultPartitions)
	}
	c, _ = dialRaw(t, a.MQTTAddr(), "d1", 4, "", "")
	c.publish("devices/d1/readings", []byte(`{"seq":2}`), 2, 1, false)
	c.expectAck(2)
	s, err := a.Log().Stream("readings")
	if err != nil {
		t.Fatal(err)
	}
	if s.Partitions() != 8 {
		t.Errorf("stream has %d partitions after restart, want the 8 it was created with", s.Partitions())
	}
	if n := countStream(t, a.Log(), "readings"); n != 2 {
		t.Errorf("%d readings stored, want 2", n)
	}
}
