package forward

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/tributary-iot/tributary/sync/internal/httpx"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/protocol"
)

// Forwarder sends every partition of an edge log to central, in offset order, from the offset
// central confirms. One goroutine per partition (a lane) pipelines up to Config.InFlight chunks.
type Forwarder struct {
	log    *storage.Log
	cfg    Config
	logger *slog.Logger
	limit  *limiter
	m      *metrics
	token  *tokenSource

	// tokenRefused is set while central answers 401 (the token is not the edge's current one)
	// and cleared by any accepted call; refusedLogged rate-limits the line that says so.
	tokenRefused  atomic.Bool
	refusedLogged atomic.Int64

	mu    sync.Mutex
	lanes map[laneKey]*lane

	incarnation string                  // the edge log's; set by Run
	laneIDs     map[string]laneIdentity // lanes with an incarnation of their own; set by Run
}

type laneKey struct {
	stream    string
	partition int
}

// lane is the state of one edge partition; counters are read by metrics and Status.
type lane struct {
	key laneKey
	p   *storage.Partition

	acked       atomic.Int64 // central's Next
	committed   atomic.Int64 // central's Committed
	known       atomic.Bool  // acked/committed came from central
	lastOK      atomic.Int64 // unix nanos of the last answered request
	lastAdvance atomic.Int64 // unix nanos of the last advance of acked
	wireBytes   atomic.Int64
	rawBytes    atomic.Int64
	records     atomic.Int64
	retries     atomic.Int64
	lastErr     atomic.Pointer[string]
	// downSince is when the lane's current run of failures began (unix nanos; 0 while it works),
	// so its first answer from central after an outage is logged once with the outage's length.
	downSince atomic.Int64
	// resumedBehind is set when the lane came back from an outage with a backlog, for the
	// progress report to start a catch-up.
	resumedBehind atomic.Bool

	ident    atomic.Pointer[laneIdentity] // the incarnation sent with every request
	verified atomic.Bool                  // central's position was checked against the log's end at open
}

// New returns a forwarder of log's streams to cfg.CentralURL, with cfg's defaults applied
// (Config.withDefaults). Nothing starts until Run, which checks the configuration. It returns an
// error only when cfg.Registerer refuses the forwarder's metrics, as receive.New does.
func New(log *storage.Log, cfg Config) (*Forwarder, error) {
	cfg = cfg.withDefaults()
	f := &Forwarder{log: log, cfg: cfg, logger: cfg.Logger, lanes: map[laneKey]*lane{},
		token: newTokenSource(cfg.Token, cfg.TokenFile, cfg.Logger)}
	if cfg.BandwidthBytesPerSec > 0 {
		f.limit = newLimiter(cfg.BandwidthBytesPerSec)
	}
	f.m = newMetrics(f)
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(f.m); err != nil {
			return nil, fmt.Errorf("register forwarder metrics: %w", err)
		}
	}
	return f, nil
}

// Run forwards until ctx ends; it then waits for its goroutines, stores the cursor once more and
// returns nil. It returns an error at once only for a configuration that cannot work.
func (f *Forwarder) Run(ctx context.Context) error {
	if err := f.cfg.check(); err != nil {
		return fmt.Errorf("start forwarder: %w", err)
	}
	client, err := f.cfg.client()
	if err != nil {
		return fmt.Errorf("start forwarder: %w", err)
	}
	if err := f.token.load(); err != nil {
		return fmt.Errorf("start forwarder: %w", err)
	}
	if err := f.log.RequireCursor(CursorName); err != nil {
		return fmt.Errorf("start forwarder: %w", err)
	}
	if f.incarnation, err = logIncarnation(f.log); err != nil {
		return fmt.Errorf("start forwarder: %w", err)
	}
	if f.laneIDs, err = laneIdentities(f.log); err != nil {
		return fmt.Errorf("start forwarder: %w", err)
	}
	f.logger.Info("forwarding edge log", "incarnation", f.incarnation, "lanes_with_own_incarnation", len(f.laneIDs))
	var wg sync.WaitGroup
	defer wg.Wait()
	discover := time.NewTicker(time.Second)
	defer discover.Stop()
	cursor := time.NewTicker(f.cfg.CursorInterval)
	defer cursor.Stop()
	// Progress samples every second (or its interval, if shorter) so a catch-up's start and end are
	// timed to a second; it logs once per interval.
	progressTick := time.NewTicker(min(f.cfg.ProgressInterval, time.Second))
	defer progressTick.Stop()
	prog := &progress{logger: f.logger, every: f.cfg.ProgressInterval}
	saved := map[laneKey]int64{}
	for {
		for _, st := range f.log.Streams() {
			if f.cfg.Streams != nil && !slices.Contains(f.cfg.Streams, st.Name()) {
				continue
			}
			for i := 0; i < st.Partitions(); i++ {
				k := laneKey{st.Name(), i}
				f.mu.Lock()
				_, ok := f.lanes[k]
				if !ok {
					ln := &lane{key: k, p: st.Partition(i)}
					id, ok := f.laneIDs[laneMetaKey(k)]
					if !ok {
						id = laneIdentity{Incarnation: f.incarnation}
					}
					ln.ident.Store(&id)
					f.lanes[k] = ln
					wg.Add(1)
					go func() {
						defer wg.Done()
						f.runLane(ctx, client, ln)
					}()
				}
				f.mu.Unlock()
			}
		}
		select {
		case <-ctx.Done():
			wg.Wait()
			f.saveCursors(saved)
			return nil
		case <-discover.C:
		case <-cursor.C:
			f.saveCursors(saved)
		case now := <-progressTick.C:
			prog.tick(f.snapshot(), now)
		}
	}
}

