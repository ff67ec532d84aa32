package kafkasink

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-iot/tributary/storage"
)

// Headers the sink adds to every Kafka record besides the central record's own headers. Together
// they name the record's position in the central log; the sink reads them back from Kafka's tail
// to learn where to resume (see the package documentation).
const (
	HeaderCentralLog       = "central-log"       // random id of the central log, made on first start
	HeaderCentralStream    = "central-stream"    // central stream name
	HeaderCentralPartition = "central-partition" // decimal
	HeaderCentralOffset    = "central-offset"    // decimal
)

// HeaderReceiveTime is the edge's header with the time the gateway received a reading: unix
// milliseconds as a decimal string (an 8-byte big-endian integer and RFC 3339 are accepted too).
// It becomes the Kafka record timestamp.
const HeaderReceiveTime = "receive-time"

const metaNamespace = "kafka-sink"

// Sink produces a central stream to a Kafka topic, exactly once and in per-device order.
type Sink struct {
	log    *storage.Log
	cfg    Config
	logger *slog.Logger
	kopts  []kgo.Opt
	logID  string

	produced   atomic.Int64
	errs       atomic.Int64
	recoveries atomic.Int64
	gapRecords atomic.Int64
	up         atomic.Bool
	lastAck    atomic.Int64 // unix ms of the last acknowledged record

	mu     sync.Mutex
	stream *storage.Stream
	// knownSchemas holds the schema ids central's registry has served (the produce loop's).
	knownSchemas map[int32]bool
	acked        []atomic.Int64 // per central partition: offset after the last record known to be in Kafka

	metrics metrics
}

// New prepares a sink for stream cfg.Stream of log. It marks the sink's cursor as required, so
// retention keeps what the sink has not exported yet, even while Kafka is unreachable.
func New(log *storage.Log, cfg Config) (*Sink, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	kopts, err := cfg.clientOptions()
	if err != nil {
		return nil, err
	}
	if err := log.RequireCursor(cfg.Cursor); err != nil {
		return nil, fmt.Errorf("start kafka sink: %w", err)
	}
	logID, err := centralLogID(log)
	if err != nil {
		return nil, fmt.Errorf("start kafka sink: %w", err)
	}
	s := &Sink{log: log, cfg: cfg, logger: cfg.Logger.With("sink", "kafka", "topic", cfg.Topic), kopts: kopts, logID: logID, knownSchemas: map[int32]bool{}}
	s.metrics = newMetrics(cfg)
	return s, nil
}

// centralLogID returns the log's random identity, creating it once. Kafka records carry it so a
// central node whose data directory was wiped (offsets start again at 0) does not mistake the old
// records in the topic for its own.
func centralLogID(log *storage.Log) (string, error) {
	id, err := log.Meta(metaNamespace, "log-id")
	if err != nil {
		return "", fmt.Errorf("read log id: %w", err)
	}
	if len(id) > 0 {
		return string(id), nil
	}
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("make log id: %w", err)
	}
	id = []byte(hex.EncodeToString(b))
	if err := log.SetMeta(metaNamespace, "log-id", id); err != nil {
		return "", fmt.Errorf("store log id: %w", err)
	}
	return string(id), nil
}

// Run exports until ctx ends, then waits for Kafka to acknowledge what was sent, stores the
// cursor and returns nil. A Kafka outage or a failed produce only delays: Run backs off, reads
// Kafka's tail to learn what landed, and resumes right after it. Run returns an error only when
// the log closes under it.
func (s *Sink) Run(ctx context.Context) error {
	backoff := 250 * time.Millisecond
	for {
		stream, err := s.waitStream(ctx)
		if err != nil {
			return nil // ctx ended
		}
		start := time.Now()
		err = s.session(ctx, stream)
		s.up.Store(false)
		if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
			return nil
		}
		if errors.Is(err, storage.ErrClosed) {
			return fmt.Errorf("kafka sink: %w", err)
		}
		s.errs.Add(1)
		if time.Since(start) > time.Minute {
			backoff = 250 * time.Millisecond
		}
		s.logger.Warn("kafka sink paused; will read Kafka's tail and resume", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, s.cfg.MaxRetryBackoff)
		s.recoveries.Add(1)
	}
}

