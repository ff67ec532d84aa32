package receive

import (
	"context"
	"errors"
	"fmt"
	"github.com/tributary-iot/tributary/sync/internal/httpx"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/protocol"
)

// lane is the dedupe state of one lane (edge, stream, edge partition). See doc.go.
type lane struct {
	key    laneKey
	stream string

	// mu orders the lane's applies. It is held while a chunk's records are handed to central's
	// partitions, not while they become durable: chunk N+1 is queued while chunk N's group commit
	// is in flight, which is what lets one lane go faster than one chunk per fsync.
	mu            sync.Mutex
	queued        int64         // every edge offset below it is queued into central (or durable there)
	queuedApplied []int64       // per central partition, the highest edge offset queued; -1 none
	queuedMoved   chan struct{} // closed and replaced when queued moves

	// state is what storage's completion callbacks update. It is never held while calling into
	// storage, so a callback (on a partition's committer) never waits behind a writer that waits
	// for that committer.
	state    sync.Mutex
	expected int64           // every edge offset below it is durably applied
	applied  []int64         // per central partition, the highest edge offset durably applied; -1 none
	inflight []*pendingApply // queued applies, oldest first
	broken   error           // first failure among the applies since the last reset
	started  int64           // applies registered
	retired  int64           // applies whose every callback has run, in order
	changed  chan struct{}   // closed and replaced when applies retire
	dirty    bool            // changed since the last checkpoint

	failed atomic.Bool // an apply failed: the queued state must be reset before the next one

	rec         atomic.Pointer[laneRecord] // the lane's current epoch; nil for a lane no incarnation fed yet; set under mu
	committed   atomic.Int64               // expected as of the last durable checkpoint
	edgeEnd     atomic.Int64
	lastSeen    atomic.Int64 // unix nanos of the last request
	lastAdvance atomic.Int64 // unix nanos of the last advance of expected
	next        atomic.Int64 // mirror of expected readable without a lock
}

// pendingApply is one chunk's records on their way to durability.
type pendingApply struct {
	next      int64
	remaining countdown     // partition trackers still to finish; sealed when queuing ends
	err       error         // set under the lane's state lock
	done      chan struct{} // closed when the apply retires

	// With Config.Observer set: the apply's observer and trackers, reported once every tracker
	// has finished (see report).
	observer ApplyObserver
	trackers []*partitionTracker
}

func newLane(k laneKey, stream string, partitions int) *lane {
	s := &lane{key: k, stream: stream, applied: make([]int64, partitions), queuedApplied: make([]int64, partitions),
		changed: make(chan struct{}), queuedMoved: make(chan struct{})}
	for i := range s.applied {
		s.applied[i], s.queuedApplied[i] = -1, -1
	}
	return s
}

// restored sets the queued state from the durable one, after a rebuild.
func (s *lane) restored() {
	s.queued = s.expected
	copy(s.queuedApplied, s.applied)
	s.next.Store(s.expected)
}

func (s *lane) position() protocol.Position {
	return protocol.Position{Next: s.next.Load(), Committed: s.committed.Load()}
}

// errEarlierFailed answers the chunks queued behind a failed one: their own records may be
// durable, but the lane cannot advance past the hole before them.
var errEarlierFailed = errors.New("an earlier chunk of this lane could not be stored")