// saveCursors stores central's committed offsets as the required cursor, one transaction per
// stream and only when they moved.
func (f *Forwarder) saveCursors(saved map[laneKey]int64) {
	byStream := map[string]map[int]int64{}
	for _, ln := range f.snapshot() {
		if !ln.known.Load() {
			continue
		}
		c := ln.committed.Load()
		if old, ok := saved[ln.key]; ok && old == c {
			continue
		}
		if byStream[ln.key.stream] == nil {
			byStream[ln.key.stream] = map[int]int64{}
		}
		byStream[ln.key.stream][ln.key.partition] = c
	}
	for stream, offs := range byStream {
		if err := f.log.SetCursors(CursorName, stream, offs); err != nil {
			f.logger.Error("store forwarder cursor; retention keeps the records meanwhile", "stream", stream, "err", err)
			continue
		}
		for p, c := range offs {
			saved[laneKey{stream, p}] = c
		}
	}
}

func (f *Forwarder) snapshot() []*lane {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]*lane, 0, len(f.lanes))
	for _, ln := range f.lanes {
		out = append(out, ln)
	}
	return out
}

// LaneStatus is the forwarder's view of one edge partition.
type LaneStatus struct {
	Stream      string `json:"stream"`
	Partition   int    `json:"partition"`
	End         int64  `json:"end"`       // edge end offset
	Acked       int64  `json:"acked"`     // central's next expected offset
	Committed   int64  `json:"committed"` // central's checkpointed offset (the forwarder cursor)
	Behind      int64  `json:"behind"`
	WireBytes   int64  `json:"wire_bytes"`
	RawBytes    int64  `json:"raw_bytes"`
	Records     int64  `json:"records"`
	Retries     int64  `json:"retries"`
	Connected   bool   `json:"connected"`
	Stalled     bool   `json:"stalled"`
	LastError   string `json:"last_error,omitempty"`
	KnownByPeer bool   `json:"known"`
	Incarnation string `json:"incarnation,omitempty"` // the edge log identity central sees for the lane
}

// TokenRefused reports whether central refuses this edge's token now (it answered 401).
func (f *Forwarder) TokenRefused() bool { return f.tokenRefused.Load() }

// Status reports every lane, for the edge's local API.
func (f *Forwarder) Status() []LaneStatus {
	now := time.Now()
	var out []LaneStatus
	for _, ln := range f.snapshot() {
		out = append(out, ln.status(now, f.cfg.StallAfter))
	}
	slices.SortFunc(out, func(a, b LaneStatus) int {
		if a.Stream != b.Stream {
			if a.Stream < b.Stream {
				return -1
			}
			return 1
		}
		return a.Partition - b.Partition
	})
	return out
}

