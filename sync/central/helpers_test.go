package central_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tributary-iot/tributary/internal/testfleet"
	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/central"
	"github.com/tributary-iot/tributary/sync/consume"
	"github.com/tributary-iot/tributary/sync/receive"
)

const childEnv = "TRIBUTARY_TEST_CENTRAL_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		runChild()
		return
	}
	if os.Getenv(edgeChildEnv) == "1" {
		runEdgeChild()
		return
	}
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

// runChild is central as a child process, so tests can SIGKILL it.
func runChild() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	err := central.Run(ctx, central.Config{DataDir: os.Getenv("CENTRAL_DIR"), Listen: os.Getenv("CENTRAL_LISTEN"),
		QuotaBytes: parseInt(os.Getenv("CENTRAL_QUOTA")), Kafka: central.KafkaListener{Listen: os.Getenv("CENTRAL_KAFKA")},
		MaxStreams: int(parseInt(os.Getenv("CENTRAL_MAX_STREAMS"))), MaxConnections: int(parseInt(os.Getenv("CENTRAL_MAX_CONNS"))),
		BodyTimeout: time.Duration(parseInt(os.Getenv("CENTRAL_BODY_TIMEOUT_MS"))) * time.Millisecond,
		Ready:       func(addr string) { fmt.Printf("READY %s\n", addr) }})
	if err != nil {
		fmt.Fprintln(os.Stderr, "central:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func parseInt(s string) int64 {
	var n int64
	fmt.Sscan(s, &n)
	return n
}

// childCentral is a central child process on a fixed address.
type childCentral struct {
	t      *testing.T
	dir    string
	listen string
	cmd    *exec.Cmd
	quota  int64
	kafka  string // Kafka listener address, when set
	// maxStreams is central's max_streams; 0 the default.
	maxStreams int
	// maxConns and bodyTimeout are central's max_connections and body_timeout; 0 the defaults.
	maxConns    int
	bodyTimeout time.Duration
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startChildCentral starts central as a child process on a free loopback port, with a new data
// directory in which edge gw-1 is registered and limits' settings (zero: the defaults), and stops
// it when the test ends. It returns the child, central's URL and gw-1's token.
func startChildCentral(t *testing.T, limits childCentral) (c *childCentral, url, token string) {
	t.Helper()
	c = &limits
	c.t, c.dir, c.listen = t, t.TempDir(), freeAddr(t)
	token = addEdge(t, c.dir, "gw-1")
	c.start()
	t.Cleanup(c.stop)
	return c, "http://" + c.listen, token
}

func (c *childCentral) start() {
	c.t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", "CENTRAL_DIR="+c.dir, "CENTRAL_LISTEN="+c.listen,
		fmt.Sprintf("CENTRAL_QUOTA=%d", c.quota), "CENTRAL_KAFKA="+c.kafka, fmt.Sprintf("CENTRAL_MAX_STREAMS=%d", c.maxStreams),
		fmt.Sprintf("CENTRAL_MAX_CONNS=%d", c.maxConns), fmt.Sprintf("CENTRAL_BODY_TIMEOUT_MS=%d", c.bodyTimeout.Milliseconds()))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "READY ") {
				ready <- true
			}
		}
		ready <- false
	}()
	select {
	case ok := <-ready:
		if !ok {
			cmd.Wait()
			c.t.Fatal("central child exited before serving")
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		c.t.Fatal("central child did not start in 30s")
	}
	c.cmd = cmd
}

func (c *childCentral) kill() {
	if c.cmd == nil {
		return
	}
	c.cmd.Process.Signal(syscall.SIGKILL)
	c.cmd.Wait()
	c.cmd = nil
}

func (c *childCentral) stop() {
	if c.cmd == nil {
		return
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		c.kill()
	}
	c.cmd = nil
}

// addEdge registers an edge in a central data directory that no process has open.
func addEdge(t *testing.T, dir, id string) string { return addEdgeTB(t, dir, id) }

func addEdgeTB(t testing.TB, dir, id string) string {
	t.Helper()
	log, err := storage.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	token, _, err := receive.AddEdge(log, id)
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// startCentral runs central in this process on a loopback port.
func startCentral(t *testing.T, dir string) (url string, stop func()) { return startCentralTB(t, dir) }

func startCentralTB(t testing.TB, dir string) (url string, stop func()) {
	t.Helper()
	addr, stop := runCentral(t, central.Config{DataDir: dir, Fsync: os.Getenv("BENCH_FSYNC"),
		Console: central.ConsoleOptions{Off: os.Getenv("BENCH_CONSOLE") == "off"}})
	return "http://" + addr, stop
}

// runCentral runs central in this process with cfg (Listen defaults to 127.0.0.1:0) and returns
// its bound address once it serves; stop cancels it and fails the test if Run returned an error.
// cfg.Ready is the helper's.
func runCentral(t testing.TB, cfg central.Config) (addr string, stop func()) {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	ready := make(chan string, 1)
	cfg.Ready = func(a string) { ready <- a }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- central.Run(ctx, cfg) }()
	select {
	case addr = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("central: %v", err)
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatal("central not serving after 60s")
	}
	return addr, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("central: %v", err)
		}
	}
}

