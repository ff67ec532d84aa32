package edge

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Resends are recognised by packet id and payload hash, not by the DUP flag: MQTT.js resends
// unacknowledged publishes after a reconnect without it. Identical payloads under fresh packet
// ids, and a packet id reused on the connection that saw its ack, are new readings.
func TestResendWithoutDUPIsStoredOnce(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{DataDir: dir, AnonymousPublish: "any"}
	a, stop := startAgent(t, cfg)
	const topic = "devices/r1/readings"
	same := []byte(`{"door":"open"}`)
	count := func(want int, what string) {
		t.Helper()
		if got := countStream(t, a.Log(), "readings"); got != want {
			t.Fatalf("%s: %d readings stored, want %d", what, got, want)
		}
	}

	c, _ := dialRaw(t, a.MQTTAddr(), "r1", 4, "", "")
	c.publish(topic, []byte(`{"seq":1}`), 7, 1, false)
	c.expectAck(7) // the ack the client "loses" with its connection
	c.conn.Close()

	c, _ = dialRaw(t, a.MQTTAddr(), "r1", 4, "", "")
	c.publish(topic, []byte(`{"seq":1}`), 7, 1, false) // resent without DUP
	c.expectAck(7)
	count(1, "resend without DUP on a new connection")
	c.publish(topic, []byte(`{"seq":1}`), 7, 1, true) // and once more with DUP
	c.expectAck(7)
	count(1, "DUP resend")

	// The client saw the ack on this connection, so reusing id 7 is a new reading, even with an
	// identical payload; so are identical payloads under fresh ids.
	c.publish(topic, same, 7, 1, false)
	c.expectAck(7)
	c.publish(topic, same, 7, 1, false)
	c.expectAck(7)
	count(3, "packet id reused on the connection that saw its ack")
	for id := uint16(100); id < 120; id++ {
		c.publish(topic, same, id, 1, false)
		c.expectAck(id)
	}
	count(23, "identical payloads under fresh packet ids")
	// Same packet id, another payload, on a new connection: a new reading.
	c.conn.Close()
	c, _ = dialRaw(t, a.MQTTAddr(), "r1", 4, "", "")
	c.publish(topic, []byte(`{"seq":2}`), 119, 1, false)
	c.expectAck(119)
	count(24, "reused packet id with a new payload after a reconnect")

	// After a restart the memory comes from the log tail: a resend without DUP is still known.
	c.conn.Close()
	stop()
	a, _ = startAgent(t, cfg)
	c, _ = dialRaw(t, a.MQTTAddr(), "r1", 5, "", "")
	c.publish(topic, []byte(`{"seq":2}`), 119, 1, false)
	c.expectAck(119)
	c.publish(topic, same, 118, 1, false)
	c.expectAck(118)
	count(24, "resends without DUP after a restart")
	got := metricValues(t, a, "tributary_edge_duplicates_total")
	if got[`dup="false"`] != 2 || got[`dup="true"`] != 0 {
		t.Fatalf("duplicates after the restart %v, want 2 without DUP", got)
	}
}

// A client that ended its connection with DISCONNECT saw its acks: mosquitto_pub run again with
// the same message reuses packet id 1 for an identical payload, and each run is a new reading.
// Without DISCONNECT the same publish is a resend.
func TestDisconnectedClientReusesPacketIDs(t *testing.T) {
	a, _ := startAgent(t, Config{AnonymousPublish: "any"})
	const topic = "devices/cron-1/readings"
	for run := range 3 {
		c, _ := dialRaw(t, a.MQTTAddr(), "cron-1", 4, "", "")
		c.publish(topic, []byte(`{"door":"open"}`), 1, 1, false)
		c.expectAck(1)
		c.write([]byte{packets.Disconnect << 4, 0})
		c.conn.Close()
		deadline := time.Now().Add(5 * time.Second)
		for connectedClients(t, a) > 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond) // OnDisconnect runs after the socket closes
		}
		if got := countStream(t, a.Log(), "readings"); got != run+1 {
			t.Fatalf("run %d: %d readings stored, want %d", run, got, run+1)
		}
	}
	c, _ := dialRaw(t, a.MQTTAddr(), "cron-1", 4, "", "")
	c.publish(topic, []byte(`{"door":"closed"}`), 1, 1, false)
	c.expectAck(1)
	c.conn.Close() // dropped, no DISCONNECT: the ack may have been lost
	c, _ = dialRaw(t, a.MQTTAddr(), "cron-1", 4, "", "")
	c.publish(topic, []byte(`{"door":"closed"}`), 1, 1, false)
	c.expectAck(1)
	if got := countStream(t, a.Log(), "readings"); got != 4 {
		t.Fatalf("%d readings stored after a resend on a dropped connection, want 4", got)
	}
}