func (ln *lane) status(now time.Time, stallAfter time.Duration) LaneStatus {
	s := LaneStatus{Stream: ln.key.stream, Partition: ln.key.partition, End: ln.p.EndOffset(),
		Acked: ln.acked.Load(), Committed: ln.committed.Load(), WireBytes: ln.wireBytes.Load(),
		RawBytes: ln.rawBytes.Load(), Records: ln.records.Load(), Retries: ln.retries.Load(), KnownByPeer: ln.known.Load()}
	s.Behind = max(s.End-s.Acked, 0)
	if id := ln.ident.Load(); id != nil {
		s.Incarnation = id.Incarnation
	}
	s.Connected = now.Sub(time.Unix(0, ln.lastOK.Load())) < 30*time.Second
	s.Stalled = s.Connected && s.Behind > 0 && now.Sub(time.Unix(0, ln.lastAdvance.Load())) > stallAfter
	if e := ln.lastErr.Load(); e != nil {
		s.LastError = *e
	}
	return s
}

// errors a send can end with; each makes the lane ask central for its position again.
type conflictError struct{ pos protocol.Position }

func (e *conflictError) Error() string {
	return fmt.Sprintf("central expects offset %d (409)", e.pos.Next)
}

type statusError struct {
	code       int
	reason     string
	retryAfter time.Duration
	token      string // the request's, so a 401 can tell whether the token file changed since
}

func (e *statusError) Error() string {
	return fmt.Sprintf("central answered %d: %s", e.code, e.reason)
}

// retryLogEvery is how often a lane that keeps failing logs its retry line: the first failure
// of an outage is logged at once, then one line a minute with the failures in between, since a
// lane retries every 1.5 s on average during a long outage.
const retryLogEvery = time.Minute

