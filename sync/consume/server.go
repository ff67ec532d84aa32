package consume

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/tributary-iot/tributary/sync/internal/httpx"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tributary-iot/tributary/storage"
)

// Server is the HTTP consume API on central's log:
//
//	GET  /v1/streams                          streams with partition start/end offsets
//	GET  /v1/consume/{stream}?...             one batch (see Fetch parameters below)
//	GET  /v1/tail/{stream}?from=end|beginning live tail as Server-Sent Events, one Message per event
//	GET  /v1/groups/{group}/offsets?stream=S  a consumer group's committed offsets
//	POST /v1/groups/{group}/offsets?stream=S  commit: body {"offsets":{"0":12,...}}
//
// Fetch parameters: offsets=P:O,P:O (explicit start; only the partitions named are read), else
// the group's committed offsets when group=G is given, else from=beginning (default) or from=end;
// since=RFC3339 or unix ms starts each partition at its first record that new (see
// storage.Partition.OffsetForTime); partition=P limits to one partition.
//
// With format=jsonl (or Accept: application/x-ndjson) the answer is JSON lines written as the log
// is read: headers=all|none|NAME,... picks the record headers (default DefaultHeaders), key=K keeps
// one device's records, max=N stops after N records, follow=true keeps streaming new records. The
// start offsets come in the Tributary-Start header and the offsets after the answer in the
// Tributary-Next trailer, present only when the answer ended normally. See stream.go.
//
// Otherwise the answer is one JSON page (Batch) with every header: max=N (default 1000, at most
// 10000); wait=DURATION long-polls until a record arrives (at most 60s).
type Server struct {
	log    *storage.Log
	cfg    Config
	logger *slog.Logger
	mux    *http.ServeMux
}

// Config is a Server's configuration; the zero value serves without a token and logs nothing.
type Config struct {
	// Token, when set, is required as "Authorization: Bearer TOKEN".
	Token string
	// Logger gets the API's internal errors (a read that failed); nil means discard.
	Logger *slog.Logger
}

// New returns the consume API on log.
func New(log *storage.Log, cfg Config) (*Server, error) {
	if log == nil {
		return nil, errors.New("consume: no log to serve")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{log: log, cfg: cfg, logger: cfg.Logger}
	s.routes()
	return s, nil
}

// GroupCursor is the cursor name a consumer group's offsets are stored under.
func GroupCursor(group string) string { return "group." + group }

// Patterns are the routes the Server answers, for central's mux (Go's method-and-path patterns).
var Patterns = []string{
	"GET /v1/streams",
	"GET /v1/consume/{stream}",
	"GET /v1/tail/{stream}",
	"GET /v1/groups/{group}/offsets",
	"POST /v1/groups/{group}/offsets",
}

// ServeHTTP serves Patterns; anything else is a JSON 404 or 405.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Token != "" && subtle.ConstantTimeCompare([]byte(httpx.BearerToken(r)), []byte(s.cfg.Token)) != 1 {
		httpx.WriteError(w, http.StatusUnauthorized, "this API needs a token: pass --token (the central's --api-token)")
		return
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) routes() {
	m := http.NewServeMux()
	m.HandleFunc(Patterns[0], func(w http.ResponseWriter, _ *http.Request) { s.streams(w) })
	m.HandleFunc(Patterns[1], func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("stream")
		if r.URL.Query().Get("format") == "jsonl" || strings.Contains(r.Header.Get("Accept"), ContentTypeLines) {
			if st := s.stream(w, name); st != nil {
				s.streamLines(w, r, st)
			}
			return
		}
		s.fetch(w, r, name)
	})
	m.HandleFunc(Patterns[2], func(w http.ResponseWriter, r *http.Request) { s.tail(w, r, r.PathValue("stream")) })
	offsets := func(w http.ResponseWriter, r *http.Request) { s.groupOffsets(w, r, r.PathValue("group")) }
	m.HandleFunc(Patterns[3], offsets)
	m.HandleFunc(Patterns[4], offsets)
	// The API answers in JSON even for a wrong path or method.
	m.HandleFunc("/v1/groups/{group}/offsets", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", "GET, POST")
		httpx.WriteError(w, http.StatusMethodNotAllowed, "use GET or POST")
	})
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteError(w, http.StatusNotFound, "no such endpoint %s %s", r.Method, r.URL.Path)
	})
	s.mux = m
}

