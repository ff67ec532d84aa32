package consume

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Summary is what a [Client.Lines] call read.
type Summary struct {
	Records int
	// Last holds the offset of the last record handed to fn, per partition.
	Last map[int]int64
	// Next holds where a consumer resumes, per partition that was read.
	Next       map[int]int64
	Reconnects int
}

// Reconnection backoff of a following consumer: doubles from the first to the cap.
const (
	reconnectFirst = 100 * time.Millisecond
	reconnectMax   = 5 * time.Second
	// commitEvery bounds how often a group commits while records flow; it also commits when the
	// stream ends or ctx ends.
	commitEvery = time.Second
)

// Lines reads central's JSON lines and calls fn with each line (newline included, valid only
// during the call) and its partition and offset, in order per partition. Without Follow it stops
// at the end offsets the partitions had when it started. With Follow it goes on until ctx ends:
// when central goes away it reconnects with backoff and resumes after the last line fn accepted,
// so no record is repeated or skipped. With Group it commits, after AfterBatch, the offsets after
// the lines fn accepted, so a restarted consumer resumes there.
func (c *Client) Lines(ctx context.Context, o Options, fn func(line []byte, partition int, offset int64) error) (Summary, error) {
	if o.Stream == "" {
		o.Stream = "readings"
	}
	sum := Summary{Last: map[int]int64{}}
	q := url.Values{"format": {"jsonl"}}
	switch {
	case len(o.Offsets) > 0:
		q.Set("offsets", FormatOffsets(o.Offsets))
	case o.FromBeginning:
		q.Set("from", "beginning")
	case o.Follow:
		q.Set("from", "end")
	default:
		q.Set("from", "beginning")
	}
	if o.Group != "" && len(o.Offsets) == 0 && !o.FromBeginning {
		q.Set("group", o.Group)
	}
	if !o.Since.IsZero() {
		q.Set("since", strconv.FormatInt(o.Since.UnixMilli(), 10))
	}
	if o.Partition != nil {
		q.Set("partition", strconv.Itoa(*o.Partition))
	}
	if o.Key != "" {
		q.Set("key", o.Key)
	}
	if o.Headers != "" {
		q.Set("headers", o.Headers)
	}
	if o.Follow {
		q.Set("follow", "true")
	}
	s := &lineSession{c: c, o: o, fn: fn, sum: &sum, lastCommit: time.Now()}
	backoff := reconnectFirst
	for {
		if o.Count > 0 {
			q.Set("max", strconv.Itoa(o.Count-sum.Records))
		}
		progress, err := s.read(ctx, q)
		if s.next != nil {
			// Every later request resumes exactly where the lines handed to fn end.
			q.Del("from")
			q.Del("group")
			q.Del("since")
			q.Del("partition")
			q.Set("offsets", FormatOffsets(s.next))
		}
		if err == nil {
			err = s.commit(ctx, true)
			sum.Next = s.next
			return sum, err
		}
		if ctx.Err() != nil {
			sum.Next = s.next
			return sum, s.commit(context.WithoutCancel(ctx), true)
		}
		var fe fnError
		var se *StatusError
		retry := o.Follow && !errors.As(err, &fe) &&
			(!errors.As(err, &se) || se.Code >= 500 || (se.Code == http.StatusNotFound && s.next == nil))
		if !retry {
			s.commit(context.WithoutCancel(ctx), true)
			sum.Next = s.next
			if errors.As(err, &fe) {
				return sum, fe.err
			}
			if se != nil && se.Code == http.StatusNotFound && s.next == nil {
				return sum, nil // the stream does not exist yet: nothing to print
			}
			return sum, err
		}
		if progress {
			backoff = reconnectFirst
		}
		isNotFound := se != nil && se.Code == http.StatusNotFound
		if !isNotFound {
			sum.Reconnects++
			if o.OnReconnect != nil {
				o.OnReconnect(err, backoff)
			}
		}
		select {
		case <-ctx.Done():
			sum.Next = s.next
			return sum, s.commit(context.WithoutCancel(ctx), true)
		case <-time.After(backoff):
		}
		if isNotFound {
			backoff = 250 * time.Millisecond // waiting for the stream to exist, not for central
		} else {
			backoff = min(2*backoff, reconnectMax)
		}
	}
}

// fnError carries an error of the caller's fn or AfterBatch, which ends Lines at once.
type fnError struct{ err error }

func (e fnError) Error() string { return e.err.Error() }

// lineSession is the state of one Lines call across its connections.
type lineSession struct {
	c          *Client
	o          Options
	fn         func([]byte, int, int64) error
	sum        *Summary
	next       map[int]int64 // resume offsets; nil until central said where the stream starts
	stopAt     map[int]int64 // without Follow: the end offsets when the first answer started
	dirty      bool          // lines handed to fn since the last AfterBatch
	committed  map[int]int64
	lastCommit time.Time
}

