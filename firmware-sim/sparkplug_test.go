package firmwaresim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/devices/sparkplug"
)

// TestSparkplugFleet: in Sparkplug mode every device is an edge node that publishes NBIRTH (seq 0)
// and DBIRTH with aliases, then DDATA with aliases only and seq counting on, and NDEATH when it
// ends. A host that resolves the aliases (devices/sparkplug) renders what a subscriber received
// as the edge stores it, and verification finds every reading by its key, with the skipped seqs
// as gaps and no unresolved alias.
func TestSparkplugFleet(t *testing.T) {
	broker := startBroker(t)
	got := subscribe(t, broker, "spBv1.0/#")
	fleet, err := NewFleet(Config{Broker: broker, Devices: 2, Count: 300, QoS: 1, Seed: 3,
		Sparkplug: &SparkplugConfig{Group: "plant1", SkipFraction: 0.02}})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := fleet.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Acked != 600 {
		t.Fatalf("acked %d readings, want 600", rep.Acked)
	}
	var skipped uint64
	for _, d := range rep.PerDevice {
		skipped += d.SeqSkipped
	}
	if skipped == 0 {
		t.Fatal("no seq skipped with skip fraction 0.02 over 600 readings")
	}
	// 2 births + 300 data + 1 death per node.
	if !waitFor(t, 10*time.Second, func() bool { return len(got.snapshot()) >= 2*303 }) {
		t.Fatalf("subscriber got %d messages, want %d", len(got.snapshot()), 2*303)
	}

	host := sparkplug.NewHost(nil)
	var lines bytes.Buffer
	for i, m := range got.snapshot() {
		tp, err := sparkplug.ParseTopic(m.topic)
		if err != nil {
			t.Fatal(err)
		}
		p, err := sparkplug.Decode(m.payload)
		if err != nil {
			t.Fatalf("%s: %v", m.topic, err)
		}
		if tp.Type == sparkplug.DDATA {
			for _, metric := range p.Metrics {
				if metric.Name != nil || metric.Alias == nil {
					t.Fatalf("DDATA metric %v: want an alias and no name", metric)
				}
			}
		}
		if tp.Type == sparkplug.NBIRTH && p.GetSeq() != 0 {
			t.Errorf("NBIRTH seq %d, want 0", p.GetSeq())
		}
		res, err := host.Process(tp, p)
		if err != nil {
			t.Fatal(err)
		}
		if res.Gap != nil {
			gap, _ := json.Marshal(map[string]any{"gap": "sparkplug_seq", "missing": res.Gap.Missing})
			fmt.Fprintf(&lines, `{"stream":"sparkplug","offset":%d,"key":%q,"value":%s}`+"\n", i, tp.NodeKey(), gap)
		}
		fmt.Fprintf(&lines, `{"stream":"sparkplug","offset":%d,"key":%q,"timestamp":%d,"value":%s}`+"\n", i, tp.Key(), time.Now().UnixMilli(), res.JSON)
	}
	v, err := Verify(&lines, &VerifyOptions{Manifest: rep.Manifest})
	if err != nil {
		t.Fatal(err)
	}
	if !v.OK() || v.Received != 600 || v.Misrouted != 0 || len(v.Devices) != 2 || !strings.HasPrefix(v.Devices[0].Device, "plant1/dev-0001/sensor") {
		t.Fatalf("verification: %+v %v", v, v.Err())
	}
	sp := v.Sparkplug
	if sp.Births != 4 || sp.Deaths != 2 || sp.Data != 600 || sp.SeqGaps != skipped || sp.MissingMessages != skipped || sp.UnresolvedAliases != 0 {
		t.Fatalf("sparkplug counts %+v, want 4 births, 2 deaths, 600 data, %d gaps", sp, skipped)
	}
}