func (s *Server) streams(w http.ResponseWriter) {
	out := []StreamInfo{}
	for _, st := range s.log.Streams() {
		out = append(out, streamInfo(st))
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

func streamInfo(st *storage.Stream) StreamInfo {
	si := StreamInfo{Name: st.Name()}
	for i := 0; i < st.Partitions(); i++ {
		p := st.Partition(i)
		si.Partitions = append(si.Partitions, PartitionInfo{i, p.StartOffset(), p.EndOffset()})
	}
	return si
}

func (s *Server) stream(w http.ResponseWriter, name string) *storage.Stream {
	st, err := s.log.Stream(name)
	if err != nil {
		httpx.WriteError(w, http.StatusNotFound, "stream %q does not exist (yet): no edge has forwarded to it", name)
		return nil
	}
	return st
}

// ParseOffsets reads "P:O,P:O".
func ParseOffsets(s string) (map[int]int64, error) {
	out := map[int]int64{}
	if s == "" {
		return out, nil
	}
	for _, part := range strings.Split(s, ",") {
		ps, os, ok := strings.Cut(part, ":")
		p, err1 := strconv.Atoi(ps)
		o, err2 := strconv.ParseInt(os, 10, 64)
		if !ok || err1 != nil || err2 != nil || p < 0 || o < 0 {
			return nil, fmt.Errorf("offsets %q: want comma-separated PARTITION:OFFSET pairs", s)
		}
		out[p] = o
	}
	return out, nil
}

// FormatOffsets writes "P:O,P:O" in partition order.
func FormatOffsets(m map[int]int64) string {
	var b []byte
	for _, p := range slices.Sorted(maps.Keys(m)) {
		if len(b) > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(p), 10)
		b = append(b, ':')
		b = strconv.AppendInt(b, m[p], 10)
	}
	return string(b)
}

func parseSince(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.UnixMilli(ms), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("since %q: give RFC 3339 time or unix milliseconds", s)
	}
	return t, nil
}

// paramError is a request parameter central cannot use: the client's mistake, answered with 400.
type paramError struct{ error }

func writeStartError(w http.ResponseWriter, err error) {
	var pe paramError
	if errors.As(err, &pe) {
		httpx.WriteError(w, http.StatusBadRequest, "%v", err)
		return
	}
	httpx.WriteError(w, http.StatusInternalServerError, "find the start offsets: %v", err)
}

