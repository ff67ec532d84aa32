package edge

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/crypto/bcrypt"

	"github.com/tributary-iot/tributary/devices"
)

// dialFrom connects to addr from a chosen loopback address, so one test can play several sources.
func dialFrom(t testing.TB, src, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	return d.Dial("tcp", addr)
}

func addDeviceAtCost(t testing.TB, dataDir, id, password string, cost int) {
	t.Helper()
	reg := devices.NewRegistry(filepath.Join(dataDir, "devices.db"), &devices.RegistryOptions{BcryptCost: cost})
	if err := reg.Add(devices.Device{ID: id}, password); err != nil {
		t.Fatal(err)
	}
}

// connackFrom sends one CONNECT from src and returns the CONNACK's reason code and how long it
// took. It reports errors instead of failing the test, so flood goroutines can call it.
func connackFrom(t testing.TB, src, addr, user, pass string) (byte, time.Duration, error) {
	conn, err := dialFrom(t, src, addr)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: "probe",
			UsernameFlag: true, Username: []byte(user), PasswordFlag: true, Password: []byte(pass)},
	}
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		return 0, 0, err
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	if _, err := conn.Write(buf.Bytes()); err != nil {
		return 0, 0, err
	}
	// CONNACK: fixed header 0x20, length 2, flags, return code.
	ack := make([]byte, 4)
	if _, err := io.ReadFull(conn, ack); err != nil {
		return 0, 0, fmt.Errorf("read CONNACK: %w", err)
	}
	if ack[0] != packets.Connack<<4 {
		return 0, 0, fmt.Errorf("got packet %#x, want CONNACK", ack[0])
	}
	return ack[3], time.Since(start), nil
}

// TestLoginFloodBacksOff: a source sending 400 wrong passwords is refused without a bcrypt check after
// failures_before_backoff of them, while a good device on another address keeps connecting and
// publishing. The good device's ack latency is logged, not asserted (the machine is shared).
func TestLoginFloodBacksOff(t *testing.T) {
	dir := t.TempDir()
	addDeviceAtCost(t, dir, "good", "right-password", bcrypt.DefaultCost)
	a, _ := startAgent(t, Config{DataDir: dir, Auth: AuthConfig{FailuresBeforeBackoff: 5, BackoffBase: time.Second}})
	conn, err := dialFrom(t, "127.0.0.1", a.MQTTAddr())
	if err != nil {
		t.Fatal(err)
	}
	good, ack := connectRaw(t, conn, "good", 4, "good", "right-password", true)
	if ack.ReasonCode != 0 {
		t.Fatalf("good device refused: %d", ack.ReasonCode)
	}
	latencies := func(stop <-chan struct{}, n int) []time.Duration {
		var out []time.Duration
		for i := range n {
			select {
			case <-stop:
				return out
			default:
			}
			start := time.Now()
			good.publish("devices/good/readings", []byte(`{"v":1}`), uint16(i%60000+1), 1, false)
			good.expectAck(uint16(i%60000 + 1))
			out = append(out, time.Since(start))
			time.Sleep(5 * time.Millisecond)
		}
		return out
	}
	baseline := latencies(nil, 100)

	before := a.cache.PasswordChecks()
	var attempts, refused, failed atomic.Int64
	var firstErr atomic.Pointer[error]
	stop := make(chan struct{})
	var wg sync.WaitGroup
	// Bounded by count, and by time only generously: on a loaded machine the first checks are slow.
	deadline := time.Now().Add(20 * time.Second)
	for range 4 {
		wg.Go(func() {
			for time.Now().Before(deadline) && attempts.Add(1) <= 400 {
				code, _, err := connackFrom(t, "127.0.0.2", a.MQTTAddr(), "good", "wrong")
				switch {
				case err != nil:
					failed.Add(1)
					firstErr.CompareAndSwap(nil, &err)
				case code != 0:
					refused.Add(1)
				}
			}
		})
	}
	var during []time.Duration
	done := make(chan struct{})
	go func() { during = latencies(stop, 1000); close(done) }()
	wg.Wait()
	close(stop)
	<-done
	checks := a.cache.PasswordChecks() - before

	throttled := metricSum(t, a.metrics.registry, "tributary_edge_connect_refused_total") -
		float64(checks) // every refusal that ran no check
	t.Logf("flood: %d CONNECTs from 127.0.0.2 refused, %d bcrypt checks, %.0f refused without one", refused.Load(), checks, throttled)
	t.Logf("good device ack latency: before p50 %v p99 %v; during flood p50 %v p99 %v",
		percentile(baseline, 50), percentile(baseline, 99), percentile(during, 50), percentile(during, 99))
	if e := firstErr.Load(); e != nil {
		t.Logf("%d flood CONNECTs got no CONNACK; first: %v", failed.Load(), *e)
	}
	if refused.Load() < 200 {
		t.Fatalf("only %d of 400 flood CONNECTs answered", refused.Load())
	}
	// 5 failures, then 1, 2, 4, 8 s of backoff: at most about 10 checks in 20 s, plus those
	// already past the backoff check when a failure landed (up to 3 other clients each time).
	if checks > 30 {
		t.Errorf("%d bcrypt checks for %d wrong-password CONNECTs from one source: no backoff", checks, refused.Load())
	}
	// The backed-off source is the flooder's, not the device's: it still logs in from its own.
	if code, _, err := connackFrom(t, "127.0.0.1", a.MQTTAddr(), "good", "right-password"); err != nil || code != 0 {
		t.Errorf("good device refused during another source's backoff: code %d, %v", code, err)
	}
	if code, _, err := connackFrom(t, "127.0.0.2", a.MQTTAddr(), "good", "right-password"); err != nil || code == 0 {
		t.Errorf("backed-off source accepted without waiting: code %d, %v", code, err)
	}
}

// TestUnknownDeviceConnackTiming: over a real socket, a CONNECT for an unknown device id takes as
// long to refuse as one for a known id with a wrong password (each from its own source address,
// so backoff plays no part).
func TestUnknownDeviceConnackTiming(t *testing.T) {
	dir := t.TempDir()
	addDeviceAtCost(t, dir, "known", "right-password", bcrypt.DefaultCost)
	a, _ := startAgent(t, Config{DataDir: dir})
	_, _, _ = connackFrom(t, "127.0.0.9", a.MQTTAddr(), "warm-up", "x")
	var known, unknown []time.Duration
	for i := range 5 {
		for _, user := range []string{"known", "nobody-here"} {
			code, d, err := connackFrom(t, net.IPv4(127, 0, 1, byte(10+i)).String(), a.MQTTAddr(), user, "wrong")
			if err != nil || code == 0 {
				t.Fatalf("%s: code %d, %v", user, code, err)
			}
			if user == "known" {
				known = append(known, d)
			} else {
				unknown = append(unknown, d)
			}
		}
	}
	k, u := percentile(known, 50), percentile(unknown, 50)
	t.Logf("median CONNACK: known id, wrong password %v; unknown id %v", k, u)
	if u < k/3 {
		t.Errorf("unknown id refused in %v, known id in %v: CONNACK timing tells which ids exist", u, k)
	}
}

func percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, len(s)*p/100)]
}
