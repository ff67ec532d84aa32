package edge

import (
	"strconv"
	"testing"
	"time"
)

// TestAckLatencyHistogram checks tributary_edge_ack_latency_seconds against what devices see:
// one observation per acked reading, none longer than the device's own wait from writing the
// PUBLISH to reading its PUBACK (which holds the edge's part and the network's), and all of them
// at least as long as the group commit they waited for.
func TestAckLatencyHistogram(t *testing.T) {
	// A linger makes each commit wait a known time, so the edge's figure cannot be near zero.
	const linger = 3 * time.Millisecond
	a, _ := startAgent(t, Config{AnonymousPublish: "any", GroupLinger: linger})
	const devices, per = 4, 25
	waited := make(chan time.Duration, devices)
	for i := range devices {
		c, _ := dialRaw(t, a.MQTTAddr(), "lat-"+strconv.Itoa(i), 4, "", "")
		topic := "devices/lat-" + strconv.Itoa(i) + "/readings"
		go func() {
			var sum time.Duration
			for k := range per {
				id := uint16(k + 1)
				start := time.Now()
				c.publish(topic, []byte(`{"v":1}`), id, 1, false)
				c.expectAck(id)
				sum += time.Since(start)
			}
			waited <- sum
		}()
	}
	var deviceSum time.Duration
	for range devices {
		deviceSum += <-waited
	}

	// The edge observes an ack just after its write returns, which may be after the device read it.
	var count uint64
	var sum float64
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		count, sum = ackLatency(t, a)
		if count >= devices*per || time.Now().After(deadline) {
			break
		}
	}
	if got := count; got != devices*per {
		t.Fatalf("ack latency histogram has %d observations, want one per acked reading: %d", got, devices*per)
	}
	edgeSum := time.Duration(sum * float64(time.Second))
	if edgeSum > deviceSum {
		t.Errorf("the edge counted %v of ack latency in all, more than the devices waited (%v)", edgeSum, deviceSum)
	}
	if min := time.Duration(devices*per) * linger / 2; edgeSum < min {
		t.Errorf("the edge counted %v of ack latency for %d readings that each waited for a %v linger (want at least %v)",
			edgeSum, devices*per, linger, min)
	}
	t.Logf("ack latency: edge %v, devices %v, per reading", edgeSum/(devices*per), deviceSum/(devices*per))
}

// ackLatency returns the observations and their sum of the edge's ack latency histogram.
func ackLatency(t *testing.T, a *Agent) (count uint64, sum float64) {
	mfs, err := a.metrics.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "tributary_edge_ack_latency_seconds" {
			h := mf.GetMetric()[0].GetHistogram()
			return h.GetSampleCount(), h.GetSampleSum()
		}
	}
	t.Fatal("no tributary_edge_ack_latency_seconds in the edge's metrics")
	return 0, 0
}
