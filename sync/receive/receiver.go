package receive

import (
	"context"
	"errors"
	"fmt"
	"github.com/tributary-iot/tributary/sync/internal/httpx"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	// client_golang exposes central's per-edge, per-partition lag and apply counters in the
	// Prometheus format every monitoring stack scrapes.
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/protocol"
)

// Config configures a Receiver. Zero fields mean the defaults.
type Config struct {
	Log *storage.Log // central's log; the Receiver does not close it
	// Partitions is the partition count of central streams created on first sight; default 8.
	// An existing stream keeps its count.
	Partitions int
	// MaxBodyBytes bounds one request body (compressed); default 16 MiB. Larger gets 413.
	MaxBodyBytes int64
	// MaxRawBytes bounds one chunk's raw batches after decompression; default 64 MiB.
	MaxRawBytes int
	// CheckpointInterval is how often dedupe state is checkpointed to the log's metadata; default
	// 1s. It bounds the startup scan and how far Position.Committed trails Position.Next.
	CheckpointInterval time.Duration
	// ReorderWait is how long a chunk that arrived before its predecessor waits for it before
	// getting 409; default 2s. Pipelined requests on separate connections routinely overtake
	// each other by a few milliseconds.
	ReorderWait time.Duration
	// StallAfter is how long a lane may be behind without progress, while its edge keeps
	// talking, before the stalled gauge reports it; default 1m.
	StallAfter time.Duration
	// BodyTimeout is how long a chunk's body may take to arrive, plus one second per
	// MinBodyRate bytes of it; defaults 30s and 4 KiB/s (a 1 MiB chunk at 64 kbit/s takes 2 min).
	// A body that never comes no longer holds the connection for good.
	BodyTimeout time.Duration
	MinBodyRate int64
	// MaxStreams bounds the central streams edges may create (each holds open files per
	// partition); default 64. A chunk for a new stream past it gets 507.
	MaxStreams int
	Logger     *slog.Logger
	// Registerer receives the receiver's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Observer, when set, is told what each apply stores (Observer), on the apply path: its
	// methods must be quick and never block.
	Observer Observer
}

// Receiver is central's side of sync: it authenticates edges, verifies chunks, applies them in
// order per lane exactly once into central's log and answers with the lane's Position.
// It is an http.Handler for protocol.SyncPrefix.
type Receiver struct {
	cfg    Config
	log    *storage.Log
	logger *slog.Logger
	m      *metrics

	mu      sync.Mutex
	streams map[string]*centralStream
	edges   map[string]EdgeInfo
	calls   map[string]*edgeCalls // by registered edge id; see refusals.go

	lastUnknown atomic.Int64 // unix nanos of the last call from an unknown edge id

	adminMu sync.Mutex // add, rotate and revoke one at a time

	// waiting are lanes an edge asked about that hold no data yet: shown (at 0) in Lanes and
	// metrics without creating anything on disk, at most maxWaitingLanes of them.
	waiting map[laneID]*waitingLane

	checkpointMu sync.Mutex // one checkpoint at a time
}

// centralStream is a central stream with the lanes that feed it.
type centralStream struct {
	name   string
	stream *storage.Stream
	mu     sync.Mutex
	lanes  map[laneKey]*lane
}

type laneKey struct {
	edge      string
	partition int
}

type laneID struct {
	edge, stream string
	partition    int
}

// waitingLane is a lane known only from position requests.
type waitingLane struct {
	lastSeen time.Time
	edgeEnd  int64
}

// maxWaitingLanes bounds the lanes remembered from position requests alone.
const maxWaitingLanes = 4096