func (f *Forwarder) runLane(ctx context.Context, client *http.Client, ln *lane) {
	attempt := 0
	var loggedAt time.Time
	unlogged := 0 // failures since the last retry line
	for ctx.Err() == nil {
		advanced := ln.lastAdvance.Load()
		err := f.pump(ctx, client, ln)
		if ctx.Err() != nil {
			return
		}
		msg := err.Error()
		ln.lastErr.Store(&msg)
		var ce *conflictError
		if errors.As(err, &ce) {
			attempt = 0 // a reorder or a central restart: resume at once
			continue
		}
		ln.downSince.CompareAndSwap(0, time.Now().UnixNano())
		if ln.lastAdvance.Load() != advanced {
			// Central took readings since the last failure: this is a new outage, not more of
			// the old one, so the backoff starts again from BackoffMin.
			attempt = 0
		}
		ln.retries.Add(1)
		delay := f.backoff(attempt)
		var se *statusError
		if errors.As(err, &se) && se.retryAfter > delay {
			delay = se.retryAfter
		}
		if errors.As(err, &se) && se.code == http.StatusUnauthorized {
			used := se.token
			if f.token.get(true) != used {
				attempt = 0 // the token file has a new token: try it at once
				continue
			}
			f.refusedToken(ctx, err, delay)
		} else if errors.As(err, &se) && se.code == http.StatusGone {
			f.logger.Error("forward partition; central refuses this edge log as replaced by a newer one; retrying", "stream", ln.key.stream, "partition", ln.key.partition,
				"err", err, "retry_in", delay.Round(time.Millisecond))
		} else if unlogged++; attempt == 0 || time.Since(loggedAt) >= retryLogEvery {
			f.logger.Warn("forward partition; retrying", "stream", ln.key.stream, "partition", ln.key.partition,
				"err", err, "retry_in", delay.Round(time.Millisecond), "failures", unlogged)
			loggedAt, unlogged = time.Now(), 0
		}
		attempt++
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
}

// refusedToken records that central refuses the token and says what to do, once a minute for
// all lanes together (they all fail alike).
func (f *Forwarder) refusedToken(ctx context.Context, err error, delay time.Duration) {
	f.tokenRefused.Store(true)
	now := time.Now().UnixNano()
	if last := f.refusedLogged.Load(); now-last < int64(time.Minute) || !f.refusedLogged.CompareAndSwap(last, now) {
		return
	}
	f.logger.Log(ctx, slog.LevelError, "central refuses this edge's token (401): nothing is forwarded until the edge has its current token",
		"edge", f.cfg.EdgeID, "what_to_do", f.token.refusedHint(f.cfg.EdgeID), "err", err, "retry_in", delay.Round(time.Millisecond))
}

// backoff is exponential with full jitter (AWS architecture blog, "Exponential Backoff And
// Jitter"): a fleet of edges reconnecting after a central outage spreads out instead of stampeding.
func (f *Forwarder) backoff(attempt int) time.Duration {
	d := f.cfg.BackoffMin << min(attempt, 20)
	if d <= 0 || d > f.cfg.BackoffMax {
		d = f.cfg.BackoffMax
	}
	return f.cfg.BackoffMin/2 + time.Duration(rand.Int64N(int64(d)))
}

type flight struct {
	next int64
	done chan sendResult
}

type sendResult struct {
	pos protocol.Position
	err error
}

// pump asks central for the lane's position, then keeps up to InFlight chunks in flight until a
// send fails or ctx ends.
func (f *Forwarder) pump(ctx context.Context, client *http.Client, ln *lane) error {
	pos, err := f.position(ctx, client, ln)
	if err != nil {
		return err
	}
	if !ln.verified.Load() {
		if pos, err = f.verify(ctx, client, ln, pos); err != nil {
			return err
		}
	}
	ln.update(pos)
	if down := ln.downSince.Swap(0); down != 0 {
		behind := max(ln.p.EndOffset()-pos.Next, 0)
		f.logger.Info("forwarding resumed", "stream", ln.key.stream, "partition", ln.key.partition,
			"after", time.Since(time.Unix(0, down)).Round(time.Millisecond), "records_behind", behind)
		if behind >= catchUpMin {
			ln.resumedBehind.Store(true)
		}
	}
	sendCtx, cancel := context.WithCancel(ctx)
	var window []flight
	defer func() {
		cancel()
		for _, fl := range window {
			<-fl.done
		}
	}()
	next := pos.Next
	for {
		for len(window) < f.cfg.InFlight {
			ch, err := ln.p.ReadChunk(next, f.cfg.MaxChunkBytes)
			if err == io.EOF {
				break
			}
			if err != nil {
				return fmt.Errorf("read partition at %d: %w", next, err)
			}
			if ch.Gap == nil && ch.Base > next {
				// Records below the log's start are gone without a recorded gap (retention ran
				// past what central holds): say so instead of waiting for them forever.
				g := storage.Gap{From: next, To: ch.Base, Records: ch.Base - next, Reason: "missing-at-edge", Time: time.Now()}
				ch = storage.Chunk{Base: g.From, Next: g.To, Gap: &g}
			}
			live := ch.Next >= ln.p.EndOffset()
			fl := flight{next: ch.Next, done: make(chan sendResult, 1)}
			go func() {
				p, err := f.send(sendCtx, client, ln, ch, live)
				fl.done <- sendResult{p, err}
			}()
			window = append(window, fl)
			next = ch.Next
		}
		if len(window) == 0 {
			if ln.committed.Load() >= ln.acked.Load() {
				if err := waitForData(ctx, ln.p, next); err != nil {
					return err
				}
				continue
			}
			// Idle but central's checkpoint trails: ask again after a while, so the forwarder
			// cursor (and so retention) catches up without new traffic.
			wctx, wcancel := context.WithTimeout(ctx, time.Second)
			err := waitForData(wctx, ln.p, next)
			wcancel()
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil {
				pos, err := f.position(ctx, client, ln)
				if err != nil {
					return err
				}
				ln.update(pos)
				if pos.Next != next {
					return &conflictError{pos}
				}
			}
			continue
		}
		var res sendResult
		select {
		case res = <-window[0].done:
		case <-ctx.Done():
			return ctx.Err()
		}
		sent := window[0].next
		window = window[1:]
		if res.err != nil {
			return res.err
		}
		ln.update(res.pos)
		if res.pos.Next < sent {
			// Central forgot progress (a restart before its checkpoint): go back to it.
			return &conflictError{res.pos}
		}
	}
}

// verify checks central's first answer in this process against what the partition held when
// the log was opened. Central can only hold offsets this log had, so a position past that end
// means the log went back (an older copy of the data dir, a file cut while stopped) and the
// offsets from there on are new readings central would take for repeats. The lane then moves
// to an incarnation of its own that keeps the offsets below that end as they were.
func (f *Forwarder) verify(ctx context.Context, client *http.Client, ln *lane, pos protocol.Position) (protocol.Position, error) {
	opened := ln.p.OpenedEndOffset()
	if pos.Next <= opened {
		ln.verified.Store(true)
		return pos, nil
	}
	old := ln.ident.Load()
	id, err := f.fork(ln, opened)
	if err != nil {
		return pos, fmt.Errorf("start a new incarnation of partition %s/%d: %w", ln.key.stream, ln.key.partition, err)
	}
	f.logger.Error("edge log is behind central: it went back (an older copy of the data dir, or a segment cut while stopped); "+
		"readings from its end on are forwarded as a new incarnation, and what central had past it but this log lost is recorded there as a gap",
		"stream", ln.key.stream, "partition", ln.key.partition, "log_end_at_open", opened, "central_next", pos.Next,
		"incarnation", id.Incarnation, "previous", old.Incarnation)
	ln.ident.Store(&id)
	pos, err = f.position(ctx, client, ln)
	if err != nil {
		return pos, err
	}
	if pos.Next > opened {
		return pos, fmt.Errorf("central expects offset %d of the new incarnation %s, past the log's end %d at open", pos.Next, id.Incarnation, opened)
	}
	ln.verified.Store(true)
	return pos, nil
}

func (ln *lane) update(pos protocol.Position) {
	now := time.Now().UnixNano()
	ln.lastOK.Store(now)
	if !ln.known.Load() || pos.Next != ln.acked.Load() {
		ln.lastAdvance.Store(now)
	}
	ln.acked.Store(pos.Next)
	ln.committed.Store(pos.Committed)
	ln.known.Store(true)
	ln.lastErr.Store(nil)
}

// waitForData blocks until the partition holds a record (or gap) at or past from: it parks on
// the partition's notification (storage.Partition.Wait), reading nothing.
func waitForData(ctx context.Context, p *storage.Partition, from int64) error {
	return p.Wait(ctx, from)
}

func (f *Forwarder) newRequest(ctx context.Context, method string, ln *lane, body []byte) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, f.cfg.CentralURL+protocol.SyncPath(ln.key.stream, ln.key.partition), rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+f.token.get(false))
	req.Header.Set(protocol.HeaderEdge, f.cfg.EdgeID)
	req.Header.Set(protocol.HeaderEdgeEnd, strconv.FormatInt(ln.p.EndOffset(), 10))
	if f.cfg.Version != "" {
		req.Header.Set(protocol.HeaderEdgeVersion, f.cfg.Version)
	}
	if id := ln.ident.Load(); id != nil {
		req.Header.Set(protocol.HeaderIncarnation, id.Incarnation)
		if id.Base > 0 {
			req.Header.Set(protocol.HeaderIncarnationBase, strconv.FormatInt(id.Base, 10))
		}
	}
	return req, nil
}

