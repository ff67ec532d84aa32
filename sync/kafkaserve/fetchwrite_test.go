package kafkaserve

import (
	"bytes"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestFetchBuffersMatchKmsg checks that the writev encoding of Fetch responses is byte for byte
// kmsg's, at every version the listener serves, with partitions that carry errors, empty, small
// (copied) and large (separate buffer) record sets, and a null one.
func TestFetchBuffersMatchKmsg(t *testing.T) {
	big := bytes.Repeat([]byte{7}, 3*inlineBatches)
	for v := versions[1].min; v <= versions[1].max; v++ {
		r := kmsg.NewPtrFetchResponse()
		r.SetVersion(v)
		r.ThrottleMillis, r.ErrorCode, r.SessionID = 3, 0, 12345
		for ti, name := range []string{"readings", "alerts"} {
			rt := kmsg.NewFetchResponseTopic()
			rt.Topic = name
			for pi, rb := range [][]byte{big, {}, []byte("small"), nil, big[:inlineBatches]} {
				p := kmsg.NewFetchResponseTopicPartition()
				p.Partition, p.HighWatermark, p.LastStableOffset, p.LogStartOffset = int32(pi), 100+int64(ti), 99, 1
				if pi == 1 {
					p.ErrorCode = 1
				}
				p.RecordBatches = rb
				rt.Partitions = append(rt.Partitions, p)
			}
			r.Topics = append(r.Topics, rt)
		}
		if !fetchBuffersFit(r) {
			t.Fatalf("v%d: a response as the listener builds it does not fit", v)
		}
		head := []byte("head")
		bufs := fetchBuffers(head, r)
		if v >= 4 && len(bufs) < 3 {
			t.Errorf("v%d: %d buffers, want the large record sets on their own", v, len(bufs))
		}
		got := bytes.Join(bufs, nil)
		want := r.AppendTo([]byte("head"))
		if !bytes.Equal(got, want) {
			t.Fatalf("v%d: %d bytes differ from kmsg's %d", v, len(got), len(want))
		}
		var back kmsg.FetchResponse
		back.SetVersion(v)
		if err := back.ReadFrom(got[4:]); err != nil || len(back.Topics) != 2 || !bytes.Equal(back.Topics[1].Partitions[0].RecordBatches, big) {
			t.Fatalf("v%d: decoded back: %v", v, err)
		}
	}
	r := kmsg.NewPtrFetchResponse()
	r.SetVersion(12)
	rt := kmsg.NewFetchResponseTopic()
	p := kmsg.NewFetchResponseTopicPartition()
	p.DivergingEpoch.Epoch = 3
	rt.Partitions = append(rt.Partitions, p)
	r.Topics = append(r.Topics, rt)
	if fetchBuffersFit(r) {
		t.Fatal("a response with a diverging epoch fits; it needs kmsg's encoding")
	}
}