// New loads the edge registry and rebuilds the dedupe state of every stream in cfg.Log: from the
// last checkpoint, then by scanning the central partitions past it (doc.go explains why that is
// enough). Call Run to keep checkpointing.
func New(cfg Config) (*Receiver, error) {
	if cfg.Log == nil {
		return nil, errors.New("new receiver: no log")
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = 8
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 16 << 20
	}
	if cfg.MaxRawBytes <= 0 {
		cfg.MaxRawBytes = 64 << 20
	}
	if cfg.CheckpointInterval <= 0 {
		cfg.CheckpointInterval = time.Second
	}
	if cfg.ReorderWait <= 0 {
		cfg.ReorderWait = 2 * time.Second
	}
	if cfg.StallAfter <= 0 {
		cfg.StallAfter = time.Minute
	}
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = 64
	}
	if cfg.BodyTimeout <= 0 {
		cfg.BodyTimeout = 30 * time.Second
	}
	if cfg.MinBodyRate <= 0 {
		cfg.MinBodyRate = 4 << 10
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Receiver{cfg: cfg, log: cfg.Log, logger: cfg.Logger, streams: map[string]*centralStream{}, edges: map[string]EdgeInfo{},
		calls:   map[string]*edgeCalls{},
		waiting: map[laneID]*waitingLane{}}
	list, err := ListEdges(cfg.Log)
	if err != nil {
		return nil, fmt.Errorf("new receiver: %w", err)
	}
	for _, e := range list {
		r.edges[e.ID] = e
		r.calls[e.ID] = &edgeCalls{}
	}
	r.m = newMetrics(r)
	r.m.refusedEdges.WithLabelValues(unknownEdgeLabel, refusedUnknownEdge)
	for id := range r.edges {
		r.m.knownEdge(id)
	}
	for _, st := range cfg.Log.Streams() {
		cs := &centralStream{name: st.Name(), stream: st, lanes: map[laneKey]*lane{}}
		start := time.Now()
		scanned, err := r.rebuild(cs)
		if err != nil {
			return nil, fmt.Errorf("new receiver: rebuild dedupe state of stream %q: %w", st.Name(), err)
		}
		r.logger.Info("dedupe state rebuilt", "stream", st.Name(), "lanes", len(cs.lanes), "scanned", scanned, "took", time.Since(start))
		r.streams[st.Name()] = cs
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(r.m); err != nil {
			return nil, fmt.Errorf("new receiver: register metrics: %w", err)
		}
	}
	return r, nil
}

// Run checkpoints dedupe state every CheckpointInterval until ctx ends, then once more.
func (r *Receiver) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.CheckpointInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return r.Checkpoint()
		case <-t.C:
			if err := r.Checkpoint(); err != nil {
				r.logger.Error("checkpoint dedupe state; retrying", "err", err)
			}
		}
	}
}

// AddEdge registers a new edge and returns its token; effective at once. An id already
// registered is refused with ErrEdgeExists: see RotateEdge.
func (r *Receiver) AddEdge(id string) (string, error) {
	return r.issue(id, AddEdge)
}

// RotateEdge issues a registered edge a new token, refusing the old one from now on.
func (r *Receiver) RotateEdge(id string) (string, error) {
	return r.issue(id, RotateEdge)
}

func (r *Receiver) issue(id string, fn func(*storage.Log, string) (string, EdgeInfo, error)) (string, error) {
	r.adminMu.Lock() // the check for an existing id and the write are one step
	defer r.adminMu.Unlock()
	token, info, err := fn(r.log, id)
	if err != nil {
		return "", err
	}
	r.mu.Lock()
	r.edges[id] = info
	if r.calls[id] == nil {
		r.calls[id] = &edgeCalls{}
		r.m.knownEdge(id)
	}
	r.mu.Unlock()
	return token, nil
}

// RevokeEdge refuses an edge's token from now on.
func (r *Receiver) RevokeEdge(id string) error {
	r.adminMu.Lock()
	defer r.adminMu.Unlock()
	info, err := RevokeEdge(r.log, id)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.edges[id] = info
	r.mu.Unlock()
	return nil
}

// Edges lists registered edges.
func (r *Receiver) Edges() ([]EdgeInfo, error) { return ListEdges(r.log) }

func (r *Receiver) authenticate(req *http.Request) (string, bool) {
	id := req.Header.Get(protocol.HeaderEdge)
	r.mu.Lock()
	e, ok := r.edges[id]
	c := r.calls[id]
	r.mu.Unlock()
	if ok && e.accepts(httpx.BearerToken(req)) {
		c.lastAccepted.Store(time.Now().UnixNano())
		c.noteVersion(req.Header.Get(protocol.HeaderEdgeVersion))
		return id, true
	}
	r.refused(id, c, e.Revoked, req.RemoteAddr)
	return id, false
}

