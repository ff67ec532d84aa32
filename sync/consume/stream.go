package consume

import (
	"bytes"
	"context"
	"errors"
	"github.com/tributary-iot/tributary/sync/internal/httpx"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/tributary-iot/tributary/storage"
)

// Headers of a JSON-lines answer.
const (
	// HeaderStart holds the offsets the answer starts at, P:O,...: a client that loses the
	// connection before any line resumes there.
	HeaderStart = "Tributary-Start"
	// HeaderNext is a trailer holding the offsets after everything the answer covered, gaps and
	// records skipped by a key filter included. It is present only when the answer ended
	// normally; a client that reads the body to its end without it lost the connection.
	HeaderNext = "Tributary-Next"
	// HeaderEnds holds the partitions' end offsets when the answer started: where an answer
	// without follow stops.
	HeaderEnds = "Tributary-Ends"
	// ContentTypeLines is the media type of a JSON-lines answer.
	ContentTypeLines = "application/x-ndjson"
)

const (
	// writeChunk is how many encoded bytes collect before they are written out.
	writeChunk = 64 << 10
	// keepalive is how long a following answer stays silent before it writes an empty line, so
	// idle proxies and dead clients are noticed.
	keepalive = 15 * time.Second
)

// streamLines answers a fetch with format=jsonl: one record per line, written as the log is read.
// Without follow it ends at the end offsets the partitions had when it started (or after max
// records); with follow it goes on until the client leaves or central stops.
func (s *Server) streamLines(w http.ResponseWriter, r *http.Request, st *storage.Stream) {
	q := r.URL.Query()
	offsets, err := s.start(r.Context(), st, q.Get)
	if err != nil {
		writeStartError(w, err)
		return
	}
	headers, err := ParseHeaders(q.Get("headers"))
	if err != nil {
		httpx.WriteError(w, http.StatusBadRequest, "%v", err)
		return
	}
	maxN := 0
	if v := q.Get("max"); v != "" {
		if maxN, err = strconv.Atoi(v); err != nil || maxN < 1 {
			httpx.WriteError(w, http.StatusBadRequest, "max %q: give a positive number", v)
			return
		}
	}
	follow := q.Get("follow") == "true" || q.Get("follow") == "1"
	var key []byte
	if k := q.Get("key"); k != "" {
		key = []byte(k)
		if q.Get("partition") == "" && len(q.Get("offsets")) == 0 {
			// Central places every record of a key in the partition its partitioner picks.
			kp := st.PartitionFor(key)
			for p := range offsets {
				if p != kp {
					delete(offsets, p)
				}
			}
		}
	}
	parts := make([]int, 0, len(offsets))
	for p := range offsets {
		parts = append(parts, p)
	}
	slices.Sort(parts)
	ends := map[int]int64{}
	for _, p := range parts {
		ends[p] = st.Partition(p).EndOffset()
	}

	// The request's context ends when the client leaves and when central begins to shut down.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	h := w.Header()
	h.Set("Content-Type", ContentTypeLines)
	h.Set("Cache-Control", "no-cache")
	h.Set(HeaderStart, FormatOffsets(offsets))
	h.Set(HeaderEnds, FormatOffsets(ends))
	h.Set("Trailer", HeaderNext)
	out, finish := compressor(w, r.Header.Get("Accept-Encoding"))
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	flush := func() error {
		if f, ok := out.(interface{ Flush() error }); ok {
			if err := f.Flush(); err != nil {
				return err
			}
		}
		if flusher != nil {
			flusher.Flush()
		}
		return nil
	}
	if follow {
		flush() // the client sees the start offsets at once, before any record exists
	}

	// One worker per partition reads and encodes; this goroutine writes their chunks in the
	// order each partition made them. Partitions interleave by chunk, and on a machine with
	// several cores the decoding and encoding of partitions run side by side.
	chunks := make(chan *lineChunk, 2*len(parts))
	free := make(chan *lineChunk, 3*len(parts))
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for _, p := range parts {
		// The worker gets its own copy of what it needs: this goroutine goes on writing offsets.
		pw := &partitionWorker{part: st.Partition(p), id: p, from: offsets[p], end: ends[p], follow: follow,
			key: key, enc: newLineEncoder(st.Name(), headers)}
		wg.Add(1)
		go func() {
			defer wg.Done()
			pw.run(ctx, chunks, free)
		}()
	}
	sent, active := 0, len(parts)
	idle := time.NewTimer(keepalive)
	defer idle.Stop()
	for active > 0 {
		var c *lineChunk
		select {
		case c = <-chunks:
		case <-idle.C:
			if _, err := out.Write([]byte{'\n'}); err != nil || flush() != nil {
				return
			}
			idle.Reset(keepalive)
			continue
		case <-ctx.Done():
			return
		}
		if c.err != nil {
			return // central stops or the client left: no trailer, so the client resumes
		}
		buf, lines := c.buf, len(c.offs)
		if maxN > 0 && sent+lines >= maxN {
			lines = maxN - sent
			if lines > 0 {
				buf = c.buf[:c.ends[lines-1]]
				offsets[c.partition] = c.offs[lines-1] + 1
			}
		} else {
			offsets[c.partition] = c.next
		}
		if _, err := out.Write(buf); err != nil {
			return
		}
		sent += lines
		if maxN > 0 && sent >= maxN {
			break
		}
		if c.done {
			active--
		}
		c.reset()
		select {
		case free <- c:
		default:
		}
		if follow && len(chunks) == 0 {
			// Nothing else is ready: hand over what is written, for the latency of a follower.
			if flush() != nil {
				return
			}
			idle.Reset(keepalive)
		}
	}
	if finish() != nil {
		return
	}
	h.Set(HeaderNext, FormatOffsets(offsets))
}

