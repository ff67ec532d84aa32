package firmwaresim

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkFleetPublish measures unpaced simulator throughput against an in-process mochi broker
// on loopback: b.N readings spread over a small fleet. It bounds what one firmware-sim process can
// offer an edge; the edge's own ack rate is measured against real binaries.
func BenchmarkFleetPublish(b *testing.B) {
	for _, qos := range []byte{0, 1} {
		b.Run(fmt.Sprintf("qos%d", qos), func(b *testing.B) {
			broker := startBroker(b)
			const devices = 8
			fleet, err := NewFleet(Config{
				Broker: broker, Devices: devices, QoS: qos, InFlight: 64,
				Count: uint64(b.N/devices + 1), Duration: time.Minute,
			})
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			rep, err := fleet.Run(context.Background())
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			done := rep.Written
			if qos == 1 {
				done = rep.Acked
				b.ReportMetric(float64(rep.AckLatency.P99.Microseconds()), "p99-ack-µs")
			}
			if done != rep.Offered {
				b.Fatalf("%d of %d readings completed", done, rep.Offered)
			}
			b.ReportMetric(rep.OfferedPerSecond, "readings/s")
			b.ReportMetric(float64(rep.Bytes)/float64(rep.Offered), "bytes/reading")
		})
	}
}