func (r *Receiver) post(w http.ResponseWriter, req *http.Request, edge, stream string, partition int) {
	if req.ContentLength > r.cfg.MaxBodyBytes {
		r.reject(w, http.StatusRequestEntityTooLarge, "too-large", nil, "body of %d bytes: the limit is %d; lower the forwarder's max chunk bytes", req.ContentLength, r.cfg.MaxBodyBytes)
		return
	}
	size := req.ContentLength
	if size < 0 {
		size = r.cfg.MaxBodyBytes
	}
	deadline := r.cfg.BodyTimeout + time.Duration(size/r.cfg.MinBodyRate)*time.Second
	// Not supported by every ResponseWriter (tests' recorders): then there is simply no deadline.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(deadline))
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, r.cfg.MaxBodyBytes))
	if err == nil {
		// The body is in: the wait for durability is not bounded by the read deadline (net/http's
		// background read would cancel the request when it passed).
		_ = rc.SetReadDeadline(time.Time{})
	}
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			r.reject(w, http.StatusRequestEntityTooLarge, "too-large", nil, "body over the limit of %d bytes", r.cfg.MaxBodyBytes)
			return
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			httpx.CloseUnread(w)
			r.reject(w, http.StatusRequestTimeout, "body-timeout", nil, "the body did not arrive within %v", deadline)
			return
		}
		r.reject(w, http.StatusBadRequest, "truncated", nil, "read body: %v", err)
		return
	}
	c, err := parseChunk(req.Header, body, r.cfg.MaxRawBytes)
	if err != nil {
		r.reject(w, http.StatusBadRequest, "malformed", nil, "malformed chunk: %v", err)
		return
	}
	inc, incBase, err := requestIncarnation(req.Header)
	if err != nil {
		r.reject(w, http.StatusBadRequest, "malformed", nil, "%v", err)
		return
	}
	// Only now, with a well-formed chunk in hand, may the stream and the lane be created.
	s, rf := r.lane(edge, stream, partition)
	if rf == nil {
		rf = r.admit(s, inc, incBase)
	}
	if rf != nil {
		r.reject(w, rf.code, rf.reason, nil, "%s", rf.msg)
		return
	}
	s.touch(req)
	labels := []string{edge, stream, strconv.Itoa(partition)}
	if c.next <= s.next.Load() {
		r.m.duplicates.WithLabelValues(labels...).Add(float64(len(c.records)))
		httpx.WriteJSON(w, http.StatusOK, s.position())
		return
	}
	ctx := req.Context()
	if !s.lockAt(ctx, c.base, r.cfg.ReorderWait) {
		r.reject(w, http.StatusConflict, "out-of-order", ptr(s.position()), "chunk starts at %d but the lane expects %d: resend from there", c.base, s.next.Load())
		return
	}
	if s.incarnation() != inc {
		// The lane started a new epoch while this request waited: its offsets are the old log's.
		s.mu.Unlock()
		r.reject(w, http.StatusConflict, "epoch-changed", ptr(s.position()), "lane %s/%d started a new epoch for edge log %s while this chunk waited: resend from the position", stream, partition, s.incarnation())
		return
	}
	var (
		pa         *pendingApply
		applied    int
		duplicates int
	)
	switch {
	case c.next <= s.queued:
		// A resend of records already on their way: answer once they are durable.
		s.mu.Unlock()
		duplicates = len(c.records)
		err = s.waitCovered(ctx, c.next)
	case c.gap != nil:
		err = r.applyGap(s, c)
		s.mu.Unlock()
	default:
		pa, applied, duplicates = r.queue(r.stream(stream), s, c)
		s.mu.Unlock()
		select {
		case <-pa.done:
			err = pa.err
		case <-ctx.Done():
			return // the edge gave up; the apply still retires on its own
		}
	}
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return
		}
		if errors.Is(err, storage.ErrFull) {
			w.Header().Set("Retry-After", "5")
			r.reject(w, http.StatusServiceUnavailable, "full", ptr(s.position()), "central's disk quota is full: the edge keeps buffering; retry later")
			return
		}
		r.logger.Error("apply chunk", "edge", edge, "stream", stream, "partition", partition, "base", c.base, "err", err)
		w.Header().Set("Retry-After", "2")
		r.reject(w, http.StatusServiceUnavailable, "storage", ptr(s.position()), "store chunk: %v", err)
		return
	}
	r.m.applied.WithLabelValues(labels...).Add(float64(applied))
	r.m.duplicates.WithLabelValues(labels...).Add(float64(duplicates))
	if pa != nil {
		r.m.wireBytes.WithLabelValues(labels...).Add(float64(c.wire))
		r.m.rawBytes.WithLabelValues(labels...).Add(float64(c.raw))
	}
	httpx.WriteJSON(w, http.StatusOK, s.position())
}

func ptr[T any](v T) *T { return &v }

