package edge

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// result is the outcome of one durable append. Every publish that waits on it shares it: the
// original, and a DUP resend that arrives (on a new connection) while the original is still in the
// group commit.
type result struct {
	mu      sync.Mutex
	done    bool
	err     error
	waiters []*clientAcks
	closed  chan struct{} // made on demand by doneChan, closed by complete
}

// storedResult is a result that completed before this process started: a reading found in the
// log tail.
var storedResult = &result{done: true}

func (r *result) complete(err error) {
	r.mu.Lock()
	r.done, r.err = true, err
	ws := r.waiters
	r.waiters = nil
	if r.closed != nil {
		close(r.closed)
	}
	r.mu.Unlock()
	for _, w := range ws {
		w.wake()
	}
}

// watch registers w to be woken when r completes; it reports whether r is already done.
func (r *result) watch(w *clientAcks) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.done {
		r.waiters = append(r.waiters, w)
	}
	return r.done
}

// doneChan returns a channel closed once r completes, for waiters that are not a clientAcks (the
// external source's acker).
func (r *result) doneChan() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed == nil {
		r.closed = make(chan struct{})
		if r.done {
			close(r.closed)
		}
	}
	return r.closed
}

func (r *result) outcome() (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.done, r.err
}

type pendingAck struct {
	packetID uint16
	qos      byte
	res      *result
}

// clientAcks sends one client's PUBACKs (PUBRECs for QoS 2) in the order its PUBLISHes arrived,
// each only after the append it acknowledges is durable. Appends complete on the partitions'
// committer goroutines, in any order across partitions, and those callbacks must not block, so a
// writer goroutine per client takes the completed prefix of the queue and writes it: a slow
// client's socket never stalls a group commit.
//
// slots caps the readings waiting per client. OnPublish takes a slot on the client's read
// goroutine and blocks while none is free, which is what paces a device that pipelines faster
// than the disk commits.
type clientAcks struct {
	cl      *mqtt.Client
	server  *mqtt.Server
	metrics *metrics
	pending *atomic.Int64 // agent-wide count of queued acks, for draining at shutdown

	slots   chan struct{}
	kick    chan struct{}
	stopped chan struct{} // closed when the writer gives up: client gone or an append failed
	stop    sync.Once

	out bytes.Buffer // encoded acks, reused by the writer

	mu    sync.Mutex
	queue []pendingAck
	dead  bool // the writer exited: push refuses
}

func newClientAcks(cl *mqtt.Client, server *mqtt.Server, m *metrics, pending *atomic.Int64, capacity int) *clientAcks {
	c := &clientAcks{
		cl: cl, server: server, metrics: m, pending: pending,
		slots:   make(chan struct{}, capacity),
		kick:    make(chan struct{}, 1),
		stopped: make(chan struct{}),
	}
	go c.run()
	return c
}

// acquire takes a pending slot, blocking while the client has too many readings in flight. It
// returns false when the writer stopped.
func (c *clientAcks) acquire() bool {
	select {
	case c.slots <- struct{}{}:
		return true
	default:
	}
	c.metrics.paced.Inc()
	select {
	case c.slots <- struct{}{}:
		return true
	case <-c.stopped:
		return false
	}
}

// push queues an ack for res; the caller holds a slot, which push releases when it returns false
// because the writer has exited.
func (c *clientAcks) push(packetID uint16, qos byte, res *result) bool {
	c.pending.Add(1)
	c.metrics.pendingAcks.Inc()
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		c.release(1)
		return false
	}
	c.queue = append(c.queue, pendingAck{packetID: packetID, qos: qos, res: res})
	c.mu.Unlock()
	if res.watch(c) {
		c.wake()
	}
	return true
}

func (c *clientAcks) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// close stops the writer: the client disconnected, so its remaining acks cannot be delivered;
// it resends those readings and the dedupe memory recognises the ones that were stored.
func (c *clientAcks) close() {
	c.stop.Do(func() { close(c.stopped) })
	c.wake()
}

