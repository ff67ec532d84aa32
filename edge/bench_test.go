//go:build unix

package edge

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/tributary-iot/tributary/internal/testcpu"
)

// The benchmarks measure durable QoS 1 readings/s through the agent, next to the ceiling: the same
// mochi broker with an allow-all hook and no persistence, acking as soon as it has read a publish.
// The load generator is rawClient (one goroutine and one socket per device, no paho machinery), so
// the client side costs little CPU next to the broker. CPU-µs/reading counts both, from getrusage:
// on a shared machine it moves far less than readings/s.
//
//	go test ./edge/ -run '^$' -bench . -benchtime 100000x
//
// EDGE_BENCH_PARTITIONS sets the partition count of the durable runs and EDGE_BENCH_LINGER their
// group_linger (defaults: the agent's). Partitions matter most: each is a file fsynced per group
// commit, and on a 2-core VM a goroutine woken after its fdatasync waits for a P.

func ceilingBroker(b *testing.B) string {
	s := mqtt.New(&mqtt.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := s.AddHook(new(auth.AllowHook), nil); err != nil {
		b.Fatal(err)
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
	if err := s.AddListener(tcp); err != nil {
		b.Fatal(err)
	}
	if err := s.Serve(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return tcp.Address()
}

func benchTarget(b *testing.B, durable bool) (string, func()) {
	if !durable {
		return ceilingBroker(b), func() {}
	}
	parts, _ := strconv.Atoi(os.Getenv("EDGE_BENCH_PARTITIONS"))
	linger, _ := time.ParseDuration(os.Getenv("EDGE_BENCH_LINGER"))
	a, _ := startAgent(b, Config{AnonymousPublish: "any", MaxPendingPerClient: 256, DefaultPartitions: parts, GroupLinger: linger})
	before := a.Log().Stats()
	report := func() {
		st := a.Log().Stats()
		if n := st.Fsyncs - before.Fsyncs; n > 0 {
			b.ReportMetric(float64(st.RecordsAppended-before.RecordsAppended)/float64(n), "readings/fsync")
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "fsyncs/s")
			mfs, _ := a.metrics.registry.Gather()
			for _, mf := range mfs {
				if mf.GetName() == "tributary_edge_fsync_seconds" {
					h := mf.GetMetric()[0].GetHistogram()
					b.ReportMetric(h.GetSampleSum()/float64(h.GetSampleCount())*1000, "fsync-ms")
				}
			}
		}
	}
	return a.MQTTAddr(), report
}

// BenchmarkDevices1000 has 1,000 devices, each publishing QoS 1 and waiting for the PUBACK
// before its next reading, as simple firmware does.
func BenchmarkDevices1000(b *testing.B) { benchDevices(b, 1000, 1) }

// BenchmarkDevices100 is the same with 100 devices.
func BenchmarkDevices100(b *testing.B) { benchDevices(b, 100, 1) }

// BenchmarkDevices1000Window16 has 1,000 devices that each keep up to 16 QoS 1 readings in
// flight, as the firmware simulator's default does (its --in-flight) and as firmware with an
// MQTT client's outbound window does.
func BenchmarkDevices1000Window16(b *testing.B) { benchDevices(b, 1000, 16) }

// BenchmarkDevices100Window16 is the same with 100 devices.
func BenchmarkDevices100Window16(b *testing.B) { benchDevices(b, 100, 16) }

// benchDevices runs n devices, each with up to window readings unacked, against the bare broker
// (ceiling) and the agent (durable) in one run. allocs/reading counts the whole process's heap
// allocations, the load generator's included: the durable figure less the ceiling's is what the
// agent adds to mochi's own.
func benchDevices(b *testing.B, n, window int) {
	for _, mode := range []string{"ceiling", "durable"} {
		b.Run(mode, func(b *testing.B) {
			b.ReportAllocs()
			addr, report := benchTarget(b, mode == "durable")
			clients := make([]*rawClient, n)
			for i := range clients {
				clients[i], _ = dialRaw(b, addr, fmt.Sprintf("bench-%d", i), 4, "", "")
			}
			per := max(b.N/n, 1)
			payload := []byte(`{"ts":1700000000000,"temp":21.5,"hum":40.1,"seq":0}`)
			b.ResetTimer()
			cpu := testcpu.Self()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			mallocs := ms.Mallocs
			var wg sync.WaitGroup
			for i, c := range clients {
				topic := "devices/bench-" + strconv.Itoa(i) + "/readings"
				id := func(k int) uint16 { return uint16(k%65000 + 1) }
				if window == 1 {
					wg.Go(func() {
						for k := range per {
							c.publish(topic, payload, id(k), 1, false)
							c.expectAck(id(k))
						}
					})
					continue
				}
				acked := make(chan struct{}, window)
				wg.Go(func() { // reader: a device's acks come back in its packet order
					for k := range per {
						c.expectAck(id(k))
						acked <- struct{}{}
					}
				})
				wg.Go(func() {
					for k := range per {
						if k >= window {
							<-acked // keep at most window readings in flight
						}
						c.publish(topic, payload, id(k), 1, false)
					}
				})
			}
			wg.Wait()
			total := per * n
			runtime.ReadMemStats(&ms)
			b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "readings/s")
			b.ReportMetric(float64((testcpu.Self()-cpu).Microseconds())/float64(total), "CPU-µs/reading")
			b.ReportMetric(float64(ms.Mallocs-mallocs)/float64(total), "allocs/reading")
			b.ReportMetric(rssMiB(), "RSS-MiB")
			report()
		})
	}
}

// BenchmarkSingleClient100InFlight is one bridge client keeping 100 QoS 1 readings in flight for
// 100 sensors.
func BenchmarkSingleClient100InFlight(b *testing.B) {
	for _, mode := range []string{"ceiling", "durable"} {
		b.Run(mode, func(b *testing.B) {
			addr, report := benchTarget(b, mode == "durable")
			c, _ := dialRaw(b, addr, "bridge", 4, "", "")
			topics := make([]string, 100)
			for i := range topics {
				topics[i] = "devices/sensor-" + strconv.Itoa(i) + "/readings"
			}
			payload := []byte(`{"ts":1700000000000,"temp":21.5,"hum":40.1,"seq":0}`)
			const window = 100
			id := func(i int) uint16 { return uint16(i%65000 + 1) }
			b.ResetTimer()
			cpu := testcpu.Self()
			acked := make(chan struct{}, window)
			done := make(chan struct{})
			go func() { // reader: acks must come back in packet order
				defer close(done)
				for i := range b.N {
					c.expectAck(id(i))
					acked <- struct{}{}
				}
			}()
			var buf []byte
			for i := range b.N {
				if i >= window {
					<-acked // keep at most window readings in flight
				}
				buf = append(buf[:0], c.publishBytes(topics[i%100], payload, id(i), 1, false)...)
				c.write(buf)
			}
			for range min(b.N, window) {
				<-acked
			}
			<-done
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "readings/s")
			b.ReportMetric(float64((testcpu.Self()-cpu).Microseconds())/float64(b.N), "CPU-µs/reading")
			b.ReportMetric(rssMiB(), "RSS-MiB")
			report()
		})
	}
}

func rssMiB() float64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 64)
			return kb / 1024
		}
	}
	return 0
}
