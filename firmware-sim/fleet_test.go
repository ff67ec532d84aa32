package firmwaresim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

func TestFleetDeliversEverySeqQoS1(t *testing.T) {
	broker := startBroker(t)
	rec := subscribe(t, broker, "devices/+/readings")
	const devices, count = 5, 40
	fleet, err := NewFleet(Config{
		Broker: broker, Devices: devices, Count: count, QoS: 1, Rate: 400, Duration: 10 * time.Second,
		Passwords: PasswordTemplate("secret-{id}"), Seed: 7,
	})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := fleet.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Offered != devices*count || rep.Acked != devices*count || rep.Unacked != 0 {
		t.Fatalf("offered %d acked %d unacked %d, want %d acked of %d offered", rep.Offered, rep.Acked, rep.Unacked, devices*count, devices*count)
	}
	if rep.AckLatency.Count != devices*count || rep.AckLatency.P50 <= 0 || rep.AckLatency.Max < rep.AckLatency.P99 {
		t.Errorf("ack latency %+v is not plausible", rep.AckLatency)
	}
	for id, m := range rep.Manifest.Devices {
		if m.AckedThrough != count || m.LastSeq != count || len(m.Acked) != 1 {
			t.Errorf("manifest %s: %+v, want all %d acked", id, m, count)
		}
	}

	if !waitFor(t, 5*time.Second, func() bool { return len(rec.snapshot()) >= devices*count }) {
		t.Fatalf("subscriber got %d messages, want %d", len(rec.snapshot()), devices*count)
	}
	next := map[string]uint64{}
	for _, m := range rec.snapshot() {
		r := decodeReading(t, m.payload)
		if m.topic != ReadingsTopic(r.Device) {
			t.Errorf("reading of %s arrived on %s", r.Device, m.topic)
		}
		if r.Seq != next[r.Device]+1 {
			t.Errorf("%s: seq %d after %d", r.Device, r.Seq, next[r.Device])
		}
		next[r.Device] = r.Seq
		if r.TS < time.Now().Add(-time.Minute).UnixMilli() || r.Battery <= 0 || r.Battery > 100 || r.Humidity < 0 || r.Humidity > 100 ||
			r.Pressure < 900 || r.Pressure > 1100 || r.Vibration < 0 {
			t.Errorf("implausible reading %+v", r)
		}
		if n := len(m.payload); n < 100 || n > 160 {
			t.Errorf("payload is %d bytes, want about 120: %s", n, m.payload)
		}
	}
	if len(next) != devices {
		t.Errorf("readings from %d devices, want %d", len(next), devices)
	}
	for id, last := range next {
		if last != count {
			t.Errorf("%s: last seq %d, want %d", id, last, count)
		}
	}
}

func TestFleetQoS0AndPadding(t *testing.T) {
	broker := startBroker(t)
	rec := subscribe(t, broker, "devices/#")
	fleet, err := NewFleet(Config{Broker: broker, Devices: 2, Count: 20, QoS: 0, PayloadSize: 500, IDPrefix: "pump-"})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := fleet.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Acked != 0 || rep.Written != 40 {
		t.Fatalf("QoS 0: acked %d written %d, want 0 and 40", rep.Acked, rep.Written)
	}
	if !waitFor(t, 5*time.Second, func() bool { return len(rec.snapshot()) >= 40 }) {
		t.Fatalf("subscriber got %d of 40", len(rec.snapshot()))
	}
	for _, m := range rec.snapshot() {
		if len(m.payload) != 500 {
			t.Fatalf("padded payload is %d bytes, want 500", len(m.payload))
		}
		if r := decodeReading(t, m.payload); !strings.HasPrefix(r.Device, "pump-") {
			t.Fatalf("device id %q lacks the prefix", r.Device)
		}
	}
}