// lineChunk is a run of encoded lines of one partition.
type lineChunk struct {
	partition int
	buf       []byte
	ends      []int   // where each line ends in buf
	offs      []int64 // each line's offset
	next      int64   // the partition's offset after the chunk, skipped entries included
	done      bool    // the partition has nothing more for this answer
	err       error   // reading failed: the answer ends without its trailer
}

func (c *lineChunk) reset() {
	c.buf, c.ends, c.offs = c.buf[:0], c.ends[:0], c.offs[:0]
	c.done, c.err = false, nil
}

// partitionWorker reads one partition for a JSON-lines answer and encodes its records.
type partitionWorker struct {
	part   *storage.Partition
	id     int
	from   int64
	end    int64 // without follow: stop here
	follow bool
	key    []byte
	enc    *lineEncoder
}

func (w *partitionWorker) run(ctx context.Context, chunks chan<- *lineChunk, free chan *lineChunk) {
	rd := w.part.NewReader(w.from, &storage.ReaderOptions{ReadBytes: 1 << 20})
	next := rd.Offset() // after the entries handled: sent, or skipped as gaps or by the key filter
	send := func(c *lineChunk) bool {
		c.partition, c.next = w.id, next
		select {
		case chunks <- c:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for {
		var c *lineChunk
		select {
		case c = <-free:
		default:
			c = &lineChunk{buf: make([]byte, 0, writeChunk+4096)}
		}
		for len(c.buf) < writeChunk {
			if !w.follow && rd.Offset() >= w.end {
				c.done = true
				break
			}
			e, err := rd.Next(ctx)
			if errors.Is(err, io.EOF) {
				if !w.follow {
					c.done = true
					break
				}
				if len(c.offs) > 0 {
					break // hand over what there is before waiting
				}
				if err = w.part.Wait(ctx, rd.Offset()); err == nil {
					continue
				}
			}
			if err != nil {
				c.err = err
				send(c)
				return
			}
			if !w.follow && e.Offset >= w.end {
				c.done = true
				break
			}
			next = rd.Offset()
			if e.Gap != nil || (w.key != nil && !bytes.Equal(e.Key, w.key)) {
				continue
			}
			c.buf = w.enc.appendLine(c.buf, w.id, e.Offset, &e.Record)
			c.ends = append(c.ends, len(c.buf))
			c.offs = append(c.offs, e.Offset)
		}
		done := c.done // c belongs to the writer once sent
		if !send(c) || done {
			return
		}
	}
}

// compressor wraps w in zstd or gzip when the client accepts one, zstd first: both ends spend
// CPU on it, which pays on a real network and not on loopback, so clients ask for it only there.
func compressor(w http.ResponseWriter, accept string) (io.Writer, func() error) {
	switch {
	case acceptsEncoding(accept, "zstd"):
		zw, err := zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1),
			zstd.WithWindowSize(1<<20))
		if err == nil {
			w.Header().Set("Content-Encoding", "zstd")
			w.Header().Add("Vary", "Accept-Encoding")
			return zw, zw.Close
		}
	case acceptsEncoding(accept, "gzip"):
		gw, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
		if err == nil {
			w.Header().Set("Content-Encoding", "gzip")
			w.Header().Add("Vary", "Accept-Encoding")
			return gw, gw.Close
		}
	}
	return w, func() error { return nil }
}

// acceptsEncoding reads an Accept-Encoding list; "name;q=0" refuses name.
func acceptsEncoding(accept, name string) bool {
	for _, part := range strings.Split(accept, ",") {
		enc, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if !strings.EqualFold(strings.TrimSpace(enc), name) {
			continue
		}
		q := strings.ReplaceAll(params, " ", "")
		return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
	}
	return false
}