// waitStream waits until central has created the stream (on the first reading it receives).
func (s *Sink) waitStream(ctx context.Context) (*storage.Stream, error) {
	for {
		st, err := s.log.Stream(s.cfg.Stream)
		if err == nil {
			s.mu.Lock()
			if s.stream == nil {
				s.stream = st
				s.acked = make([]atomic.Int64, st.Partitions())
			}
			s.mu.Unlock()
			return st, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

type item struct {
	partition int
	entry     storage.Entry
}

// session is one producer lifetime: learn the resume points from Kafka, then read the central
// partitions and produce until ctx ends or something fails. A failed session leaves Kafka in a
// state the next session's scan reads back, so no error path needs its own bookkeeping.
func (s *Sink) session(ctx context.Context, stream *storage.Stream) error {
	pos, err := s.recover(ctx, stream)
	if err != nil {
		return err
	}
	if err := s.checkpoint(stream, pos); err != nil {
		return err
	}
	for p, off := range pos.resume {
		s.storeAcked(p, off)
	}

	opts := append([]kgo.Opt{
		kgo.DefaultProduceTopic(s.cfg.Topic),
		// Kafka's default partitioner (murmur2 of the key): the same function storage uses, so a
		// device keeps its partition number when the topic has as many partitions as the stream.
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.MaxBufferedRecords(s.cfg.MaxBufferedRecords),
		// Idempotence is kgo's default (acks=all, sequence numbers): retries inside a session
		// never duplicate and never reorder within a partition.
	}, s.kopts...)
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("create kafka producer: %w", err)
	}
	defer client.Close()

	// Readers stop with ctx; records already handed to kgo get their own context so a shutdown
	// can still wait for their acknowledgement instead of failing them.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pctx, pcancel := context.WithCancel(context.Background())
	defer pcancel()
	items := make(chan item, 4096)
	readErr := make(chan error, stream.Partitions())
	var readers sync.WaitGroup
	for p := range stream.Partitions() {
		readers.Add(1)
		go func() {
			defer readers.Done()
			if err := readPartition(sctx, stream.Partition(p), pos.resume[p], items); err != nil {
				readErr <- err
			}
		}()
	}
	defer readers.Wait()
	defer cancel()

	var (
		failOnce sync.Once
		failErr  error
		failed   = make(chan struct{})
		kmu      sync.Mutex
		kafkaEnd = maps.Clone(pos.scanEnd) // per Kafka partition: offset after our last acknowledged record
	)
	promise := func(p int, off int64) func(*kgo.Record, error) {
		return func(r *kgo.Record, err error) {
			if err != nil {
				failOnce.Do(func() { failErr = err; close(failed) })
				return
			}
			s.produced.Add(1)
			s.storeAcked(p, off+1)
			s.lastAck.Store(time.Now().UnixMilli())
			kmu.Lock()
			if r.Offset+1 > kafkaEnd[r.Partition] {
				kafkaEnd[r.Partition] = r.Offset + 1
			}
			kmu.Unlock()
		}
	}
	produceFailed := func() error {
		select {
		case <-failed:
			return fmt.Errorf("produce to kafka topic %s: %w", s.cfg.Topic, failErr)
		default:
			return nil
		}
	}
	// flushAndCheckpoint waits until Kafka acknowledged everything sent, which is the only moment
	// the read positions and Kafka's offsets describe the same set of records.
	flushAndCheckpoint := func(fctx context.Context) error {
		if err := client.Flush(fctx); err != nil {
			return fmt.Errorf("flush kafka producer: %w", err)
		}
		if err := produceFailed(); err != nil {
			return err
		}
		kmu.Lock()
		for k, off := range kafkaEnd {
			pos.scanEnd[k] = off
		}
		kmu.Unlock()
		return s.checkpoint(stream, pos)
	}

	s.up.Store(true)
	s.logger.Info("kafka sink producing", "stream", stream.Name(), "resume", pos.resume)
	ticker := time.NewTicker(s.cfg.CheckpointInterval)
	defer ticker.Stop()
	dirty := false
	for {
		select {
		case <-ctx.Done():
			cancel()
			if !dirty {
				return nil
			}
			// Shutting down: give Kafka a bounded moment to acknowledge, so the next start
			// needs no scan. If it cannot, the scan at the next start covers it.
			fctx, fcancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer fcancel()
			return flushAndCheckpoint(fctx)
		case <-failed:
			return produceFailed()
		case err := <-readErr:
			return fmt.Errorf("read central partition: %w", err)
		case <-ticker.C:
			if dirty {
				if err := flushAndCheckpoint(ctx); err != nil {
					return err
				}
				dirty = false
			}
		case it := <-items:
			p, e := it.partition, it.entry
			if e.Gap != nil {
				// Central never had these records (dropped at an edge or quarantined); there is
				// nothing to send, and central's consumers see the gap themselves.
				s.gapRecords.Add(e.Gap.To - e.Gap.From)
				pos.advance(p, e.Gap.To)
				s.storeAcked(p, e.Gap.To)
				dirty = true
				continue
			}
			if pos.skip[p][e.Offset] {
				// Already in Kafka, written by a session that failed after a later record of
				// this partition went to another Kafka partition.
				pos.advance(p, e.Offset+1)
				continue
			}
			if err := s.awaitSchema(ctx, e.Record); err != nil {
				// Stopping while a value waits for its schema: it stays unproduced and the
				// next start reads it again (its position did not advance).
				cancel()
				if !dirty {
					return nil
				}
				fctx, fcancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer fcancel()
				return flushAndCheckpoint(fctx)
			}
			rec := s.kafkaRecord(stream.Name(), p, e)
			client.Produce(pctx, rec, promise(p, e.Offset))
			pos.advance(p, e.Offset+1)
			dirty = true
		}
	}
}

func (s *Sink) storeAcked(p int, next int64) {
	a := &s.acked[p]
	for {
		cur := a.Load()
		if next <= cur || a.CompareAndSwap(cur, next) {
			return
		}
	}
}

// readPartition feeds one central partition's entries, in offset order, from offset from.
func readPartition(ctx context.Context, p *storage.Partition, from int64, out chan<- item) error {
	r := p.NewReader(from, &storage.ReaderOptions{Follow: true})
	for {
		e, err := r.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		select {
		case out <- item{partition: p.ID(), entry: e}:
		case <-ctx.Done():
			return nil
		}
	}
}

// kafkaRecord builds the Kafka record of a central entry: same key and value, every central
// header (provenance: edge, edge partition and offset, topic, ...) plus the central position.
func (s *Sink) kafkaRecord(stream string, p int, e storage.Entry) *kgo.Record {
	headers := make([]kgo.RecordHeader, 0, len(e.Headers)+4)
	for _, h := range e.Headers {
		headers = append(headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
	}
	headers = append(headers,
		kgo.RecordHeader{Key: HeaderCentralLog, Value: []byte(s.logID)},
		kgo.RecordHeader{Key: HeaderCentralStream, Value: []byte(stream)},
		kgo.RecordHeader{Key: HeaderCentralPartition, Value: strconv.AppendInt(nil, int64(p), 10)},
		kgo.RecordHeader{Key: HeaderCentralOffset, Value: strconv.AppendInt(nil, e.Offset, 10)},
	)
	value := e.Value
	if s.cfg.ConfluentFraming {
		value = confluentValue(e.Record)
	}
	return &kgo.Record{
		Key:       e.Key,
		Value:     value,
		Headers:   headers,
		Timestamp: ReceiveTime(e.Record),
	}
}

// ReceiveTime is the time the gateway received a record: its receive-time header, else the
// record's own timestamp.
func ReceiveTime(rec storage.Record) time.Time {
	v := rec.HeaderValue(HeaderReceiveTime)
	if len(v) > 0 {
		if ms, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			return time.UnixMilli(ms)
		}
		if len(v) == 8 {
			return time.UnixMilli(int64(binary.BigEndian.Uint64(v)))
		}
		if t, err := time.Parse(time.RFC3339Nano, string(v)); err == nil {
			return t
		}
	}
	return rec.Timestamp
}

// Describe implements [prometheus.Collector].
func (s *Sink) Describe(ch chan<- *prometheus.Desc) { s.metrics.describe(ch) }

// Collect implements [prometheus.Collector].
func (s *Sink) Collect(ch chan<- prometheus.Metric) { s.metrics.collect(s, ch) }
