package edge

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

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
	first   *clientAcks   // the one waiter nearly every result has, without a slice to allocate
	waiters []*clientAcks // the others (a resend waiting on the original's append)
	closed  chan struct{} // made on demand by doneChan, closed by complete
	// refusal is set, before complete, when the reading was stored in the dead-letter stream
	// because its payload broke the stream's format: MQTT 5 clients get PUBACK 0x99 (payload
	// format invalid) with it as the reason string; MQTT 3.1.1 has no negative PUBACK.
	refusal string
}

// refuse records why a reading was dead-lettered; call it before complete.
func (r *result) refuse(reason string) {
	r.mu.Lock()
	r.refusal = reason
	r.mu.Unlock()
}

func (r *result) refused() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.refusal
}

// storedResult is a result that completed before this process started: a reading found in the
// log tail.
var storedResult = &result{done: true}

func (r *result) complete(err error) {
	r.mu.Lock()
	r.done, r.err = true, err
	first, ws := r.first, r.waiters
	r.first, r.waiters = nil, nil
	if r.closed != nil {
		close(r.closed)
	}
	r.mu.Unlock()
	if first != nil {
		first.complete()
	}
	for _, w := range ws {
		w.complete()
	}
}

// watch registers w to be woken when r completes; it reports whether r is already done.
func (r *result) watch(w *clientAcks) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.done:
	case r.first == nil:
		r.first = w
	default:
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
	received time.Duration // when the PUBLISH was read, as since(), for the ack latency histogram
}

// epoch is the origin of pendingAck.received: a monotonic clock reading in 8 bytes.
var epoch = time.Now()

func since() time.Duration { return time.Since(epoch) }

// clientAcks sends one client's PUBACKs (PUBRECs for QoS 2) in the order its PUBLISHes arrived,
// each only after the append it acknowledges is durable.
//
// Appends complete on the partitions' committer goroutines, in any order across partitions, and
// those callbacks must not block. When the append that completes is the client's last pending
// one, as for a device that waits for each PUBACK, the committer writes the acks itself if the
// socket takes them without blocking, which it nearly always does: no goroutine hop, and on a
// busy gateway a woken goroutine waits a millisecond or more for a CPU. Everything else goes to
// a writer goroutine per client, which may block: acks the socket did not take at once (a slow
// or stalled client), clients with more readings in flight (the writer sends all the acks that
// are ready when it runs in one write), and failures. A slow client never stalls a group commit.
//
// slots caps the readings waiting per client. OnPublish takes a slot on the client's read
// goroutine and blocks while none is free, which is what paces a device that pipelines faster
// than the disk commits.
type clientAcks struct {
	cl      *mqtt.Client
	raw     syscall.RawConn // the socket, for writes that must not block; nil for TLS and WebSocket
	direct  *directWriter   // writes to raw; nil with it
	server  *mqtt.Server
	metrics *metrics
	pending *atomic.Int64 // agent-wide count of queued acks, for draining at shutdown

	slots chan struct{}
	kick  chan struct{}
	// lazy: the writer goroutine runs only while it has work, and a wake-up starts it (running).
	// A device that waits for each ack has its acks written by the committer, so a gateway of
	// such devices keeps no writer goroutine, and its stack, per connection. TLS and WebSocket
	// clients (raw == nil) hand every ack to the writer, which then stays.
	lazy    bool
	running atomic.Bool
	stopped chan struct{} // closed when the writer gives up: client gone or an append failed
	stop    sync.Once

	// ready and out belong to whoever set busy: the acks being written and their encoding.
	ready []pendingAck
	out   bytes.Buffer

	mu      sync.Mutex
	queue   []pendingAck
	dead    bool // the writer exited: push refuses
	busy    bool // a write is under way, on a committer or the writer goroutine
	recheck bool // acks completed during that write: look at the queue again when it ends
	handoff int  // a committer wrote part of out, holding this many acks; the writer sends the rest
	// held: the committer left the client's write lock locked for the writer, because an ack is
	// half on the wire and no other packet may come between its halves. Whoever takes the
	// handoff (the writer, or dropAll) unlocks it.
	held bool
}

func newClientAcks(cl *mqtt.Client, server *mqtt.Server, m *metrics, pending *atomic.Int64, capacity int) *clientAcks {
	c := &clientAcks{
		cl: cl, server: server, metrics: m, pending: pending,
		slots:   make(chan struct{}, capacity),
		kick:    make(chan struct{}, 1),
		stopped: make(chan struct{}),
	}
	c.raw = directConn(cl.Net.Conn)
	if c.raw != nil {
		c.direct = newDirectWriter(c.raw)
	}
	c.lazy = c.raw != nil
	if !c.lazy {
		c.running.Store(true)
		go c.run()
	}
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
func (c *clientAcks) push(packetID uint16, qos byte, res *result, received time.Duration) bool {
	c.pending.Add(1)
	c.metrics.pendingAcks.Inc()
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		c.release(1)
		return false
	}
	c.queue = append(c.queue, pendingAck{packetID: packetID, qos: qos, res: res, received: received})
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
	if c.lazy && c.running.CompareAndSwap(false, true) {
		go c.run()
	}
}

