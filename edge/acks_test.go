package edge

import (
	"bufio"
	"net"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
)

// A client that stops reading fills its socket: the committer's write, which must not block,
// takes only part of the acks, and the writer goroutine sends the rest once the client reads
// again. Every ack arrives once, in order, and every slot is freed.
func TestAcksToSlowReaderDeferredInOrder(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	peer.(*net.TCPConn).SetReadBuffer(4096)
	conn := <-accepted
	if conn == nil {
		t.Fatal("accept failed")
	}
	conn.(*net.TCPConn).SetWriteBuffer(4096)

	srv := mqtt.New(&mqtt.Options{InlineClient: false})
	cl := srv.NewClient(conn, "t", "slow", false)
	cl.Properties.ProtocolVersion = 4
	m := newMetrics()
	var pending atomic.Int64
	const total = 30000 // 120 kB of PUBACKs, far more than both socket buffers hold
	acks := newClientAcks(cl, srv, m, &pending, total)
	defer acks.close()
	if acks.raw == nil {
		t.Fatal("no raw socket for a TCP client: the committer's direct write is never tried")
	}
	id := func(i int) uint16 { return uint16(i%65000 + 1) }
	for i := range total {
		if !acks.acquire() {
			t.Fatal("writer stopped")
		}
		res := &result{}
		if !acks.push(id(i), 1, res) {
			t.Fatal("push refused")
		}
		res.complete(nil) // as a committer does after the group commit
	}
	if n := metricSum(t, m.registry, "tributary_edge_acks_deferred_total"); n == 0 {
		t.Fatal("no ack was deferred: the socket took everything at once, so this test checks nothing")
	}

	rc := &rawClient{t: t, conn: peer, r: bufio.NewReader(peer), version: 4}
	for i := range total {
		pk, err := rc.read()
		if err != nil {
			t.Fatalf("ack %d of %d: %v", i, total, err)
		}
		if pk.FixedHeader.Type != packets.Puback || pk.PacketID != id(i) {
			t.Fatalf("ack %d: got type %d id %d, want PUBACK %d", i, pk.FixedHeader.Type, pk.PacketID, id(i))
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for pending.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := pending.Load(); n != 0 {
		t.Errorf("%d acks still pending after all were read", n)
	}
	if got := metricSum(t, m.registry, "tributary_edge_readings_acked_total"); got != total {
		t.Errorf("acked counter %v, want %d", got, total)
	}
	t.Logf("%v of %d acks deferred to the writer", metricSum(t, m.registry, "tributary_edge_acks_deferred_total"), total)
}

// metricSum adds up every series of the named metric (counters and gauges).
func metricSum(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return sum
}