// lockAt locks s.mu once the lane has queued everything below base, waiting up to wait for
// predecessors. After a failed apply it first resets the queued state to the durable one.
func (s *lane) lockAt(ctx context.Context, base int64, wait time.Duration) bool {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		s.mu.Lock()
		if s.failed.Load() {
			s.drainLocked()
		}
		if base <= s.queued {
			return true
		}
		ch := s.queuedMoved
		s.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// drainLocked waits until every queued apply has retired, then makes the queued state the
// durable one again and returns the failure among them, if any. s.mu is held, so nothing new is
// queued meanwhile; the wait is bounded by storage completing what it was given.
func (s *lane) drainLocked() error {
	s.state.Lock()
	for len(s.inflight) > 0 {
		ch := s.changed
		s.state.Unlock()
		<-ch
		s.state.Lock()
	}
	err := s.broken
	s.broken = nil
	s.failed.Store(false)
	if s.queued != s.expected {
		s.queued = s.expected
		s.moveQueuedLocked()
	}
	copy(s.queuedApplied, s.applied)
	s.state.Unlock()
	return err
}

func (s *lane) moveQueuedLocked() {
	close(s.queuedMoved)
	s.queuedMoved = make(chan struct{})
}

// waitCovered waits until every edge offset below next is durable, or an apply in flight
// before it failed.
func (s *lane) waitCovered(ctx context.Context, next int64) error {
	s.state.Lock()
	defer s.state.Unlock()
	for s.expected < next {
		if s.broken != nil {
			return s.broken
		}
		if len(s.inflight) == 0 {
			return errEarlierFailed
		}
		ch := s.changed
		s.state.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			s.state.Lock()
			return ctx.Err()
		}
		s.state.Lock()
	}
	return nil
}

// queue hands the records of c at or past queued that are not yet queued into their central
// partition to storage, in edge offset order, and registers the apply that retires once all of
// them are durable. s.mu is held; c.base <= s.queued < c.next.
func (r *Receiver) queue(cs *centralStream, s *lane, c *chunk) (pa *pendingApply, applied, duplicates int) {
	pa = &pendingApply{next: c.next, done: make(chan struct{})}
	var observer ApplyObserver
	if r.cfg.Observer != nil {
		observer = r.cfg.Observer.Apply(s.key.edge, s.stream, s.key.partition)
	}
	observe := observer != nil
	pa.remaining.arm()
	s.state.Lock()
	s.started++
	s.inflight = append(s.inflight, pa)
	s.state.Unlock()

	// One provenance encoder and one header slice for the whole chunk: storage encodes a record
	// into its group buffer before AppendAsync returns, so neither needs to outlive the call.
	origin := protocol.Provenance{Edge: s.key.edge, Partition: s.key.partition, CentralTime: time.Now()}
	if rec := s.rec.Load(); rec != nil {
		origin.Incarnation = rec.Incarnation
	}
	prov := protocol.NewProvenanceEncoder(origin)
	var headers []storage.Header
	trackers := make([]*partitionTracker, cs.stream.Partitions())
	if observe {
		pa.observer, pa.trackers = observer, trackers
	}
	stopped := false
	for i := range c.records {
		e := &c.records[i]
		if e.Offset < s.queued {
			duplicates++
			continue
		}
		p := cs.stream.PartitionFor(e.Key)
		if e.Offset <= s.queuedApplied[p] {
			duplicates++ // stored before a crash or a failed apply; see doc.go
			continue
		}
		if s.failed.Load() {
			// Keep each central partition a prefix of the lane: queue nothing after a failure.
			// An error found while queuing (quota full) is reported synchronously, so this stops
			// at once; one found by a committer stops the partition, so its later records fail.
			stopped = true
			break
		}
		headers = headers[:0]
		for _, h := range e.Headers {
			if !protocol.IsProvenance(h.Key) { // provenance is central's to write; an edge cannot forge it
				headers = append(headers, h)
			}
		}
		headers = prov.Append(headers, e.Offset)
		tr := trackers[p]
		if tr == nil {
			tr = &partitionTracker{s: s, pa: pa, p: p, observed: observe}
			tr.left.arm()
			tr.done = tr.complete
			trackers[p] = tr
			pa.remaining.add(1)
		}
		tr.offsets = append(tr.offsets, e.Offset)
		if observe {
			observer.Queued(e, p, len(tr.offsets)-1)
		}
		applied++
		s.queuedApplied[p] = e.Offset
		cs.stream.Partition(p).AppendAsync(storage.Record{Key: e.Key, Value: e.Value, Timestamp: e.Timestamp, Headers: headers}, tr.done)
	}
	if !stopped && !s.failed.Load() {
		s.queued = c.next
		s.moveQueuedLocked()
	}
	for _, tr := range trackers {
		if tr != nil && tr.left.seal(int64(len(tr.offsets))) {
			tr.finish()
		}
	}
	if pa.remaining.seal(0) {
		pa.report()
		s.retire()
	}
	return pa, applied, duplicates
}