func (f *Forwarder) position(ctx context.Context, client *http.Client, ln *lane) (protocol.Position, error) {
	req, err := f.newRequest(ctx, http.MethodGet, ln, nil)
	if err != nil {
		return protocol.Position{}, err
	}
	pos, err := do(client, req)
	if err == nil {
		f.tokenRefused.Store(false)
	}
	return pos, err
}

func (f *Forwarder) send(ctx context.Context, client *http.Client, ln *lane, ch storage.Chunk, live bool) (protocol.Position, error) {
	if err := f.limit.wait(ctx, len(ch.Data)+512, live); err != nil {
		return protocol.Position{}, err
	}
	req, err := f.newRequest(ctx, http.MethodPost, ln, ch.Data)
	if err != nil {
		return protocol.Position{}, err
	}
	protocol.NewChunkMeta(ch).Encode(req.Header)
	pos, err := do(client, req)
	if err == nil {
		f.tokenRefused.Store(false)
		ln.wireBytes.Add(int64(len(ch.Data)))
		ln.rawBytes.Add(int64(ch.RawBytes))
		ln.records.Add(int64(ch.Records))
	}
	return pos, err
}

func do(client *http.Client, req *http.Request) (protocol.Position, error) {
	resp, err := client.Do(req)
	if err != nil {
		return protocol.Position{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return protocol.Position{}, fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode == http.StatusOK {
		var pos protocol.Position
		if err := json.Unmarshal(body, &pos); err != nil {
			return protocol.Position{}, fmt.Errorf("decode answer: %w", err)
		}
		return pos, nil
	}
	var e protocol.Error
	_ = json.Unmarshal(body, &e)
	if resp.StatusCode == http.StatusConflict && e.Position != nil {
		return protocol.Position{}, &conflictError{*e.Position}
	}
	se := &statusError{code: resp.StatusCode, reason: e.Error, token: httpx.BearerToken(req)}
	if se.reason == "" {
		se.reason = http.StatusText(resp.StatusCode)
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		se.retryAfter = time.Duration(s) * time.Second
	}
	return protocol.Position{}, se
}
