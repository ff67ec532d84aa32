package forward

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/central"
	"github.com/tributary-iot/tributary/sync/protocol"
	"github.com/tributary-iot/tributary/sync/receive"
)

func TestMain(m *testing.M) {
	if os.Getenv(proxyChildEnv) == "1" {
		os.Exit(runProxyChild())
	}
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

// TestBackoffJitter checks the retry delay's bounds: full jitter over an exponential window
// that starts at BackoffMin and stops growing at BackoffMax, never below BackoffMin/2, and
// actually spread (a fleet reconnecting after an outage must not retry in step).
func TestBackoffJitter(t *testing.T) {
	f := &Forwarder{cfg: Config{BackoffMin: 100 * time.Millisecond, BackoffMax: 3 * time.Second}.withDefaults()}
	for attempt := 0; attempt < 40; attempt++ {
		window := min(f.cfg.BackoffMin<<min(attempt, 20), f.cfg.BackoffMax)
		lo, hi := f.cfg.BackoffMin/2, f.cfg.BackoffMin/2+window
		var least, most time.Duration = hi, 0
		for i := 0; i < 2000; i++ {
			d := f.backoff(attempt)
			if d < lo || d >= hi {
				t.Fatalf("attempt %d: delay %v outside [%v, %v)", attempt, d, lo, hi)
			}
			least, most = min(least, d), max(most, d)
		}
		// 2000 uniform draws cover all but a sliver of the window.
		if most-least < window*9/10 {
			t.Errorf("attempt %d: delays span only [%v, %v] of a %v window", attempt, least, most, window)
		}
	}
}

// TestDefaultBackoffResumesWithinSeconds: with the shipped defaults, however long central has
// been down, a lane's next attempt comes within a few seconds (so it resumes soon after central
// returns), yet after the first few failures the retries of one lane average at least a second
// apart, so a fleet does not hammer a central that is down.
func TestDefaultBackoffResumesWithinSeconds(t *testing.T) {
	f := &Forwarder{cfg: Config{}.withDefaults()}
	const bound = 5 * time.Second
	for attempt := 0; attempt < 200; attempt++ {
		var sum time.Duration
		for range 500 {
			d := f.backoff(attempt)
			if d > bound {
				t.Fatalf("after %d failures the default backoff waits %v: a lane would notice central is back only that late", attempt+1, d)
			}
			sum += d
		}
		if mean := sum / 500; attempt >= 4 && mean < time.Second {
			t.Fatalf("after %d failures the default backoff averages %v: a fleet would hammer central", attempt+1, mean)
		}
	}
}

// testCentral runs central in this process on a loopback port with one registered edge.
func testCentral(t *testing.T, cfg central.Config) (url, token string) {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	log, err := storage.Open(cfg.DataDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	token, _, err = receive.AddEdge(log, "gw-1")
	log.Close()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	done := make(chan error, 1)
	cfg.Listen = "127.0.0.1:0"
	cfg.Ready = func(a string) { addr <- a }
	go func() { done <- central.Run(ctx, cfg) }()
	select {
	case a := <-addr:
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("central: %v", err)
			}
		})
		scheme := "http://"
		if cfg.TLSCert != "" {
			scheme = "https://"
		}
		return scheme + a, token
	case err := <-done:
		cancel()
		t.Fatalf("central: %v", err)
	}
	return "", ""
}

// testReceiver runs central's receiving side in this process, on a log of its own, with one
// registered edge, gw-1, whose token it returns; tests serve it through their own handlers.
func testReceiver(t *testing.T, cfg receive.Config) (*receive.Receiver, *storage.Log, string) {
	t.Helper()
	clog, err := storage.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { clog.Close() })
	cfg.Log = clog
	rcv, err := receive.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	token, err := rcv.AddEdge("gw-1")
	if err != nil {
		t.Fatal(err)
	}
	return rcv, clog, token
}

func openLog(t testing.TB, dir string, partitions int) (*storage.Log, *storage.Stream) {
	log, err := storage.Open(dir, &storage.Options{SegmentBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	st, err := log.CreateStream("readings", storage.StreamConfig{Partitions: partitions})
	if err != nil {
		log.Close()
		t.Fatal(err)
	}
	return log, st
}

// keyFor returns a device key that the partitioner sends to partition p of n.
func keyFor(p, n int) []byte {
	for i := 0; ; i++ {
		k := []byte("sensor-" + strconv.Itoa(i))
		if storage.PartitionFor(k, n) == p {
			return k
		}
	}
}

func run(t *testing.T, f *Forwarder) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("forwarder: %v", err)
		}
	}
}

func laneOf(f *Forwarder, p int) LaneStatus {
	for _, s := range f.Status() {
		if s.Partition == p {
			return s
		}
	}
	return LaneStatus{}
}

