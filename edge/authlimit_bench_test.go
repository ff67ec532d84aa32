package edge

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// BenchmarkAckLatencyDuringLoginFlood measures a connected device's QoS 1 ack latency while 8
// goroutines send wrong-password CONNECTs for 3 s, from one source address and from 40, against
// the same flood with the bounds lifted (the behaviour before them: every CONNECT a bcrypt, all
// at once). Compare the variants of one run as ratios; the machine may be shared.
//
//	go test ./edge -run '^$' -bench AckLatencyDuringLoginFlood -benchtime 1x
func BenchmarkAckLatencyDuringLoginFlood(b *testing.B) {
	unbounded := AuthConfig{MaxConcurrentChecks: 64, FailuresBeforeBackoff: 1 << 30}
	for _, v := range []struct {
		name    string
		auth    AuthConfig
		sources int
	}{
		{"none", AuthConfig{}, 0},
		{"one-source/bounded", AuthConfig{}, 1},
		{"one-source/unbounded", unbounded, 1},
		{"40-sources/bounded", AuthConfig{}, 40},
		{"40-sources/unbounded", unbounded, 40},
	} {
		b.Run(v.name, func(b *testing.B) {
			for range b.N {
				during, checks := loginFlood(b, v.auth, v.sources, 3*time.Second)
				b.ReportMetric(float64(percentile(during, 50).Microseconds())/1000, "p50-ack-ms")
				b.ReportMetric(float64(percentile(during, 99).Microseconds())/1000, "p99-ack-ms")
				b.ReportMetric(float64(checks), "bcrypt-checks")
			}
		})
	}
}

// loginFlood runs an agent with one connected device publishing every 5 ms while 8 goroutines
// flood CONNECTs with a wrong password from the given number of source addresses.
func loginFlood(b *testing.B, auth AuthConfig, sources int, d time.Duration) ([]time.Duration, int64) {
	b.Helper()
	dir := b.TempDir()
	addDeviceAtCost(b, dir, "good", "right-password", bcrypt.DefaultCost)
	a, stop := startAgent(b, Config{DataDir: dir, Auth: auth})
	defer stop()
	conn, err := dialFrom(b, "127.0.0.1", a.MQTTAddr())
	if err != nil {
		b.Fatal(err)
	}
	good, _ := connectRaw(b, conn, "good", 4, "good", "right-password", true)
	before := a.cache.PasswordChecks()
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for g := range 8 * min(sources, 1) {
		wg.Go(func() {
			for i := 0; time.Now().Before(deadline); i++ {
				src := fmt.Sprintf("127.0.2.%d", 1+(g+8*i)%sources)
				connackFrom(b, src, a.MQTTAddr(), "good", "wrong") // refused either way; errors count as refused too
			}
		})
	}
	var during []time.Duration
	for id := uint16(1); time.Now().Before(deadline); id++ {
		start := time.Now()
		good.publish("devices/good/readings", []byte(`{"v":1}`), id, 1, false)
		good.expectAck(id)
		during = append(during, time.Since(start))
		time.Sleep(5 * time.Millisecond)
	}
	wg.Wait()
	return during, a.cache.PasswordChecks() - before
}