func (c *clientAcks) run() {
	var ready []pendingAck
	for {
		select {
		case <-c.kick:
		case <-c.stopped:
			c.dropAll()
			return
		}
		ready = ready[:0]
		var failed error
		c.mu.Lock()
		n := 0
		for _, p := range c.queue {
			done, err := p.res.outcome()
			if !done {
				break
			}
			if err != nil {
				failed = err
				break
			}
			ready = append(ready, p)
			n++
		}
		c.queue = append(c.queue[:0], c.queue[n:]...)
		c.mu.Unlock()

		if len(ready) > 0 {
			if err := c.write(ready); err != nil {
				// The connection is gone; the client resends what it did not see acked.
				failed = err
			} else {
				c.release(len(ready))
				c.metrics.acked.Add(float64(len(ready)))
			}
		}
		if failed != nil {
			// Never ack a reading that is not durable, and never ack later ones out of order:
			// disconnect, so the client resends everything unacknowledged.
			if !errors.Is(failed, mqtt.ErrConnectionClosed) {
				c.metrics.ackFailures.Inc()
			}
			c.cl.Stop(failed)
			c.close()
			c.dropAll()
			return
		}
	}
}

// write sends the acks of ready in one socket write. Mochi's WritePacket costs a write system
// call per packet, which for a bridge with a hundred readings in flight was a quarter of the
// broker's CPU. The packets are encoded as WritePacket does for a PUBACK or PUBREC without
// properties (no size limit or problem-info rules apply to them), and written under the client's
// lock, the one WritePacket holds, so they never interleave with another packet's bytes. Mochi's
// own write buffer holds whole packets only, so an ack may overtake a queued outbound PUBLISH,
// which MQTT allows: ordering applies within a flow, and acks stay in order among themselves.
func (c *clientAcks) write(ready []pendingAck) error {
	if c.cl.Closed() {
		return mqtt.ErrConnectionClosed
	}
	c.out.Reset()
	for _, p := range ready {
		ack := packets.Packet{
			FixedHeader:     packets.FixedHeader{Type: packets.Puback},
			ProtocolVersion: c.cl.Properties.ProtocolVersion,
			PacketID:        p.packetID,
			ReasonCode:      packets.CodeSuccess.Code,
		}
		var err error
		if p.qos == 2 {
			// Mochi answers the PUBREL only for a PUBREC it finds in the client's inflight
			// state, as when it sends the PUBREC itself; record it the same way, then it
			// completes the flow.
			ack.FixedHeader.Type = packets.Pubrec
			if c.cl.State.Inflight.Set(ack) {
				atomic.AddInt64(&c.server.Info.Inflight, 1)
			}
			err = ack.PubrecEncode(&c.out)
		} else {
			err = ack.PubackEncode(&c.out)
		}
		if err != nil {
			return fmt.Errorf("encode ack %d: %w", p.packetID, err)
		}
	}
	n := c.out.Len()
	c.cl.Lock()
	_, err := c.out.WriteTo(c.cl.Net.Conn)
	c.cl.Unlock()
	if err != nil {
		return fmt.Errorf("write %d acks: %w", len(ready), err)
	}
	atomic.AddInt64(&c.server.Info.BytesSent, int64(n))
	atomic.AddInt64(&c.server.Info.PacketsSent, int64(len(ready)))
	return nil
}

// dropAll forgets queued acks (the client is gone), releasing their slots.
func (c *clientAcks) dropAll() {
	c.mu.Lock()
	n := len(c.queue)
	c.queue = nil
	c.dead = true
	c.mu.Unlock()
	c.release(n)
}

func (c *clientAcks) release(n int) {
	for range n {
		select {
		case <-c.slots:
		default:
		}
	}
	c.pending.Add(int64(-n))
	c.metrics.pendingAcks.Sub(float64(n))
}
