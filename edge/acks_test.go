package edge

import (
	"bufio"
	"fmt"
	"io"
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
	conn, peer := tcpPair(t)
	peer.(*net.TCPConn).SetReadBuffer(4096)
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

	// Meanwhile mochi writes packets of its own to the client (PINGRESPs here): they may go
	// between acks but never inside one.
	stopPing := make(chan struct{})
	pinged := make(chan int)
	go func() {
		n := 0
		defer func() { pinged <- n }()
		for range 300 {
			select {
			case <-stopPing:
				return
			case <-time.After(time.Millisecond):
			}
			if cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingresp}}) != nil {
				return
			}
			n++
		}
	}()

	// Groups complete last-first, as committers completing a client's readings out of order
	// would: the last completion finds the whole group ready and writes it in one go, single
	// acks and groups of 500 in turn.
	for start, g := 0, 0; start < total; g++ {
		size := min(1+499*(g%2), total-start)
		var rs []*result
		for i := start; i < start+size; i++ {
			if !acks.acquire() {
				t.Fatal("writer stopped")
			}
			res := &result{}
			if !acks.push(id(i), 1, res, since()) {
				t.Fatal("push refused")
			}
			rs = append(rs, res)
		}
		for i := len(rs) - 1; i >= 0; i-- {
			rs[i].complete(nil) // as a committer does after the group commit
		}
		start += size
	}
	if n := metricSum(t, m.registry, "tributary_edge_acks_deferred_total"); n == 0 {
		t.Fatal("no ack was deferred: the socket took everything at once, so this test checks nothing")
	}

	rc := &rawClient{t: t, conn: peer, r: bufio.NewReader(peer), version: 4}
	pings := 0
	for i := 0; i < total; {
		pk, err := readAckOrPing(rc)
		if err != nil {
			t.Fatalf("ack %d of %d: %v", i, total, err)
		}
		if pk.FixedHeader.Type == packets.Pingresp {
			pings++
			continue
		}
		if pk.FixedHeader.Type != packets.Puback || pk.PacketID != id(i) {
			t.Fatalf("ack %d: got type %d id %d, want PUBACK %d", i, pk.FixedHeader.Type, pk.PacketID, id(i))
		}
		i++
	}
	close(stopPing)
	t.Logf("%d PINGRESPs read between the acks, %d sent", pings, <-pinged)
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
func metricSum(t testing.TB, reg *prometheus.Registry, name string) float64 {
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

// readAckOrPing reads one packet: a PINGRESP, or what rawClient.read reads.
func readAckOrPing(rc *rawClient) (packets.Packet, error) {
	rc.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b, err := rc.r.Peek(1); err == nil && b[0] == packets.Pingresp<<4 {
		var two [2]byte
		if _, err := io.ReadFull(rc.r, two[:]); err != nil {
			return packets.Packet{}, err
		}
		if two[1] != 0 {
			return packets.Packet{}, fmt.Errorf("PINGRESP with remaining length %d", two[1])
		}
		return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingresp}}, nil
	}
	return rc.read()
}

// The kernel rarely takes part of a small write, so the committer's side of a partial write is
// set up by hand: part of an ack is on the wire and the client's write lock is held for the
// writer. The writer sends the rest before mochi's next packet and frees the lock.
func TestAckWriterFinishesPartialWrite(t *testing.T) {
	conn, peer := tcpPair(t)
	srv := mqtt.New(nil)
	cl := srv.NewClient(conn, "t", "partial", false)
	cl.Properties.ProtocolVersion = 4
	m := newMetrics()
	var pending atomic.Int64
	acks := newClientAcks(cl, srv, m, &pending, 8)
	defer acks.close()

	// What complete leaves behind after the socket took 3 of the 8 bytes of two PUBACKs.
	for _, id := range []uint16{7, 8} {
		acks.acquire()
		acks.push(id, 1, &result{}, since())
	}
	acks.mu.Lock()
	for _, p := range acks.queue { // durable, with nobody told: the committer is "here"
		p.res.mu.Lock()
		p.res.done = true
		p.res.mu.Unlock()
	}
	acks.takeLocked()
	if len(acks.ready) != 2 {
		acks.mu.Unlock()
		t.Fatalf("%d acks ready, want 2", len(acks.ready))
	}
	if err := acks.encode(acks.ready); err != nil {
		t.Fatal(err)
	}
	cl.Lock()
	if _, err := conn.Write(acks.out.Next(3)); err != nil {
		t.Fatal(err)
	}
	acks.handoff, acks.held = 2, true
	acks.mu.Unlock()

	pinged := make(chan error, 1)
	go func() { // blocks on the held lock until the writer is done
		pinged <- cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingresp}})
	}()
	time.Sleep(20 * time.Millisecond) // let the PINGRESP reach the lock first
	acks.wake()

	rc := &rawClient{t: t, conn: peer, r: bufio.NewReader(peer), version: 4}
	var got []string
	for range 3 {
		pk, err := readAckOrPing(rc)
		if err != nil {
			t.Fatalf("after %v: %v", got, err)
		}
		got = append(got, fmt.Sprintf("%d/%d", pk.FixedHeader.Type, pk.PacketID))
	}
	want := []string{"4/7", "4/8", "13/0"} // PUBACK 7, PUBACK 8, PINGRESP
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("packets %v, want %v (type/packet id)", got, want)
	}
	select {
	case err := <-pinged:
		if err != nil {
			t.Errorf("PINGRESP: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("mochi's write still waits for the client's write lock 5s after the acks went out")
	}
	deadline := time.Now().Add(5 * time.Second)
	for pending.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := pending.Load(); n != 0 {
		t.Errorf("%d acks still pending", n)
	}
}

// tcpPair returns both ends of a loopback TCP connection: the broker's side and the client's.
func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	if server = <-accepted; server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { server.Close() })
	return server, client
}
