package kafkaserve

import (
	"context"
	"errors"
	"io"
	"reflect"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tributary-iot/tributary/storage"
)

// partReader keeps a storage reader between fetches of one connection, so a consumer reading a
// partition in order decodes each stored batch once, not once per fetch.
type partReader struct {
	r       *storage.Reader
	buf     []byte        // the partition's record batches of the last response, reused once sent
	held    storage.Entry // read but not yet served: it did not fit the last response
	holding bool
}

func (pr *partReader) bufOrNil() []byte {
	if pr == nil {
		return nil
	}
	return pr.buf
}

func (pr *partReader) offset() int64 {
	if pr.holding {
		return pr.held.Offset
	}
	return pr.r.Offset()
}

func (pr *partReader) hold(e *storage.Entry) { pr.held, pr.holding = *e, true }

// next reads the next record into e (gaps are skipped: Kafka clients accept offsets that jump).
func (pr *partReader) next(e *storage.Entry) error {
	if pr.holding {
		*e, pr.held, pr.holding = pr.held, storage.Entry{}, false
		return nil
	}
	for {
		var err error
		if *e, err = pr.r.Next(context.Background()); err != nil {
			return err
		}
		if e.Gap == nil {
			return nil
		}
	}
}

// fetchPart is one requested partition while a fetch is assembled.
type fetchPart struct {
	resp   *kmsg.FetchResponseTopicPartition
	part   *storage.Partition
	reader *partReader
	limit  int // the client's per-partition byte limit
	full   bool
}

// maxFetchWait bounds a long poll whatever the client asks, so a connection is never parked
// for good.
const maxFetchWait = 60 * time.Second

func (cc *conn) fetch(ctx context.Context, r *kmsg.FetchRequest) *kmsg.FetchResponse {
	resp := r.ResponseKind().(*kmsg.FetchResponse)
	zstd := cc.s.cfg.Compression == "zstd" && r.Version >= 10
	var parts []*fetchPart
	var waitOn []*storage.Partition
	used := map[partKey]bool{}
	anyError := false
	for _, rt := range r.Topics {
		t := kmsg.NewFetchResponseTopic()
		t.Topic, t.TopicID = rt.Topic, rt.TopicID
		t.Partitions = make([]kmsg.FetchResponseTopicPartition, len(rt.Partitions))
		resp.Topics = append(resp.Topics, t)
		rtp := &resp.Topics[len(resp.Topics)-1]
		for i, rp := range rt.Partitions {
			p := &rtp.Partitions[i]
			*p = kmsg.NewFetchResponseTopicPartition()
			p.Partition = rp.Partition
			p.HighWatermark, p.LastStableOffset, p.LogStartOffset = -1, -1, -1
			p.RecordBatches = []byte{} // empty, not null: librdkafka refuses a null record set
			part, kerrv := cc.s.partition(rt.Topic, rp.Partition)
			if kerrv != nil {
				p.ErrorCode = kerrv.Code
				anyError = true
				continue
			}
			start, end := part.StartOffset(), part.EndOffset()
			p.HighWatermark, p.LastStableOffset, p.LogStartOffset = end, end, start
			if rp.FetchOffset < start || rp.FetchOffset > end {
				p.ErrorCode = kerr.OffsetOutOfRange.Code
				anyError = true
				continue
			}
			key := partKey{rt.Topic, rp.Partition}
			pr := cc.readers[key]
			switch {
			case used[key]:
				// The same partition twice in one request: a reader of its own, not kept.
				pr = &partReader{r: part.NewReader(rp.FetchOffset, &storage.ReaderOptions{ReadBytes: 256 << 10})}
			case pr == nil || pr.offset() != rp.FetchOffset:
				if len(cc.readers) > 4096 {
					clear(cc.readers)
				}
				pr = &partReader{r: part.NewReader(rp.FetchOffset, &storage.ReaderOptions{ReadBytes: 256 << 10}), buf: pr.bufOrNil()}
				cc.readers[key] = pr
			}
			used[key] = true
			// The response is encoded into the connection's buffer before the next request
			// is read, so this partition's bytes can be reused by the next fetch.
			if p.RecordBatches = pr.buf[:0]; p.RecordBatches == nil {
				p.RecordBatches = []byte{}
			}
			parts = append(parts, &fetchPart{resp: p, part: part, reader: pr, limit: int(max(rp.PartitionMaxBytes, 1))})
			waitOn = append(waitOn, part)
		}
	}
	wait := min(time.Duration(r.MaxWaitMillis)*time.Millisecond, maxFetchWait)
	deadline := time.Now().Add(wait)
	total, limit := 0, int(r.MaxBytes)
	if r.Version < 3 || limit <= 0 {
		limit = 1 << 30
	}
	b := &batchBuilder{zstd: zstd}
	for {
		// Take the wake-up channels before reading, so a record landing in between wakes us.
		chans := make([]<-chan struct{}, len(waitOn))
		for i, p := range waitOn {
			chans[i] = p.Changed()
		}
		for _, fp := range parts {
			if total >= limit {
				break
			}
			if fp.full {
				continue
			}
			// Kafka's rule: the first batch of a response is returned even over the limits,
			// so a record larger than them never blocks a consumer.
			n, err := fill(fp, b, min(fp.limit-len(fp.resp.RecordBatches), limit-total), total == 0)
			total += n
			if err != nil {
				fp.resp.ErrorCode = kerr.KafkaStorageError.Code
				cc.s.logger.Error("kafka fetch read failed", "partition", fp.part.ID(), "stream", fp.part.Stream(), "err", err)
				anyError = true
			}
		}
		if total >= int(r.MinBytes) || anyError || len(waitOn) == 0 || !time.Now().Before(deadline) {
			break
		}
		if !waitAny(ctx, chans, time.Until(deadline)) {
			break
		}
	}
	for _, fp := range parts {
		end := fp.part.EndOffset()
		fp.resp.HighWatermark, fp.resp.LastStableOffset = end, end
		if cap(fp.resp.RecordBatches) <= 8<<20 {
			fp.reader.buf = fp.resp.RecordBatches
		}
	}
	return resp
}

// fill appends Kafka batches of fp's partition up to room bytes (one batch at least when first)
// and returns the bytes added.
func fill(fp *fetchPart, b *batchBuilder, room int, first bool) (int, error) {
	before := len(fp.resp.RecordBatches)
	out := fp.resp.RecordBatches
	var err error
	var e storage.Entry
	for {
		if rerr := fp.reader.next(&e); rerr != nil {
			if !errors.Is(rerr, io.EOF) {
				err = rerr
			}
			break
		}
		sz := recordSize(&e.Record)
		if len(out)-before+b.size()+sz > room && !(first && len(out) == before && b.empty()) {
			fp.reader.hold(&e)
			fp.full = true
			break
		}
		b.add(e.Offset, &e.Record)
		if b.size() >= batchTarget {
			out = b.flush(out)
		}
	}
	out = b.flush(out)
	fp.resp.RecordBatches = out
	return len(out) - before, err
}

// waitAny blocks until one channel closes (true), or d passes or ctx ends (false).
func waitAny(ctx context.Context, chans []<-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	cases := make([]reflect.SelectCase, 0, len(chans)+2)
	cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())},
		reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(t.C)})
	for _, c := range chans {
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(c)})
	}
	chosen, _, _ := reflect.Select(cases)
	return chosen >= 2
}