// park ends a lazily started writer that has nothing to do. It reports false when a wake-up came
// in meanwhile and no other writer was started for it: this one goes on.
func (c *clientAcks) park() bool {
	c.running.Store(false)
	if len(c.kick) == 0 {
		return true // a later wake-up starts a writer
	}
	return !c.running.CompareAndSwap(false, true)
}

// close stops the writer: the client disconnected, so its remaining acks cannot be delivered;
// it resends those readings and the dedupe memory recognises the ones that were stored.
func (c *clientAcks) close() {
	c.stop.Do(func() { close(c.stopped) })
	c.wake()
}

// takeLocked moves the completed prefix of the queue into ready and marks the writer busy when
// there is one. failed is the error of the first completed append after that prefix, if any.
func (c *clientAcks) takeLocked() (failed error) {
	c.ready = c.ready[:0]
	for _, p := range c.queue {
		done, err := p.res.outcome()
		if !done {
			break
		}
		if err != nil {
			failed = err
			break
		}
		c.ready = append(c.ready, p)
	}
	n := len(c.ready)
	c.queue = append(c.queue[:0], c.queue[n:]...)
	c.busy = n > 0
	return failed
}

// endWrite clears busy after a write, and reports whether acks completed meanwhile.
func (c *clientAcks) endWrite() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.busy = false
	again := c.recheck
	c.recheck = false
	return again
}

