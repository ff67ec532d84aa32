package kafkaserve

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// leaderEpoch is the one leader epoch of every partition: a single broker never changes leader.
// Metadata, ListOffsets and served batches all say it, so clients remember it with their
// positions and check them with OffsetForLeaderEpoch; Fetch and ListOffsets answer a current
// epoch above it with UNKNOWN_LEADER_EPOCH.
const leaderEpoch = 0

// offsetForLeaderEpoch answers OffsetForLeaderEpoch (KIP-101, KIP-320), which clients use after
// a metadata change to check that their position is still on the log. With one epoch ever, epoch
// 0 ends at the partition's end offset; a later epoch is unknown, and answered as Kafka answers a
// requested epoch it has not seen, with undefined epoch and offset (-1, -1). A current leader epoch
// above ours (v2+) is UNKNOWN_LEADER_EPOCH, as for a broker that has not caught up.
func (cc *conn) offsetForLeaderEpoch(r *kmsg.OffsetForLeaderEpochRequest) *kmsg.OffsetForLeaderEpochResponse {
	resp := r.ResponseKind().(*kmsg.OffsetForLeaderEpochResponse)
	for _, rt := range r.Topics {
		t := kmsg.NewOffsetForLeaderEpochResponseTopic()
		t.Topic = rt.Topic
		for _, rp := range rt.Partitions {
			p := kmsg.NewOffsetForLeaderEpochResponseTopicPartition()
			p.Partition, p.LeaderEpoch, p.EndOffset = rp.Partition, -1, -1
			part, kerrv := cc.s.partition(rt.Topic, rp.Partition)
			switch {
			case kerrv != nil:
				p.ErrorCode = kerrv.Code
			case r.Version >= 2 && rp.CurrentLeaderEpoch > leaderEpoch:
				p.ErrorCode = kerr.UnknownLeaderEpoch.Code
			case rp.LeaderEpoch == leaderEpoch:
				p.LeaderEpoch, p.EndOffset = leaderEpoch, part.EndOffset()
			}
			t.Partitions = append(t.Partitions, p)
		}
		resp.Topics = append(resp.Topics, t)
	}
	return resp
}