// A resend that arrives while the original is still in its group commit waits for it: on the same
// connection (the ack cannot have been sent, so the id cannot be reused yet) and on the connection
// that took the session over.
func TestResendWhileOriginalIsPending(t *testing.T) {
	// A 1 s linger keeps the first reading in its group commit while the test sends the resend.
	a, _ := startAgent(t, Config{AnonymousPublish: "any", GroupLinger: time.Second})
	const topic = "devices/p1/readings"
	c, _ := dialRaw(t, a.MQTTAddr(), "p1", 4, "", "")
	c.publish(topic, []byte(`{"seq":1}`), 3, 1, false)
	c.publish(topic, []byte(`{"seq":1}`), 3, 1, false) // before its ack: a resend
	c.expectAck(3)
	c.expectAck(3)
	if got := countStream(t, a.Log(), "readings"); got != 1 {
		t.Fatalf("%d readings stored after a resend on the same connection before the ack, want 1", got)
	}

	c.publish(topic, []byte(`{"seq":2}`), 4, 1, false)
	taken, _ := dialRaw(t, a.MQTTAddr(), "p1", 4, "", "") // takes the session over
	taken.publish(topic, []byte(`{"seq":2}`), 4, 1, false)
	taken.expectAck(4)
	if got := countStream(t, a.Log(), "readings"); got != 2 {
		t.Fatalf("%d readings stored after a resend on a taken-over session, want 2", got)
	}
}

// An authenticated device's client ids are its own: another device that connects with one gets a
// session of its own ("<device>/<client id>"), so it can neither disconnect the device nor share its
// resend memory. An empty client id is given the device id.
func TestClientIDsAreNamespacedByDevice(t *testing.T) {
	dir := t.TempDir()
	addDevice(t, dir, "meter-1", "pw-1")
	addDevice(t, dir, "meter-2", "pw-2")
	a, _ := startAgent(t, Config{DataDir: dir})
	count := func(want int, what string) {
		t.Helper()
		if got := countStream(t, a.Log(), "readings"); got != want {
			t.Fatalf("%s: %d readings stored, want %d", what, got, want)
		}
	}

	victim, ack := dialRaw(t, a.MQTTAddr(), "meter-1", 4, "meter-1", "pw-1")
	if ack.ReasonCode != 0 {
		t.Fatalf("meter-1 refused: code %d", ack.ReasonCode)
	}
	victim.publish("devices/meter-1/readings", []byte(`{"seq":1}`), 5, 1, false)
	victim.expectAck(5)

	intruder, ack := dialRaw(t, a.MQTTAddr(), "meter-1", 4, "meter-2", "pw-2")
	if ack.ReasonCode != 0 {
		t.Fatalf("meter-2 with the client id meter-1: code %d", ack.ReasonCode)
	}
	intruder.publish("devices/meter-2/readings", []byte(`{"seq":1}`), 5, 1, false)
	intruder.expectAck(5)
	count(2, "two devices' readings")
	// meter-1 is still connected: its next reading is acked on the same socket.
	victim.publish("devices/meter-1/readings", []byte(`{"seq":2}`), 6, 1, false)
	victim.expectAck(6)
	// meter-2's packet id 5 did not enter meter-1's memory: meter-1's resend of its reading 5
	// after a reconnect is still recognised.
	victim.conn.Close()
	victim, _ = dialRaw(t, a.MQTTAddr(), "meter-1", 4, "meter-1", "pw-1")
	victim.publish("devices/meter-1/readings", []byte(`{"seq":1}`), 5, 1, true)
	victim.expectAck(5)
	count(3, "meter-1's DUP resend after meter-2 used its client id")

	c5, ack := dialRaw(t, a.MQTTAddr(), "", 5, "meter-2", "pw-2")
	if ack.ReasonCode != 0 || ack.Properties.AssignedClientID != "meter-2" {
		t.Fatalf("meter-2 with an empty client id: code %d, assigned %q, want 0 and meter-2", ack.ReasonCode, ack.Properties.AssignedClientID)
	}
	c5.publish("devices/meter-2/readings", []byte(`{"seq":2}`), 1, 1, false)
	if pk, err := c5.read(); err != nil || pk.FixedHeader.Type != packets.Puback {
		t.Fatalf("publish after an assigned client id: %+v %v", pk.FixedHeader, err)
	}
	ids := map[string]int{}
	for _, p := range readStream(t, a.Log(), "readings") {
		for _, r := range p {
			ids[string(r.HeaderValue(HeaderClientID))]++
		}
	}
	if want := map[string]int{"meter-1": 2, "meter-2/meter-1": 1, "meter-2": 1}; fmt.Sprint(ids) != fmt.Sprint(want) {
		t.Fatalf("readings by client id %v, want %v", ids, want)
	}
}