// read runs one request to its end. It returns nil when central finished the answer, and
// whether any line was handed to fn.
func (s *lineSession) read(ctx context.Context, q url.Values) (progress bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		strings.TrimRight(s.c.BaseURL, "/")+"/v1/consume/"+url.PathEscape(s.o.Stream)+"?"+q.Encode(), nil)
	if err != nil {
		return false, err
	}
	if s.c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+s.c.Token)
	}
	req.Header.Set("Accept", ContentTypeLines)
	req.Header.Set("Accept-Encoding", acceptEncoding(s.o.Compress, req.URL.Hostname()))
	resp, err := s.c.stream().Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, statusError(resp)
	}
	start, err := ParseOffsets(resp.Header.Get(HeaderStart))
	if err != nil {
		return false, fmt.Errorf("central's %s header: %w", HeaderStart, err)
	}
	if s.next == nil {
		s.next = start
	}
	if !s.o.Follow && s.stopAt == nil {
		s.stopAt = map[int]int64{}
		ends, err := ParseOffsets(resp.Header.Get(HeaderEnds))
		if err != nil {
			return false, fmt.Errorf("central's %s header: %w", HeaderEnds, err)
		}
		maps.Copy(s.stopAt, ends)
	}
	var body io.Reader = resp.Body
	switch strings.ToLower(resp.Header.Get("Content-Encoding")) {
	case "zstd":
		zr, err := zstd.NewReader(resp.Body, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(8<<20))
		if err != nil {
			return false, err
		}
		defer zr.Close()
		body = zr
	case "gzip":
		gr, err := gzip.NewReader(resp.Body)
		if err != nil {
			return false, err
		}
		body = gr
	}
	br := bufio.NewReaderSize(body, 256<<10)
	var long []byte
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long, line...)
			continue
		}
		if err != nil {
			if errors.Is(err, io.EOF) && len(line) == 0 && len(long) == 0 {
				break
			}
			// A torn last line is dropped: the next request starts at its offset again.
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return progress, fmt.Errorf("read central's stream: %w", err)
		}
		if long != nil {
			line = append(long, line...)
			long = nil
		}
		if len(line) > 1 {
			p, off, ok := lineHead(line)
			if !ok {
				return progress, fmt.Errorf("central sent a line this client cannot read: %.80q", line)
			}
			if next, ok := s.next[p]; ok && off < next {
				continue // already handed to fn before a reconnect
			}
			if end, ok := s.stopAt[p]; ok && off >= end {
				continue // past where a one-shot consumer stops
			}
			if err := s.fn(line, p, off); err != nil {
				return progress, fnError{err}
			}
			progress, s.dirty = true, true
			s.next[p] = off + 1
			s.sum.Last[p] = off
			s.sum.Records++
			if s.o.Count > 0 && s.sum.Records >= s.o.Count {
				return progress, nil
			}
		}
		if br.Buffered() == 0 {
			// About to wait for central: hand over what fn produced, and commit now and then.
			if err := s.commit(ctx, false); err != nil {
				return progress, err
			}
		}
	}
	next, err := ParseOffsets(resp.Trailer.Get(HeaderNext))
	if err != nil || resp.Trailer.Get(HeaderNext) == "" {
		return progress, fmt.Errorf("read central's stream: it ended without its %s trailer: %w", HeaderNext, io.ErrUnexpectedEOF)
	}
	for p, o := range next {
		// Past gaps and records a key filter skipped: central read them, nothing is lost.
		if end, ok := s.stopAt[p]; ok {
			o = min(o, max(end, s.next[p]))
		}
		s.next[p] = max(s.next[p], o)
	}
	if !s.o.Follow || (s.o.Count > 0 && s.sum.Records >= s.o.Count) {
		return progress, nil
	}
	return progress, fmt.Errorf("central ended a following stream: %w", io.ErrUnexpectedEOF)
}

// commit runs AfterBatch when lines were handed over, then commits the group's offsets when it
// is time (or now, with force).
func (s *lineSession) commit(ctx context.Context, force bool) error {
	if s.dirty && s.o.AfterBatch != nil {
		if err := s.o.AfterBatch(); err != nil {
			return fnError{err}
		}
	}
	s.dirty = false
	if s.o.Group == "" || s.next == nil || maps.Equal(s.next, s.committed) {
		return nil
	}
	if !force && time.Since(s.lastCommit) < commitEvery {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.c.Commit(ctx, s.o.Group, s.o.Stream, s.next); err != nil {
		// Central went away or refused: a follower reconnects and commits again later.
		return fmt.Errorf("commit group %q: %w", s.o.Group, err)
	}
	s.committed = maps.Clone(s.next)
	s.lastCommit = time.Now()
	return nil
}

// acceptEncoding is what a consumer asks central to compress with.
func acceptEncoding(mode, host string) string {
	switch mode {
	case "zstd", "gzip":
		return mode
	case "none":
		return "identity"
	}
	if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		return "identity" // compressing costs both ends more CPU than loopback saves
	}
	return "zstd, gzip;q=0.5"
}

// stream is the HTTP client for long answers: the same as for short calls but without an overall
// timeout, which would cut a long replay or a follow.
func (c *Client) stream() *http.Client {
	if c.HTTP != nil {
		if c.HTTP.Timeout == 0 {
			return c.HTTP
		}
		h := *c.HTTP
		h.Timeout = 0
		return &h
	}
	return &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment}}
}