var streamName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// ServeHTTP serves GET and POST on protocol.SyncPrefix.
func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	edge, ok := r.authenticate(req)
	if !ok {
		r.m.rejected.WithLabelValues("unauthenticated").Inc()
		w.Header().Set("WWW-Authenticate", `Bearer realm="tributary"`)
		httpx.CloseUnread(w) // the body of a refused request may never come

		protocol.WriteError(w, http.StatusUnauthorized, nil, "edge token refused: unknown or revoked edge id, or not the edge's "+
			"current token (rotated); `tributary central edges list` at central shows the edge")
		return
	}
	// Under mutual TLS the certificate names the edge too: a gateway's certificate must not carry
	// another edge's token.
	if req.TLS != nil && len(req.TLS.PeerCertificates) > 0 {
		if cn := req.TLS.PeerCertificates[0].Subject.CommonName; cn != edge {
			r.m.rejected.WithLabelValues("certificate-mismatch").Inc()
			httpx.CloseUnread(w)
			protocol.WriteError(w, http.StatusForbidden, nil, "client certificate is for %q but the request is from edge %q: issue each edge a certificate with its edge id as CN", cn, edge)
			return
		}
	}
	stream, partition, err := protocol.ParseSyncPath(req.URL.Path)
	if err == nil && !streamName.MatchString(stream) {
		err = fmt.Errorf("stream name %q is not valid", stream)
	}
	if err != nil {
		r.reject(w, http.StatusBadRequest, "bad-path", nil, "%v", err)
		return
	}
	switch req.Method {
	case http.MethodGet:
		inc, base, err := requestIncarnation(req.Header)
		if err != nil {
			r.reject(w, http.StatusBadRequest, "malformed", nil, "%v", err)
			return
		}
		// A position asks for nothing to be created: a lane without data starts at 0.
		s := r.lookup(edge, stream, partition)
		if s == nil {
			r.wait(laneID{edge, stream, partition}, req)
			httpx.WriteJSON(w, http.StatusOK, protocol.Position{})
			return
		}
		if rf := r.admit(s, inc, base); rf != nil {
			r.reject(w, rf.code, rf.reason, nil, "%s", rf.msg)
			return
		}
		s.touch(req)
		httpx.WriteJSON(w, http.StatusOK, s.position())
	case http.MethodPost:
		r.post(w, req, edge, stream, partition)
	default:
		w.Header().Set("Allow", "GET, POST")
		r.reject(w, http.StatusMethodNotAllowed, "bad-method", nil, "method %s: use GET for the position or POST for a chunk", req.Method)
	}
}

// wait remembers a lane without data from a position request (bounded).
func (r *Receiver) wait(id laneID, req *http.Request) {
	end, _ := strconv.ParseInt(req.Header.Get(protocol.HeaderEdgeEnd), 10, 64)
	r.mu.Lock()
	defer r.mu.Unlock()
	if wl := r.waiting[id]; wl != nil {
		wl.lastSeen, wl.edgeEnd = time.Now(), max(end, 0)
	} else if len(r.waiting) < maxWaitingLanes {
		r.waiting[id] = &waitingLane{lastSeen: time.Now(), edgeEnd: max(end, 0)}
		// As for a lane with data: the gap and epoch counters exist from the first request.
		part := strconv.Itoa(id.partition)
		r.m.gapRecords.WithLabelValues(id.edge, id.stream, part)
		r.m.epochs.WithLabelValues(id.edge, id.stream, part)
	}
}

func (r *Receiver) reject(w http.ResponseWriter, code int, reason string, pos *protocol.Position, format string, args ...any) {
	r.m.rejected.WithLabelValues(reason).Inc()
	protocol.WriteError(w, code, pos, format, args...)
}

func (s *lane) touch(req *http.Request) {
	s.lastSeen.Store(time.Now().UnixNano())
	if v := req.Header.Get(protocol.HeaderEdgeEnd); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
			s.edgeEnd.Store(n)
		}
	}
}

// Bounds of what a chunk's headers may declare, relative to the body actually received.
const (
	// minRecordBytes is the smallest encoded record (empty key and value, one timestamp byte, no
	// headers; storage/FORMAT.md).
	minRecordBytes = 4
	// maxCompressionRatio is far above what sensor batches reach (about 11:1 sealed, less per
	// batch), so only a forged header hits it.
	maxCompressionRatio = 256
	// rawSlack lets a tiny body declare up to this much raw data whatever the ratio.
	rawSlack = 1 << 20
)