// resendOf against a plain model of what it promises: the newest reading of a packet id among the
// last size, by brute force over a log of every add.
func TestRingResendOfMatchesModel(t *testing.T) {
	type added struct {
		id   uint16
		hash uint64
		gen  uint32
		res  *result
	}
	for _, size := range []int{1, 3, 8, 64, 300} {
		rng := rand.New(rand.NewPCG(uint64(size), 1))
		r := &dedupeRing{size: size}
		var model []added
		for step := range 20_000 {
			id := uint16(rng.IntN(2*size + 2))
			hash := uint64(rng.IntN(3))
			gen := firstSessionGen + uint32(rng.IntN(3))
			dup := rng.IntN(4) == 0
			if rng.IntN(50) == 0 {
				// The client of connection gen sends DISCONNECT.
				r.delivered(gen)
				for i := max(len(model)-size, 0); i < len(model); i++ {
					if m := &model[i]; m.gen == gen && m.res.done && m.res.err == nil {
						m.gen = deliveredGen
					}
				}
			}
			// The model: the newest add of id among the last size adds.
			var want *result
			for i := len(model) - 1; i >= max(len(model)-size, 0); i-- {
				m := &model[i]
				if m.id != id {
					continue
				}
				if m.hash == hash && m.res.err == nil && (dup || (m.gen != gen && m.gen != deliveredGen) || !m.res.done) {
					want = m.res
					m.gen = gen // a recognised resend moves to this connection
				}
				break
			}
			got := r.resendOf(id, hash, gen, dup)
			// The ring may let go of a succeeded result, answering storedResult for it.
			released := got == storedResult && want != nil && want.done && want.err == nil
			if got != want && !released {
				t.Fatalf("size %d step %d: resendOf(%d, %d, %d, %v) = %p, want %p", size, step, id, hash, gen, dup, got, want)
			}
			if got == nil {
				res := &result{}
				switch rng.IntN(10) {
				case 0: // still in its group commit
				case 1:
					res.complete(errDraining) // failed: a resend must be stored
				default:
					res.complete(nil)
				}
				if rng.IntN(20) == 0 {
					gen = restoredGen // as rebuild adds them
				}
				r.add(id, hash, gen, res)
				model = append(model, added{id, hash, gen, res})
			}
			if len(r.entries) > size {
				t.Fatalf("size %d: ring holds %d entries", size, len(r.entries))
			}
		}
	}
}

// resendOf and add run on every QoS 1/2 publish: no allocation once the ring is full.
func TestRingHotPathAllocatesNothing(t *testing.T) {
	r := &dedupeRing{size: 512}
	res := &result{}
	res.complete(nil)
	for i := range 512 {
		r.add(uint16(i+1), uint64(i), 1, res)
	}
	id := uint16(600)
	allocs := testing.AllocsPerRun(1000, func() {
		id++
		if r.resendOf(id, 42, 2, false) == nil {
			r.add(id, 42, 2, res)
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per publish, want 0", allocs)
	}
}

// BenchmarkRingPublish is the per-publish dedupe work of a client whose ring is full: a
// resendOf that misses (packet ids increment, as MQTT.js and paho do) and an add.
func BenchmarkRingPublish(b *testing.B) {
	for _, size := range []int{512, 8192} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			r := &dedupeRing{size: size}
			res := &result{}
			res.complete(nil)
			for i := range size {
				r.add(uint16(i+1), uint64(i), 1, res)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				id := uint16(i%65535 + 1)
				if r.resendOf(id, uint64(i)+1<<40, 2, false) == nil {
					r.add(id, uint64(i)+1<<40, 2, res)
				}
			}
		})
	}
}

// connectedClients reads tributary_edge_connected_devices, which OnDisconnect lowers.
func connectedClients(t *testing.T, a *Agent) float64 {
	t.Helper()
	mfs, err := a.metrics.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "tributary_edge_connected_devices" {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatal("no tributary_edge_connected_devices metric")
	return 0
}

// metricValues returns the samples of a labelled metric family, keyed by their label pairs.
func metricValues(t *testing.T, a *Agent, name string) map[string]float64 {
	t.Helper()
	mfs, err := a.metrics.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			key := ""
			for _, l := range m.GetLabel() {
				key += fmt.Sprintf("%s=%q", l.GetName(), l.GetValue())
			}
			out[key] = m.GetCounter().GetValue()
		}
	}
	return out
}
