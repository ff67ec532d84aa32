//go:build unix

package edge

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tributary-iot/tributary/internal/testcpu"
)

// The edge's own per-PUBLISH path, without mochi's network or its packet decoding: the hook's ACL
// check and OnPublish, as mochi calls them on a client's read goroutine, then format check, dedupe,
// the append to a real log on disk and the PUBACK written to the client's socket. Each client is a
// mochi client on one end of a unix socket pair; the device's end reads the acks.
//
//	go test ./edge -run '^$' -bench PublishPath -benchmem

// pathClient is one device on the publish path.
type pathClient struct {
	cl      *mqtt.Client
	device  net.Conn // the device's end: PUBACKs arrive here
	pk      packets.Packet
	buf     [4096]byte
	partial int // bytes of an ack read so far
	sent    int
	acked   int
}

// newPathClient connects a device named id through the agent's hook, as mochi would after reading
// its CONNECT.
func newPathClient(tb testing.TB, a *Agent, id string) *pathClient {
	tb.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		tb.Fatal(err)
	}
	conns := make([]net.Conn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "pair")
		c, err := net.FileConn(f) // dups fd
		f.Close()
		if err != nil {
			tb.Fatal(err)
		}
		conns[i] = c
		tb.Cleanup(func() { c.Close() })
	}
	cl := a.server.NewClient(conns[0], "path", id, false)
	cl.Properties.ProtocolVersion = 4
	connect := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 4,
		Connect:         packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, ClientIdentifier: id},
	}
	if !a.hook.OnConnectAuthenticate(cl, connect) {
		tb.Fatalf("hook refused the connection of %s", id)
	}
	tb.Cleanup(func() {
		cl.Stop(nil)
		a.hook.OnDisconnect(cl, nil, false)
	})
	return &pathClient{cl: cl, device: conns[1], pk: packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Publish, Qos: 1},
		ProtocolVersion: 4,
		TopicName:       "devices/" + id + "/readings",
		Payload:         []byte(`{"ts":1700000000000,"temp":21.5,"hum":40.1,"seq":0}`),
	}}
}

// publish hands one QoS 1 reading to the hook as mochi does: ACL check, then OnPublish, which must
// leave the PUBACK to the edge.
func (c *pathClient) publish(tb testing.TB, h *hook) {
	c.pk.PacketID = uint16(c.sent%65000 + 1)
	if !h.OnACLCheck(c.cl, c.pk.TopicName, true) {
		tb.Fatal("ACL refused the device's own topic")
	}
	out, err := h.OnPublish(c.cl, c.pk)
	if err != nil || out.FixedHeader.Qos != 0 || !out.Ignore {
		tb.Fatalf("OnPublish returned QoS %d, ignore %v, error %v: mochi would ack before the append is durable",
			out.FixedHeader.Qos, out.Ignore, err)
	}
	c.sent++
}

// readAcks blocks until at least one more PUBACK arrived (at most 10 s) and counts those read.
func (c *pathClient) readAcks(tb testing.TB) {
	c.device.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.device.Read(c.buf[:])
	if err != nil {
		tb.Fatalf("read acks after %d of %d: %v", c.acked, c.sent, err)
	}
	n += c.partial
	c.acked += n / 4 // MQTT 3.1.1 PUBACK: 0x40 0x02 and the packet id
	c.partial = n % 4
}

// run publishes n readings, keeping at most window of them unacknowledged: window 1 is a device
// that waits for each PUBACK, which the committer writes itself; a larger window is a bridge, whose
// acks the client's writer sends many to a write.
func (c *pathClient) run(tb testing.TB, h *hook, n, window int) {
	for range n {
		c.step(tb, h, window)
	}
	c.drain(tb)
}

// step publishes one reading once fewer than window are unacknowledged.
func (c *pathClient) step(tb testing.TB, h *hook, window int) {
	for c.sent-c.acked >= window {
		c.readAcks(tb)
	}
	c.publish(tb, h)
}

// drain waits for the acks of every reading sent.
func (c *pathClient) drain(tb testing.TB) {
	for c.acked < c.sent {
		c.readAcks(tb)
	}
}

func publishPathAgent(tb testing.TB) *Agent {
	a, _ := startAgent(tb, Config{AnonymousPublish: "any", MaxPendingPerClient: 256})
	return a
}

// BenchmarkPublishPath reports allocations and CPU per PUBLISH of the edge's durable path (one op
// is one reading), for waiting devices and for a bridge with readings in flight.
func BenchmarkPublishPath(b *testing.B) {
	for _, tc := range []struct {
		devices, window int
	}{{100, 1}, {1, 200}} {
		b.Run(fmt.Sprintf("devices=%d/inflight=%d", tc.devices, tc.window), func(b *testing.B) {
			a := publishPathAgent(b)
			clients := make([]*pathClient, tc.devices)
			for i := range clients {
				clients[i] = newPathClient(b, a, "path-"+strconv.Itoa(i))
			}
			// Warm up: fill every dedupe ring and grow the buffers the path reuses.
			per := max(2*a.cfg.MaxPendingPerClient+10, 1000/tc.devices)
			runPathClients(b, a, clients, per, tc.window)
			before := a.Log().Stats()
			b.ReportAllocs()
			b.ResetTimer()
			cpu := testcpu.Self()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			mallocs := ms.Mallocs
			runPathClients(b, a, clients, max(b.N/tc.devices, 1), tc.window)
			total := max(b.N/tc.devices, 1) * tc.devices
			runtime.ReadMemStats(&ms)
			// allocs/op rounds down; this is the fraction: the committer's per commit, a
			// session's block of results, spread over the readings.
			b.ReportMetric(float64(ms.Mallocs-mallocs)/float64(total), "allocs/reading")
			b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "readings/s")
			b.ReportMetric(float64((testcpu.Self()-cpu).Microseconds())/float64(total), "CPU-µs/reading")
			if st := a.Log().Stats(); st.Fsyncs > before.Fsyncs {
				b.ReportMetric(float64(st.RecordsAppended-before.RecordsAppended)/float64(st.Fsyncs-before.Fsyncs), "readings/fsync")
			}
		})
	}
}

func runPathClients(tb testing.TB, a *Agent, clients []*pathClient, per, window int) {
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Go(func() { c.run(tb, a.hook, per, window) })
	}
	wg.Wait()
}

// TestPublishPathDoesNotAllocate keeps the edge's durable per-PUBLISH path at zero heap
// allocations in steady state. A bridge keeps readings in flight, so the committer's work per
// commit (one group per fsync) is shared by many readings; AllocsPerRun counts the whole process,
// so a PUBLISH that allocated once would make it report at least 1.
func TestPublishPathDoesNotAllocate(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a few thousand readings to disk")
	}
	a := publishPathAgent(t)
	c := newPathClient(t, a, "path-0")
	const window = 200
	c.run(t, a.hook, 2*a.cfg.MaxPendingPerClient+100, window) // fill the dedupe ring, grow buffers
	before := a.Log().Stats()
	allocs := testing.AllocsPerRun(3000, func() { c.step(t, a.hook, window) })
	c.drain(t)
	st := a.Log().Stats()
	t.Logf("%d readings in %d commits", st.RecordsAppended-before.RecordsAppended, st.Fsyncs-before.Fsyncs)
	if allocs != 0 {
		t.Errorf("%v heap allocations per durable PUBLISH: the edge's path must not allocate per reading; "+
			"list them with go test ./edge -run '^$' -bench PublishPath/devices=1/ -memprofile mem.out -memprofilerate 1", allocs)
	}
}