// partitionTracker follows one apply's records in one central partition. Storage completes a
// partition's records in offset order and stops the partition at its first failed write, so the
// successes are a prefix of offsets: the highest durable edge offset is offsets[ok-1].
type partitionTracker struct {
	s       *lane
	pa      *pendingApply
	p       int
	offsets []int64 // edge offsets queued, in order; complete until queuing ends
	ok      atomic.Int64
	left    countdown // storage callbacks to come; sealed with len(offsets) when queuing ends
	err     atomic.Pointer[error]
	done    func(int64, error) // tr.complete, allocated once
	// central holds the central offsets of the records stored, in order, when observed. Only
	// the partition's committer appends to it (its callbacks run there in turn); it is read once
	// every callback has run.
	central  []int64
	observed bool
}

func (tr *partitionTracker) complete(offset int64, err error) {
	if err != nil {
		tr.err.CompareAndSwap(nil, &err)
		tr.s.failed.Store(true)
	} else {
		if tr.observed {
			tr.central = append(tr.central, offset)
		}
		tr.ok.Add(1)
	}
	if tr.left.done() {
		tr.finish()
	}
}

// finish raises applied over the partition's durable prefix and counts the tracker done.
func (tr *partitionTracker) finish() {
	s := tr.s
	s.state.Lock()
	if ok := tr.ok.Load(); ok > 0 {
		if off := tr.offsets[ok-1]; off > s.applied[tr.p] {
			s.applied[tr.p] = off
			s.dirty = true
		}
	}
	if e := tr.err.Load(); e != nil && tr.pa.err == nil {
		tr.pa.err = *e
	}
	s.state.Unlock()
	if tr.pa.remaining.done() {
		tr.pa.report()
		s.retire()
	}
}

func (s *lane) retire() {
	s.state.Lock()
	s.retireLocked()
	s.state.Unlock()
}

// retireLocked retires finished applies from the oldest on: expected advances to an apply's next
// only when it and every apply before it stored all their records. s.state is held.
func (s *lane) retireLocked() {
	moved := false
	for len(s.inflight) > 0 && s.inflight[0].remaining.zero() {
		pa := s.inflight[0]
		s.inflight[0] = nil
		s.inflight = s.inflight[1:]
		s.retired++
		if pa.err != nil && s.broken == nil {
			s.broken = pa.err
		}
		if s.broken != nil {
			if pa.err == nil {
				pa.err = fmt.Errorf("%w: %w", errEarlierFailed, s.broken)
			}
		} else if pa.next > s.expected {
			s.expected = pa.next
			s.next.Store(pa.next)
			s.dirty = true
			s.lastAdvance.Store(time.Now().UnixNano())
		}
		close(pa.done)
		moved = true
	}
	if moved {
		close(s.changed)
		s.changed = make(chan struct{})
	}
}

// applyGap stores the gap marker durably once everything before it is durable, then advances
// the lane past it. s.mu is held.
func (r *Receiver) applyGap(s *lane, c *chunk) error {
	if err := s.drainLocked(); err != nil {
		return err
	}
	if err := r.storeGap(s, c); err != nil {
		return err
	}
	s.state.Lock()
	s.expected = c.next
	s.next.Store(c.next)
	s.dirty = true
	s.lastAdvance.Store(time.Now().UnixNano())
	close(s.changed)
	s.changed = make(chan struct{})
	s.state.Unlock()
	s.queued = c.next
	s.moveQueuedLocked()
	return nil
}

// snapshot returns the lane's durable state once every apply registered before the call has
// retired, so that it covers every record durable in central before the call (see doc.go).
func (s *lane) snapshot(timeout time.Duration) (laneCheckpoint, bool, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	s.state.Lock()
	defer s.state.Unlock()
	target := s.started
	for s.retired < target {
		ch := s.changed
		s.state.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			s.state.Lock()
			return laneCheckpoint{}, false, fmt.Errorf("lane %s/%d: applies did not finish in %v", s.key.edge, s.key.partition, timeout)
		}
		s.state.Lock()
	}
	dirty := s.dirty
	s.dirty = false
	return laneCheckpoint{Edge: s.key.edge, Partition: s.key.partition, Incarnation: s.incarnation(), Expected: s.expected,
		Applied: append([]int64(nil), s.applied...)}, dirty, nil
}

func (s *lane) markDirty() {
	s.state.Lock()
	s.dirty = true
	s.state.Unlock()
}

func (cs *centralStream) lane(k laneKey) *lane {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	s, ok := cs.lanes[k]
	if !ok {
		s = newLane(k, cs.name, cs.stream.Partitions())
		cs.lanes[k] = s
	}
	return s
}
