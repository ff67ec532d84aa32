package kafkaserve_test

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tributary-iot/tributary/sync/kafkaserve"
)

// TestOffsetForLeaderEpoch: epoch 0, the only one and the one served batches carry, ends at the
// partition's end offset, so a client checking its position after a metadata change keeps it; a
// later epoch is undefined (-1, -1), a current epoch above ours is UNKNOWN_LEADER_EPOCH, and a
// missing topic or partition gets UNKNOWN_TOPIC_OR_PARTITION.
func TestOffsetForLeaderEpoch(t *testing.T) {
	log := openLog(t)
	st := fillLog(t, log, 2, 10, 500, time.UnixMilli(1_700_000_000_000))
	addr := serve(t, kafkaserve.Config{Log: log})
	cl := rawClient(t, addr)
	ctx := timeout(t, 10*time.Second)
	type ask struct {
		topic          string
		partition      int32
		current, epoch int32
	}
	type answer struct {
		code  int16
		epoch int32
		end   int64
	}
	cases := []struct {
		ask  ask
		want answer
	}{
		{ask{"readings", 0, -1, 0}, answer{0, 0, st.Partition(0).EndOffset()}},
		{ask{"readings", 1, 0, 0}, answer{0, 0, st.Partition(1).EndOffset()}},
		{ask{"readings", 1, -1, 3}, answer{0, -1, -1}},
		{ask{"readings", 0, 5, 0}, answer{kerr.UnknownLeaderEpoch.Code, -1, -1}},
		{ask{"readings", 9, -1, 0}, answer{kerr.UnknownTopicOrPartition.Code, -1, -1}},
		{ask{"nope", 0, -1, 0}, answer{kerr.UnknownTopicOrPartition.Code, -1, -1}},
	}
	for _, version := range []int16{2, 3, 4} {
		for _, c := range cases {
			req := kmsg.NewPtrOffsetForLeaderEpochRequest()
			req.Version, req.ReplicaID = version, -1
			rt := kmsg.NewOffsetForLeaderEpochRequestTopic()
			rt.Topic = c.ask.topic
			rp := kmsg.NewOffsetForLeaderEpochRequestTopicPartition()
			rp.Partition, rp.CurrentLeaderEpoch, rp.LeaderEpoch = c.ask.partition, c.ask.current, c.ask.epoch
			rt.Partitions = append(rt.Partitions, rp)
			req.Topics = append(req.Topics, rt)
			resp, err := req.RequestWith(ctx, cl.Broker(1))
			if err != nil {
				t.Fatalf("v%d %+v: %v", version, c.ask, err)
			}
			p := resp.Topics[0].Partitions[0]
			if got := (answer{p.ErrorCode, p.LeaderEpoch, p.EndOffset}); got != c.want || p.Partition != c.ask.partition {
				t.Fatalf("v%d %+v: answered %+v for partition %d, want %+v", version, c.ask, got, p.Partition, c.want)
			}
		}
	}
}

// TestFetchFromNewerEpoch: a Fetch or ListOffsets naming a current leader epoch above ours is
// answered UNKNOWN_LEADER_EPOCH (KIP-320), and one naming ours is served.
func TestFetchFromNewerEpoch(t *testing.T) {
	log := openLog(t)
	fillLog(t, log, 1, 10, 100, time.UnixMilli(1_700_000_000_000))
	addr := serve(t, kafkaserve.Config{Log: log})
	cl := rawClient(t, addr)
	ctx := timeout(t, 10*time.Second)
	for _, c := range []struct {
		epoch int32
		want  int16
	}{{-1, 0}, {0, 0}, {1, kerr.UnknownLeaderEpoch.Code}} {
		rp := fetchPartition(0, 0, 1<<20)
		rp.CurrentLeaderEpoch = c.epoch
		req := fetchReadings(12, rp)
		req.MaxWaitMillis, req.MaxBytes = 10, 1<<20
		resp, err := req.RequestWith(ctx, cl.Broker(1))
		if err != nil {
			t.Fatal(err)
		}
		p := resp.Topics[0].Partitions[0]
		if p.ErrorCode != c.want || (c.want == 0) != (len(p.RecordBatches) > 0) {
			t.Fatalf("fetch with current epoch %d: error %d, %d bytes; want error %d", c.epoch, p.ErrorCode, len(p.RecordBatches), c.want)
		}
		lreq := kmsg.NewPtrListOffsetsRequest()
		lreq.Version, lreq.ReplicaID = 7, -1
		lt := kmsg.NewListOffsetsRequestTopic()
		lt.Topic = "readings"
		lp := kmsg.NewListOffsetsRequestTopicPartition()
		lp.CurrentLeaderEpoch, lp.Timestamp = c.epoch, -1
		lt.Partitions = append(lt.Partitions, lp)
		lreq.Topics = append(lreq.Topics, lt)
		lresp, err := lreq.RequestWith(ctx, cl.Broker(1))
		if err != nil {
			t.Fatal(err)
		}
		lpr := lresp.Topics[0].Partitions[0]
		if lpr.ErrorCode != c.want || (c.want == 0 && (lpr.Offset != 100 || lpr.LeaderEpoch != 0)) {
			t.Fatalf("list offsets with current epoch %d: error %d, offset %d, epoch %d; want error %d", c.epoch, lpr.ErrorCode, lpr.Offset, lpr.LeaderEpoch, c.want)
		}
	}
}