func TestFleetFaults(t *testing.T) {
	broker := startBroker(t)
	rec := subscribe(t, broker, "devices/#")
	fleet, err := NewFleet(Config{
		Broker: broker, Devices: 3, Count: 200, QoS: 1, Seed: 3,
		Faults: Faults{MalformedFraction: 0.1, WrongTopicFraction: 0.1, OversizedFraction: 0.05, OversizedBytes: 4096, ClockSkew: time.Hour},
	})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := fleet.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Acked != 600 {
		t.Errorf("acked %d readings, want 600: faults must not take seqs", rep.Acked)
	}
	for _, kind := range []string{FaultMalformed, FaultWrongTopic, FaultOversized} {
		if rep.Faults[kind] == 0 {
			t.Errorf("no %s faults sent: %v", kind, rep.Faults)
		}
	}
	totalFaults := sum(rep.Faults)
	if !waitFor(t, 5*time.Second, func() bool { return uint64(len(rec.snapshot())) >= 600+totalFaults }) {
		t.Fatalf("subscriber got %d, want %d", len(rec.snapshot()), 600+totalFaults)
	}
	seen := map[string]uint64{}
	skewed := 0
	for _, m := range rec.snapshot() {
		if !json.Valid(m.payload) {
			seen[FaultMalformed]++
			if !strings.HasPrefix(string(m.payload), `{"device":`) {
				t.Errorf("malformed payload %q does not look like a torn reading", m.payload)
			}
			continue
		}
		r := decodeReading(t, m.payload)
		owner := strings.Split(m.topic, "/")[1]
		switch r.Fault {
		case FaultWrongTopic:
			seen[FaultWrongTopic]++
			if owner == r.Device || r.Seq != 0 {
				t.Errorf("wrong-topic publish of %s went to %s with seq %d", r.Device, m.topic, r.Seq)
			}
		case FaultOversized:
			seen[FaultOversized]++
			if len(m.payload) != 4096 || owner != r.Device {
				t.Errorf("oversized payload is %d bytes on %s", len(m.payload), m.topic)
			}
		case "":
			if owner != r.Device || r.Seq == 0 {
				t.Errorf("reading %s/%d on %s", r.Device, r.Seq, m.topic)
			}
			if d := time.Since(time.UnixMilli(r.TS)).Abs(); d > time.Minute {
				skewed++
			}
		}
	}
	for kind, n := range rep.Faults {
		if seen[kind] != n {
			t.Errorf("%s: subscriber saw %d, report says %d", kind, seen[kind], n)
		}
	}
	if skewed == 0 {
		t.Error("no reading carries a skewed clock")
	}
}

func TestFleetSurvivesReconnectStormsAndFlakyLinks(t *testing.T) {
	broker := startBroker(t)
	rec := subscribe(t, broker, "devices/+/readings")
	fleet, err := NewFleet(Config{
		Broker: broker, Devices: 4, QoS: 1, Rate: 200, Duration: 1500 * time.Millisecond, Seed: 11,
		Faults: Faults{ReconnectEvery: 400 * time.Millisecond, FlakyMeanInterval: 500 * time.Millisecond, FlakyDowntime: 50 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := fleet.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	_ = rep.WriteTable(&table, 0)
	t.Log("\n" + table.String())
	if rep.Reconnects < 4*3 || rep.InjectedDisconnects < 4*3 {
		t.Errorf("reconnects %d, injected disconnects %d: want at least 3 storms of 4 devices", rep.Reconnects, rep.InjectedDisconnects)
	}
	if rep.Acked == 0 || rep.Acked+rep.Unacked != rep.Offered {
		t.Errorf("acked %d + unacked %d != offered %d", rep.Acked, rep.Unacked, rep.Offered)
	}
	// Every acked reading must reach the subscriber; mochi acks before it routes, so poll.
	missing := func() string {
		got := map[string]*seqSet{}
		for _, m := range rec.snapshot() {
			r := decodeReading(t, m.payload)
			if got[r.Device] == nil {
				got[r.Device] = &seqSet{}
			}
			got[r.Device].add(r.Seq)
		}
		for id, m := range rep.Manifest.Devices {
			for _, rg := range m.Acked {
				for s := rg.First; s <= rg.Last; s++ {
					if got[id] == nil || !got[id].has(s) {
						return fmt.Sprintf("%s seq %d", id, s)
					}
				}
			}
		}
		return ""
	}
	if !waitFor(t, 5*time.Second, func() bool { return missing() == "" }) {
		t.Fatalf("%s was acked but never arrived", missing())
	}
}