// complete is called, on the committer goroutine that completed res, for every client waiting on
// res. It writes the client's completed acks now if the socket takes them without blocking and
// leaves everything else to the writer goroutine.
func (c *clientAcks) complete() {
	if c.raw == nil {
		c.wake()
		return
	}
	c.mu.Lock()
	if c.busy || c.dead {
		c.recheck = true
		c.mu.Unlock()
		return
	}
	// Write here only when every queued ack is ready, as for a device that waits for each
	// PUBACK. A client with more readings in flight is left to the writer: by the time it runs,
	// more of them are durable and one write carries all their acks. Failures are the writer's
	// too: it sends the acks before one, then stops the client.
	for _, p := range c.queue {
		if done, err := p.res.outcome(); !done || err != nil {
			c.mu.Unlock()
			c.wake()
			return
		}
	}
	c.takeLocked()
	n := len(c.ready)
	if n == 0 {
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	if err := c.encode(c.ready); err != nil {
		c.mu.Lock()
		c.putBackLocked()
		c.mu.Unlock()
		c.wake()
		return
	}
	written, held := c.tryWrite()
	if written == c.out.Len() {
		c.sent(n, written)
		if c.endWrite() {
			c.wake()
		}
		return
	}
	// The socket did not take it all: the writer sends the rest of out, blocking as it may.
	c.out.Next(written)
	c.sent(0, written)
	c.mu.Lock()
	if c.dead {
		c.busy = false
		c.mu.Unlock()
		if held {
			c.cl.Unlock()
		}
		c.release(n)
		return
	}
	c.handoff, c.held = n, held
	c.mu.Unlock()
	c.metrics.acksLate.Add(float64(n))
	c.wake()
}

// putBackLocked returns the taken acks to the head of the queue, for the writer.
func (c *clientAcks) putBackLocked() {
	c.queue = slices.Concat(c.ready, c.queue)
	c.ready = c.ready[:0]
	c.busy = false
}

// tryWrite writes out to the socket without blocking and returns how many bytes it took: none
// when another goroutine holds the client's write lock or the socket buffer is full. When it
// wrote part of out, it returns with the client's write lock still held (held): the rest must
// follow before any other packet.
func (c *clientAcks) tryWrite() (n int, held bool) {
	if !c.cl.TryLock() {
		return 0, false
	}
	if c.cl.Closed() {
		c.cl.Unlock()
		return 0, false
	}
	b := c.out.Bytes()
	n = c.direct.write(b)
	if n > 0 && n < len(b) {
		return n, true
	}
	c.cl.Unlock()
	return n, false
}

func (c *clientAcks) run() {
	for {
		if c.lazy {
			select {
			case <-c.kick:
			case <-c.stopped:
				c.dropAll()
				return
			default:
				if c.park() {
					return
				}
				continue
			}
		} else {
			select {
			case <-c.kick:
			case <-c.stopped:
				c.dropAll()
				return
			}
		}
		for {
			c.mu.Lock()
			var n int
			var failed error
			fresh := false // n acks were taken from the queue and need encoding
			held := false  // the client's write lock is already held for this write
			switch {
			case c.handoff > 0:
				// out holds what a committer could not write of n acks.
				n, c.handoff = c.handoff, 0
				held, c.held = c.held, false
			case c.busy:
				// A committer is writing; it wakes this goroutine when it is done.
				c.recheck = true
			default:
				failed = c.takeLocked()
				n = len(c.ready)
				fresh = n > 0
			}
			c.mu.Unlock()
			if fresh {
				if err := c.encode(c.ready); err != nil {
					c.endWrite()
					c.release(n)
					n, failed = 0, err
				}
			}
			if n > 0 {
				written, err := c.writeOut(held)
				c.endWrite()
				if err != nil {
					// The connection is gone; the client resends what it did not see acked.
					c.sent(0, written)
					c.release(n)
					failed = err
				} else {
					c.sent(n, written)
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
			if n == 0 {
				break
			}
		}
	}
}

// encode writes the acks of ready into out, for one socket write. Mochi's WritePacket costs a
// write system call per packet, which for a bridge with a hundred readings in flight was a
// quarter of the broker's CPU. The packets are encoded as WritePacket does for a PUBACK or PUBREC
// without properties (no size limit or problem-info rules apply to them), and written under the
// client's lock, the one WritePacket holds, so they never interleave with another packet's bytes.
// Mochi's own write buffer holds whole packets only, so an ack may overtake a queued outbound
// PUBLISH, which MQTT allows: ordering applies within a flow, and acks stay in order among
// themselves.
func (c *clientAcks) encode(ready []pendingAck) error {
	c.out.Reset()
	for _, p := range ready {
		ack := packets.Packet{
			FixedHeader:     packets.FixedHeader{Type: packets.Puback},
			ProtocolVersion: c.cl.Properties.ProtocolVersion,
			PacketID:        p.packetID,
			ReasonCode:      packets.CodeSuccess.Code,
			// Mochi's inflight sweep drops an entry without a creation time within a second,
			// and a PUBREL arriving later found no PUBREC.
			Created: time.Now().Unix(),
		}
		if ack.ProtocolVersion == 5 {
			if refusal := p.res.refused(); refusal != "" {
				// The reading is durable, in the dead-letter stream: a final answer, never resent.
				ack.ReasonCode = packets.ErrPayloadFormatInvalid.Code
				ack.Properties.ReasonString = refusal
				ack.Mods.MaxSize = c.cl.Properties.Props.MaximumPacketSize
				ack.Mods.DisallowProblemInfo = c.cl.Properties.Props.RequestProblemInfoFlag && c.cl.Properties.Props.RequestProblemInfo == 0
			}
		}
		var err error
		if p.qos == 2 {
			// Mochi answers the PUBREL only for a PUBREC it finds in the client's inflight
			// state, as when it sends the PUBREC itself; record it the same way, then it
			// completes the flow.
			ack.FixedHeader.Type = packets.Pubrec
			// A PUBREC with a failure code ends the flow: no PUBREL follows (MQTT 5, 4.3.3).
			if ack.ReasonCode < packets.ErrUnspecifiedError.Code && c.cl.State.Inflight.Set(ack) {
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
	return nil
}

// writeOut writes out to the socket, blocking until it is written or the connection fails. held
// says the client's write lock is already held (a committer's partial write); it is unlocked
// either way.
func (c *clientAcks) writeOut(held bool) (int, error) {
	if !held {
		c.cl.Lock()
	}
	if c.cl.Closed() {
		c.cl.Unlock()
		return 0, mqtt.ErrConnectionClosed
	}
	n, err := c.out.WriteTo(c.cl.Net.Conn)
	c.cl.Unlock()
	if err != nil {
		return int(n), fmt.Errorf("write acks: %w", err)
	}
	return int(n), nil
}

// sent counts acks and bytes that reached the socket and frees the acks' slots. The acks sent
// are the first ones of ready: whoever writes them set busy, which keeps ready theirs.
func (c *clientAcks) sent(acks, bytes int) {
	atomic.AddInt64(&c.server.Info.BytesSent, int64(bytes))
	if acks > 0 {
		now := since()
		for _, p := range c.ready[:acks] {
			c.metrics.ackLatency.Observe((now - p.received).Seconds())
		}
		atomic.AddInt64(&c.server.Info.PacketsSent, int64(acks))
		c.release(acks)
		c.metrics.acked.Add(float64(acks))
	}
}

// dropAll forgets queued acks (the client is gone), releasing their slots.
func (c *clientAcks) dropAll() {
	c.mu.Lock()
	n := len(c.queue) + c.handoff
	if c.held {
		c.cl.Unlock() // the client is gone; its half-written ack no longer matters
	}
	c.queue = nil
	c.handoff, c.held = 0, false
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