// rawLimit is the most raw bytes a body of n bytes may declare.
func rawLimit(n int) int64 { return max(int64(n)*maxCompressionRatio, rawSlack) }

// chunk is a validated request, decoded before any state is touched.
type chunk struct {
	base, next int64
	records    []storage.Entry // offsets base..next-1; keys and values alias body's decode buffer
	gap        *storage.Gap
	wire, raw  int
}

// parseChunk validates a request's headers and body and decodes it. Nothing is applied here, so
// a malformed request changes nothing.
func parseChunk(h http.Header, body []byte, maxRaw int) (*chunk, error) {
	m, err := protocol.ParseChunkMeta(h)
	if err != nil {
		return nil, err
	}
	base, next := m.Base, m.Next
	c := &chunk{base: base, next: next, wire: len(body)}
	if g := m.Gap; g != nil {
		if len(body) != 0 {
			return nil, fmt.Errorf("gap chunk must have an empty body and gap [%d, %d) equal to the chunk range [%d, %d)", g.From, g.To, base, next)
		}
		// A gap moves the lane without data: it may not move it past the end the edge reports,
		// or one forged header would make every later record of the lane a "duplicate".
		end, err := protocol.Int64Header(h, protocol.HeaderEdgeEnd)
		if err != nil {
			return nil, fmt.Errorf("gap chunk: %w", err)
		}
		if g.To > end {
			return nil, fmt.Errorf("gap [%d, %d) ends past the edge partition's end %d", g.From, g.To, end)
		}
		c.gap = g
		return c, nil
	}
	records, rawBytes := m.Records, m.RawBytes
	if rawBytes <= 0 || rawBytes > int64(maxRaw) {
		return nil, fmt.Errorf("chunk of %d raw bytes: the limit is %d", rawBytes, maxRaw)
	}
	if len(body) == 0 {
		return nil, errors.New("empty body")
	}
	// Every count and size a peer declares is bounded by the bytes it actually sent before
	// anything is sized from it: a 1-byte body must not make central allocate gigabytes.
	if limit := rawLimit(len(body)); rawBytes > limit {
		return nil, fmt.Errorf("chunk declares %d raw bytes from a %d-byte body: more than %d, the most central decompresses from that much", rawBytes, len(body), limit)
	}
	if records > rawBytes/minRecordBytes {
		return nil, fmt.Errorf("chunk declares %d records in %d raw bytes: a record takes at least %d", records, rawBytes, minRecordBytes)
	}
	if got := protocol.ChunkCRC(body); got != m.CRC {
		return nil, fmt.Errorf("body checksum %d does not match header %d: damaged or truncated in transit", got, m.CRC)
	}
	c.raw = int(rawBytes)
	// Sized for what the body can hold, not what the headers claim; append grows past it.
	c.records = make([]storage.Entry, 0, min(records, int64(len(body))/minRecordBytes+1, 1<<12))
	want := base
	err = storage.DecodeChunk(body, int(rawBytes), func(off int64, rec storage.Record) error {
		if off != want {
			return fmt.Errorf("record offset %d, want %d", off, want)
		}
		want++
		c.records = append(c.records, storage.Entry{Offset: off, Record: rec})
		return nil
	})
	if err != nil {
		return nil, err
	}
	if want != next {
		return nil, fmt.Errorf("chunk decodes to [%d, %d), headers say [%d, %d)", base, want, base, next)
	}
	return c, nil
}