// fleet writes realistic readings: hundreds of devices, slowly varying values, ~120-byte JSON.
type fleet struct {
	devices []string
	seq     []int64
	phase   []float64
	rng     *rand.Rand
}

func newFleet(n int, seed uint64) *fleet {
	f := &fleet{rng: rand.New(rand.NewPCG(seed, seed+1))}
	for i := 0; i < n; i++ {
		f.devices = append(f.devices, fmt.Sprintf("sensor-%04d", i))
		f.seq = append(f.seq, 0)
		f.phase = append(f.phase, f.rng.Float64()*math.Pi*2)
	}
	return f
}

type reading struct {
	Device string  `json:"device"`
	Seq    int64   `json:"seq"`
	Temp   float64 `json:"temp_c"`
	Hum    float64 `json:"humidity"`
	Batt   float64 `json:"battery_v"`
	TS     int64   `json:"ts"`
}

func (f *fleet) next(now time.Time) storage.Record {
	i := f.rng.IntN(len(f.devices))
	f.seq[i]++
	t := float64(f.seq[i]) / 600
	r := reading{Device: f.devices[i], Seq: f.seq[i],
		Temp: math.Round((21+3*math.Sin(t+f.phase[i]))*10) / 10,
		Hum:  math.Round((45+5*math.Cos(t/2+f.phase[i]))*10) / 10,
		Batt: math.Round((3.7-float64(f.seq[i])/1e6)*100) / 100,
		TS:   now.UnixMilli()}
	v, _ := json.Marshal(r)
	return storage.Record{Key: []byte(r.Device), Value: v, Timestamp: now,
		Headers: []storage.Header{{Key: "topic", Value: []byte("devices/" + r.Device + "/readings")},
			{Key: "receive-time", Value: []byte(fmt.Sprint(now.UnixMilli()))}}}
}

// appendAll appends n readings to the edge log in pipelined batches and returns when all are durable.
func appendAll(t testing.TB, st *storage.Stream, f *fleet, n int) {
	t.Helper()
	a := testfleet.NewAppender(t, st)
	now := time.Now()
	for i := 0; i < n; i++ {
		a.Append(f.next(now))
	}
	a.Wait()
}

// checker verifies a merged stream: every (device, seq) once, in order per device.
type checker struct {
	mu    sync.Mutex
	last  map[string]int64
	count int
	dups  int
	order int
	seen  map[string]map[int64]bool
}

func newChecker() *checker {
	return &checker{last: map[string]int64{}, seen: map[string]map[int64]bool{}}
}

func (c *checker) add(m consume.Message) error {
	var r reading
	if err := json.Unmarshal(m.Payload(), &r); err != nil {
		return fmt.Errorf("message %d/%d: %w", m.Partition, m.Offset, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.count++
	if c.seen[r.Device] == nil {
		c.seen[r.Device] = map[int64]bool{}
	}
	if c.seen[r.Device][r.Seq] {
		c.dups++
		return nil
	}
	c.seen[r.Device][r.Seq] = true
	if r.Seq <= c.last[r.Device] {
		c.order++
	}
	c.last[r.Device] = r.Seq
	return nil
}

// verify checks that c saw exactly the fleet's readings.
func (c *checker) verify(t *testing.T, f *fleet) {
	t.Helper()
	want := 0
	missing := 0
	for i, d := range f.devices {
		want += int(f.seq[i])
		for s := int64(1); s <= f.seq[i]; s++ {
			if !c.seen[d][s] {
				missing++
			}
		}
	}
	if c.count != want || c.dups != 0 || c.order != 0 || missing != 0 {
		t.Fatalf("consumed %d messages, want %d: %d duplicates, %d out of order, %d missing", c.count, want, c.dups, c.order, missing)
	}
	t.Logf("consumed %d messages exactly once, per-device order intact", c.count)
}

// drain consumes the whole stream from the beginning.
func drain(t *testing.T, url string) *checker {
	t.Helper()
	c := newChecker()
	cl := &consume.Client{BaseURL: url}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := cl.Consume(ctx, consume.Options{Stream: "readings", FromBeginning: true}, c.add); err != nil {
		t.Fatal(err)
	}
	return c
}

// waitCaughtUp waits until central's stream holds want records.
func waitCaughtUp(t *testing.T, url string, want int64, timeout time.Duration) {
	waitCaughtUpTB(t, url, want, timeout)
}

func waitCaughtUpTB(t testing.TB, url string, want int64, timeout time.Duration) {
	t.Helper()
	cl := &consume.Client{BaseURL: url}
	deadline := time.Now().Add(timeout)
	var got int64
	for time.Now().Before(deadline) {
		streams, err := cl.Streams(context.Background())
		if err == nil {
			if got = readingsEnd(streams); got >= want {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("central holds %d records after %v, want %d", got, timeout, want)
}

// readingsEnd is the sum of the end offsets of the readings stream's partitions: how many
// records central has appended to it.
func readingsEnd(streams []consume.StreamInfo) int64 {
	var n int64
	for _, s := range streams {
		if s.Name == "readings" {
			for _, p := range s.Partitions {
				n += p.End
			}
		}
	}
	return n
}