// TestBandwidthCapLiveFirst forwards an incompressible backlog on three partitions through a
// 1 MB/s cap while bursts of live readings arrive on a fourth every 100 ms, against a real central
// on loopback. The cap holds on the wire and is used, and live bursts reach central within about
// one chunk's worth of tokens while the backlog is still draining.
//
// With the limiter's priority for live sends switched off, live latency in this setup stays about
// the same (waiters that wake together race for tokens and the live one wins often enough), so
// this test bounds live latency under a cap; limiter_test.go isolates live-first.
func TestBandwidthCapLiveFirst(t *testing.T) {
	const capBytes = 1 << 20
	url, token := testCentral(t, central.Config{DataDir: t.TempDir()})
	// Three backlog lanes with 8 chunks in flight each keep up to 24 backlog sends waiting for
	// tokens; the fourth partition is live.
	log, st := openLog(t, t.TempDir(), 4)
	defer log.Close()
	liveKey := keyFor(3, 4)
	rng := rand.New(rand.NewPCG(1, 2))
	var backlogBytes int
	for i := 0; i < 3000; i++ {
		v := random(rng, 1000)
		backlogBytes += len(v)
		if _, _, err := st.Append(context.Background(), storage.Record{Key: keyFor(i%3, 4), Value: v, Timestamp: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	f, err := New(log, Config{CentralURL: url, EdgeID: "gw-1", Token: token, BandwidthBytesPerSec: capBytes,
		MaxChunkBytes: 32 << 10, InFlight: 8, BackoffMin: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	stop := run(t, f)
	defer stop()

	// Live readings come in bursts as big as a backlog chunk, so a live chunk needs as many
	// tokens as a backlog one and only the limiter's order decides which goes first.
	var lat []time.Duration
	backlogDone := false
	for i := 0; i < 100 && !backlogDone; i++ {
		time.Sleep(100 * time.Millisecond)
		t0 := time.Now()
		var last int64
		for j := 0; j < 30; j++ {
			_, off, err := st.Append(context.Background(), storage.Record{Key: liveKey, Value: random(rng, 1000), Timestamp: t0})
			if err != nil {
				t.Fatal(err)
			}
			last = off
		}
		for laneOf(f, 3).Acked <= last {
			if time.Since(t0) > 10*time.Second {
				t.Fatalf("live reading %d not at central after 10s", last)
			}
			time.Sleep(2 * time.Millisecond)
		}
		// Only readings that had to compete with the backlog count.
		if backlogBehind(f) > 0 {
			lat = append(lat, time.Since(t0))
		} else {
			backlogDone = true
		}
	}
	for backlogBehind(f) > 0 {
		if time.Since(start) > 30*time.Second {
			t.Fatal("backlog not drained in 30s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	elapsed := time.Since(start)
	var wire int64
	for _, s := range f.Status() {
		wire += s.WireBytes
	}
	rate := float64(wire) / elapsed.Seconds()
	slices.Sort(lat)
	if len(lat) < 5 {
		t.Fatalf("only %d live readings arrived while the backlog drained; the cap did not slow it", len(lat))
	}
	p99 := lat[len(lat)*99/100]
	t.Logf("backlog of %d bytes drained in %v: %.0f wire bytes/s under a cap of %d; %d live readings meanwhile, latency p50 %v p99 %v max %v",
		backlogBytes, elapsed.Round(time.Millisecond), rate, capBytes, len(lat), lat[len(lat)/2], p99, lat[len(lat)-1])
	// The bucket starts full (a 50 ms burst) and each request adds ~512 bytes of headers to
	// what the cap counts; beyond that the average must hold.
	if rate > capBytes*1.1 {
		t.Errorf("wire rate %.0f bytes/s exceeds the cap %d", rate, capBytes)
	}
	if rate < capBytes/2 {
		t.Errorf("wire rate %.0f bytes/s is under half the cap %d: the limiter wastes the link", rate, capBytes)
	}
	// The live latency is logged, not asserted: a timing bound flakes on a loaded 2-core CI
	// machine, and as the doc comment says this setup does not separate live-first ordering from
	// plain fairness (a live chunk needs 31 ms of tokens at this cap; queued behind every backlog
	// chunk it would take up to 0.75 s).
	_ = p99
}

func backlogBehind(f *Forwarder) int64 {
	var n int64
	for p := 0; p < 3; p++ {
		s := laneOf(f, p)
		n += s.End - s.Acked
	}
	return n
}

// random returns incompressible bytes: zstd cannot shrink them, so raw bytes are wire bytes.
func random(rng *rand.Rand, n int) []byte {
	v := make([]byte, n)
	for j := range v {
		v[j] = byte(rng.Uint32())
	}
	return v
}

// TestConflictResumesAtCentralOffset delays the first chunk of a lane past central's reorder
// wait, so the chunks pipelined behind it get 409 with central's expected offset. The forwarder
// must resume from that offset at once (no backoff, no retry counted) and everything must land
// exactly once.
func TestConflictResumesAtCentralOffset(t *testing.T) {
	rcv, clog, token := testReceiver(t, receive.Config{Partitions: 2, ReorderWait: 100 * time.Millisecond})
	var delayed atomic.Bool
	var conflicts atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.Header.Get(protocol.HeaderBase) == "0" && delayed.CompareAndSwap(false, true) {
			time.Sleep(500 * time.Millisecond) // the first chunk is overtaken by its successors
		}
		sw := &statusWriter{ResponseWriter: w}
		rcv.ServeHTTP(sw, r)
		if sw.code == http.StatusConflict {
			conflicts.Add(1)
		}
	}))
	defer srv.Close()

	log, st := openLog(t, t.TempDir(), 1)
	defer log.Close()
	const n = 2000
	for i := 0; i < n; i++ {
		v := fmt.Appendf(nil, `{"device":"d%d","seq":%d}`, i%10, i)
		if _, _, err := st.Append(context.Background(), storage.Record{Key: fmt.Appendf(nil, "d%d", i%10), Value: v, Timestamp: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	f, err := New(log, Config{CentralURL: srv.URL, EdgeID: "gw-1", Token: token, MaxChunkBytes: 4 << 10, InFlight: 4,
		BackoffMin: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	} // a backoff would show as a multi-second stall
	start := time.Now()
	stop := run(t, f)
	for laneOf(f, 0).Acked < n {
		if time.Since(start) > 20*time.Second {
			stop()
			t.Fatalf("central acked %d of %d in 20s", laneOf(f, 0).Acked, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	elapsed := time.Since(start)
	stop()
	if conflicts.Load() == 0 {
		t.Fatal("no 409: the test did not overtake the first chunk")
	}
	if r := laneOf(f, 0).Retries; r != 0 || elapsed > 4*time.Second {
		t.Errorf("after %d conflicts: %d retries, caught up in %v; a 409 should resume at once", conflicts.Load(), r, elapsed)
	}
	// Exactly once at central: each edge offset once, all of them.
	seen := map[int64]bool{}
	cst, err := clog.Stream("readings")
	if err != nil {
		t.Fatal(err)
	}
	for p := 0; p < cst.Partitions(); p++ {
		rd := cst.Partition(p).NewReader(0, nil)
		for {
			e, err := rd.Next(context.Background())
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			off, _ := strconv.ParseInt(string(e.HeaderValue(protocol.ProvEdgeOffset)), 10, 64)
			if seen[off] {
				t.Fatalf("edge offset %d stored twice", off)
			}
			seen[off] = true
		}
	}
	if len(seen) != n {
		t.Fatalf("central holds %d records, want %d", len(seen), n)
	}
	t.Logf("%d conflicts answered; all %d records stored once in %v", conflicts.Load(), n, elapsed.Round(time.Millisecond))
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

// TestBackoffRestartsAfterProgress fails a lane's requests a dozen times, so its backoff grows to
// seconds, lets it forward, then fails one request: that new outage must be retried after about
// BackoffMin, not after the grown backoff of the old one.
func TestBackoffRestartsAfterProgress(t *testing.T) {
	rcv, _, token := testReceiver(t, receive.Config{Partitions: 1})
	var (
		mu        sync.Mutex
		failLeft  = 12
		failedAt  time.Time     // the last refused request
		retryWait time.Duration // from then to the next request
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		now := time.Now()
		if !failedAt.IsZero() {
			retryWait, failedAt = now.Sub(failedAt), time.Time{}
		}
		fail := failLeft > 0
		if fail {
			failLeft--
			failedAt = now
		}
		mu.Unlock()
		if fail {
			http.Error(w, "central is restarting", http.StatusInternalServerError)
			return
		}
		rcv.ServeHTTP(w, r)
	}))
	defer srv.Close()

	log, st := openLog(t, t.TempDir(), 1)
	defer log.Close()
	appendOne := func(seq int) {
		t.Helper()
		rec := storage.Record{Key: []byte("d1"), Value: fmt.Appendf(nil, `{"seq":%d}`, seq), Timestamp: time.Now()}
		if _, _, err := st.Append(context.Background(), rec); err != nil {
			t.Fatal(err)
		}
	}
	appendOne(0)
	const backoffMin = time.Millisecond
	f, err := New(log, Config{CentralURL: srv.URL, EdgeID: "gw-1", Token: token, BackoffMin: backoffMin, BackoffMax: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, f)
	defer stop()
	wait := func(n int64, within time.Duration) {
		t.Helper()
		for deadline := time.Now().Add(within); laneOf(f, 0).Acked < n; time.Sleep(2 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("central acked %d of %d after %v", laneOf(f, 0).Acked, n, within)
			}
		}
	}
	// Twelve failures in a row: the next backoff window is 1ms<<12, about 4s.
	wait(1, 30*time.Second)
	if r := laneOf(f, 0).Retries; r != 12 {
		t.Fatalf("%d retries during the first outage, want 12", r)
	}

	mu.Lock()
	failLeft, retryWait = 1, 0
	mu.Unlock()
	appendOne(1)
	wait(2, 30*time.Second)
	mu.Lock()
	got := retryWait
	mu.Unlock()
	if got == 0 || got > 250*time.Millisecond {
		t.Errorf("retried %v after a failure that followed progress; want about BackoffMin (%v), not the first outage's backoff", got, backoffMin)
	}
	t.Logf("retry after the second outage's first failure: %v", got)
}