// lookup returns the lane state, or nil when neither the stream nor the lane exists yet.
func (r *Receiver) lookup(edge, stream string, partition int) *lane {
	cs := r.stream(stream)
	if cs == nil {
		return nil
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.lanes[laneKey{edge, partition}]
}

// lane returns the lane state, creating the central stream (up to MaxStreams) and the lane on
// first sight. Only a request with data to apply calls it.
func (r *Receiver) lane(edge, stream string, partition int) (*lane, *refusal) {
	r.mu.Lock()
	cs, ok := r.streams[stream]
	if !ok {
		st, err := r.log.Stream(stream)
		if errors.Is(err, storage.ErrNoStream) {
			if len(r.streams) >= r.cfg.MaxStreams {
				r.mu.Unlock()
				r.logger.Warn("refused to create a stream: max_streams reached", "edge", edge, "stream", stream, "max_streams", r.cfg.MaxStreams)
				return nil, &refusal{http.StatusInsufficientStorage, "max-streams", fmt.Sprintf("central holds %d streams, its max_streams: stream %q is not created; raise max_streams at central or forward fewer streams", len(r.streams), stream)}
			}
			st, err = r.log.CreateStream(stream, storage.StreamConfig{Partitions: r.cfg.Partitions})
		}
		if err != nil {
			r.mu.Unlock()
			return nil, &refusal{http.StatusServiceUnavailable, "storage", fmt.Sprintf("open stream: %v", err)}
		}
		cs = &centralStream{name: stream, stream: st, lanes: map[laneKey]*lane{}}
		r.streams[stream] = cs
	}
	delete(r.waiting, laneID{edge, stream, partition})
	r.mu.Unlock()
	// The lane's gap and epoch counters exist from its first request, so an alert on them has
	// data before the first event.
	part := strconv.Itoa(partition)
	r.m.gapRecords.WithLabelValues(edge, stream, part)
	r.m.epochs.WithLabelValues(edge, stream, part)
	return cs.lane(laneKey{edge, partition}), nil
}

func (r *Receiver) stream(name string) *centralStream {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.streams[name]
}

// LaneInfo is central's view of one lane.
type LaneInfo struct {
	Edge        string    `json:"edge"`
	Stream      string    `json:"stream"`
	Partition   int       `json:"partition"`
	Incarnation string    `json:"incarnation,omitempty"` // the edge log feeding it; empty for an older edge
	Epoch       int       `json:"epoch,omitempty"`       // 1 for the first log, +1 each time the edge's log changed
	Next        int64     `json:"next"`                  // next edge offset central expects
	Committed   int64     `json:"committed"`             // checkpointed resume point
	EdgeEnd     int64     `json:"edge_end"`              // end offset the edge last reported
	Behind      int64     `json:"behind"`                // EdgeEnd - Next, as far as central knows
	LastSeen    time.Time `json:"last_seen,omitzero"`
	LastAdvance time.Time `json:"last_advance,omitzero"`
	Stalled     bool      `json:"stalled"` // edge talking, lane behind, no progress for StallAfter
	GapsRecords int64     `json:"gap_records"`
	GapsCount   int       `json:"gaps"`
}

// Lanes returns every known lane, sorted by edge, stream and partition.
func (r *Receiver) Lanes() []LaneInfo {
	r.mu.Lock()
	streams := make([]*centralStream, 0, len(r.streams))
	for _, cs := range r.streams {
		streams = append(streams, cs)
	}
	var out []LaneInfo
	for id, wl := range r.waiting {
		out = append(out, LaneInfo{Edge: id.edge, Stream: id.stream, Partition: id.partition, EdgeEnd: wl.edgeEnd,
			Behind: wl.edgeEnd, LastSeen: wl.lastSeen.UTC()})
	}
	r.mu.Unlock()
	gaps, _ := r.Gaps()
	now := time.Now()
	for _, cs := range streams {
		cs.mu.Lock()
		for _, s := range cs.lanes {
			li := LaneInfo{Edge: s.key.edge, Stream: cs.name, Partition: s.key.partition, Next: s.next.Load(),
				Committed: s.committed.Load(), EdgeEnd: s.edgeEnd.Load()}
			li.Behind = max(li.EdgeEnd-li.Next, 0)
			if rec := s.rec.Load(); rec != nil {
				li.Incarnation, li.Epoch = rec.Incarnation, rec.Epoch
			}
			if t := s.lastSeen.Load(); t > 0 {
				li.LastSeen = time.Unix(0, t).UTC()
			}
			if t := s.lastAdvance.Load(); t > 0 {
				li.LastAdvance = time.Unix(0, t).UTC()
			}
			li.Stalled = li.Behind > 0 && now.Sub(li.LastSeen) < r.cfg.StallAfter && now.Sub(li.LastAdvance) > r.cfg.StallAfter
			for _, g := range gaps {
				if g.Edge == li.Edge && g.Stream == li.Stream && g.Partition == li.Partition && g.Reason != GapLogReplaced && g.Reason != GapLogWentBack {
					li.GapsCount++
					li.GapsRecords += g.To - g.From
				}
			}
			out = append(out, li)
		}
		cs.mu.Unlock()
	}
	sortLanes(out)
	return out
}