// start resolves the starting offsets of the partitions a request reads. A since= seek stops
// when ctx ends.
func (s *Server) start(ctx context.Context, st *storage.Stream, get func(string) string) (map[int]int64, error) {
	parts := []int{}
	if ps := get("partition"); ps != "" {
		p, err := strconv.Atoi(ps)
		if err != nil || p < 0 || p >= st.Partitions() {
			return nil, paramError{fmt.Errorf("partition %q: the stream has partitions 0..%d", ps, st.Partitions()-1)}
		}
		parts = append(parts, p)
	}
	explicit, err := ParseOffsets(get("offsets"))
	if err != nil {
		return nil, paramError{err}
	}
	for p := range explicit {
		if p >= st.Partitions() {
			return nil, paramError{fmt.Errorf("offsets: partition %d does not exist; the stream has partitions 0..%d", p, st.Partitions()-1)}
		}
	}
	if len(parts) == 0 {
		if len(explicit) > 0 {
			// Explicit offsets name the partitions to read, as kcat's -o does with -p.
			for p := range explicit {
				parts = append(parts, p)
			}
		} else {
			for i := 0; i < st.Partitions(); i++ {
				parts = append(parts, i)
			}
		}
	}
	since, err := parseSince(get("since"))
	if err != nil {
		return nil, paramError{err}
	}
	from := get("from")
	if from != "" && from != "beginning" && from != "end" {
		return nil, paramError{fmt.Errorf("from %q: use beginning or end", from)}
	}
	group := get("group")
	out := map[int]int64{}
	for _, p := range parts {
		part := st.Partition(p)
		if o, ok := explicit[p]; ok {
			out[p] = o
			continue
		}
		if group != "" {
			if o, ok := s.log.Cursor(GroupCursor(group), st.Name(), p); ok {
				out[p] = o
				continue
			}
		}
		if from == "end" {
			out[p] = part.EndOffset()
			continue
		}
		out[p] = part.StartOffset()
		if !since.IsZero() {
			if out[p], err = part.OffsetForTime(ctx, since); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

func (s *Server) fetch(w http.ResponseWriter, r *http.Request, name string) {
	st := s.stream(w, name)
	if st == nil {
		return
	}
	q := r.URL.Query()
	offsets, err := s.start(r.Context(), st, q.Get)
	if err != nil {
		writeStartError(w, err)
		return
	}
	maxN := 1000
	if v := q.Get("max"); v != "" {
		if maxN, err = strconv.Atoi(v); err != nil || maxN < 1 {
			httpx.WriteError(w, http.StatusBadRequest, "max %q: give a positive number", v)
			return
		}
		maxN = min(maxN, 10000)
	}
	var wait time.Duration
	if v := q.Get("wait"); v != "" {
		if wait, err = time.ParseDuration(v); err != nil || wait < 0 {
			httpx.WriteError(w, http.StatusBadRequest, "wait %q: give a duration such as 30s", v)
			return
		}
		wait = min(wait, time.Minute)
	}
	batch := Batch{Messages: []Message{}, Offsets: offsets, Ends: map[int]int64{}}
	deadline := time.Now().Add(wait)
	for {
		for p := range offsets {
			batch.Ends[p] = st.Partition(p).EndOffset()
		}
		if err := read(r.Context(), st, offsets, maxN, &batch); err != nil {
			s.logger.Warn("consume API: read failed", "stream", name, "err", err)
			httpx.WriteError(w, http.StatusInternalServerError, "read: %v", err)
			return
		}
		if len(batch.Messages) > 0 || wait == 0 || time.Now().After(deadline) {
			break
		}
		waitAny(r.Context(), st, offsets, time.Until(deadline))
		if r.Context().Err() != nil {
			break // the client left or central is stopping: answer what there is, at once
		}
	}
	httpx.WriteJSON(w, http.StatusOK, batch)
}

// read fills batch from offsets, sharing max fairly: each partition gets a slice of it first.
func read(ctx context.Context, st *storage.Stream, offsets map[int]int64, maxN int, batch *Batch) error {
	per := max(maxN/max(len(offsets), 1), 1)
	for p, off := range offsets {
		if len(batch.Messages) >= maxN {
			break
		}
		part := st.Partition(p)
		if off >= part.EndOffset() {
			continue
		}
		r := part.NewReader(off, &storage.ReaderOptions{ReadBytes: 256 << 10})
		for n := 0; n < per && len(batch.Messages) < maxN; n++ {
			e, err := r.Next(ctx)
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
			if e.Gap == nil {
				batch.Messages = append(batch.Messages, NewMessage(st.Name(), p, e.Offset, &e.Record))
			}
			offsets[p] = r.Offset()
		}
	}
	return nil
}

// waitAny returns when any partition has data past its offset, or after d.
func waitAny(ctx context.Context, st *storage.Stream, offsets map[int]int64, d time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var wg sync.WaitGroup
	for p, off := range offsets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if st.Partition(p).Wait(ctx, off) == nil {
				cancel()
			}
		}()
	}
	wg.Wait()
}

func (s *Server) tail(w http.ResponseWriter, r *http.Request, name string) {
	st := s.stream(w, name)
	if st == nil {
		return
	}
	q := r.URL.Query()
	if q.Get("from") == "" {
		q.Set("from", "end")
	}
	offsets, err := s.start(r.Context(), st, q.Get)
	if err != nil {
		writeStartError(w, err)
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		httpx.WriteError(w, http.StatusInternalServerError, "streaming is not supported by this connection")
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	flusher.Flush()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	msgs := make(chan Message, 1024)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for p, off := range offsets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rd := st.Partition(p).NewReader(off, &storage.ReaderOptions{Follow: true, ReadBytes: 256 << 10})
			for {
				e, err := rd.Next(ctx)
				if err != nil {
					return
				}
				if e.Gap != nil {
					continue
				}
				select {
				case msgs <- NewMessage(st.Name(), p, e.Offset, &e.Record):
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-keepalive.C:
			if _, err := io.WriteString(w, ": keepalive\n\n"); err != nil {
				return
			}
			flusher.Flush()
		case m := <-msgs:
			b, _ := json.Marshal(m)
			if _, err := fmt.Fprintf(w, "id: %d:%d\ndata: %s\n\n", m.Partition, m.Offset, b); err != nil {
				return
			}
			for more := true; more; {
				select {
				case m := <-msgs:
					b, _ := json.Marshal(m)
					fmt.Fprintf(w, "id: %d:%d\ndata: %s\n\n", m.Partition, m.Offset, b)
				default:
					more = false
				}
			}
			flusher.Flush()
		}
	}
}

// GroupOffsets is the body of a group's offsets.
type GroupOffsets struct {
	Offsets map[int]int64 `json:"offsets"`
}

func (s *Server) groupOffsets(w http.ResponseWriter, r *http.Request, group string) {
	if group == "" || strings.Contains(group, "/") || len(group) > 128 {
		httpx.WriteError(w, http.StatusBadRequest, "group name %q: 1-128 characters without /", group)
		return
	}
	st := s.stream(w, r.URL.Query().Get("stream"))
	if st == nil {
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		out := GroupOffsets{Offsets: map[int]int64{}}
		for i := 0; i < st.Partitions(); i++ {
			if o, ok := s.log.Cursor(GroupCursor(group), st.Name(), i); ok {
				out.Offsets[i] = o
			}
		}
		httpx.WriteJSON(w, http.StatusOK, out)
	case http.MethodPost:
		var in GroupOffsets
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&in); err != nil {
			httpx.WriteError(w, http.StatusBadRequest, "decode offsets: %v", err)
			return
		}
		for p, o := range in.Offsets {
			if p < 0 || p >= st.Partitions() || o < 0 {
				httpx.WriteError(w, http.StatusBadRequest, "offset %d for partition %d is out of range", o, p)
				return
			}
			// A group past the end would skip every record until the partition got there.
			if end := st.Partition(p).EndOffset(); o > end {
				httpx.WriteError(w, http.StatusBadRequest, "offset %d for partition %d is past its end %d: commit at most the end (the offset after the last record read)", o, p, end)
				return
			}
		}
		if err := s.log.SetCursors(GroupCursor(group), st.Name(), in.Offsets); err != nil {
			httpx.WriteError(w, http.StatusServiceUnavailable, "commit: %v", err)
			return
		}
		httpx.WriteJSON(w, http.StatusOK, in)
	}
}
