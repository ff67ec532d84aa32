package kafkaserve_test

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tributary-iot/tributary/sync/kafkaserve"
)

// TestOffsetCommitDuringRebalance pins when a member's OffsetCommit counts, as Kafka's group
// coordinator decides it: in Stable, and in PreparingRebalance too (a member learns of the
// rebalance from a heartbeat and commits what it processed before it rejoins: the Java
// consumer in onPartitionsRevoked, KafkaJS after the batch its heartbeat interrupted); refused
// with REBALANCE_IN_PROGRESS in CompletingRebalance, between JoinGroup and SyncGroup; refused
// with ILLEGAL_GENERATION from a generation that is over. Refusing the commits of
// PreparingRebalance made every rebalance re-deliver what the members had read since their last
// commit.
func TestOffsetCommitDuringRebalance(t *testing.T) {
	log := openLog(t)
	fillLog(t, log, 2, 10, 100, time.UnixMilli(1_700_000_000_000))
	addr := serve(t, kafkaserve.Config{Log: log})
	// One connection per member: a JoinGroup that waits for the rebalance holds its connection.
	a, b := rawClient(t, addr).Broker(1), rawClient(t, addr).Broker(1)
	ctx := timeout(t, 20*time.Second)
	meta := (&kmsg.ConsumerMemberMetadata{Topics: []string{"readings"}}).AppendTo(nil)
	var joinAs func(br *kgo.Broker, id string) (*kmsg.JoinGroupResponse, error)
	joinAs = func(br *kgo.Broker, id string) (*kmsg.JoinGroupResponse, error) {
		req := kmsg.NewPtrJoinGroupRequest()
		req.Group, req.MemberID, req.ProtocolType = "g", id, "consumer"
		req.SessionTimeoutMillis, req.RebalanceTimeoutMillis = 10000, 10000
		req.Protocols = []kmsg.JoinGroupRequestProtocol{{Name: "range", Metadata: meta}}
		resp, err := req.RequestWith(ctx, br)
		if err == nil && resp.ErrorCode == kerr.MemberIDRequired.Code {
			return joinAs(br, resp.MemberID)
		}
		if err == nil {
			err = kerr.ErrorForCode(resp.ErrorCode)
		}
		return resp, err
	}
	join := func(br *kgo.Broker, id string) *kmsg.JoinGroupResponse {
		t.Helper()
		resp, err := joinAs(br, id)
		if err != nil {
			t.Fatalf("JoinGroup: %v", err)
		}
		return resp
	}
	commit := func(member string, generation int32, offset int64) error {
		t.Helper()
		req := kmsg.NewPtrOffsetCommitRequest()
		req.Group, req.MemberID, req.Generation = "g", member, generation
		rt := kmsg.NewOffsetCommitRequestTopic()
		rt.Topic = "readings"
		rp := kmsg.NewOffsetCommitRequestTopicPartition()
		rp.Partition, rp.Offset = 0, offset
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		return kerr.ErrorForCode(resp.Topics[0].Partitions[0].ErrorCode)
	}
	committed := func() int64 {
		t.Helper()
		// Asked in both shapes: kgo sends the highest version both sides know (v8+ names groups).
		req := kmsg.NewPtrOffsetFetchRequest()
		req.Group = "g"
		rt := kmsg.NewOffsetFetchRequestTopic()
		rt.Topic, rt.Partitions = "readings", []int32{0}
		req.Topics = append(req.Topics, rt)
		rg := kmsg.NewOffsetFetchRequestGroup()
		rg.Group = "g"
		rg.Topics = []kmsg.OffsetFetchRequestGroupTopic{{Topic: "readings", Partitions: []int32{0}}}
		req.Groups = append(req.Groups, rg)
		resp, err := req.RequestWith(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Version >= 8 {
			return resp.Groups[0].Topics[0].Partitions[0].Offset
		}
		return resp.Topics[0].Partitions[0].Offset
	}
	heartbeat := func(member string, generation int32) error {
		t.Helper()
		req := kmsg.NewPtrHeartbeatRequest()
		req.Group, req.MemberID, req.Generation = "g", member, generation
		resp, err := req.RequestWith(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		return kerr.ErrorForCode(resp.ErrorCode)
	}
	syncGroup := func(br *kgo.Broker, member string, generation int32) {
		t.Helper()
		req := kmsg.NewPtrSyncGroupRequest()
		req.Group, req.MemberID, req.Generation = "g", member, generation
		resp, err := req.RequestWith(ctx, br)
		if err != nil || resp.ErrorCode != 0 {
			t.Fatalf("SyncGroup: %v %v", err, kerr.ErrorForCode(resp.ErrorCode))
		}
	}

	// Member 1 alone: Stable after its SyncGroup, and its commits count.
	first := join(a, "")
	syncGroup(a, first.MemberID, first.Generation)
	if err := commit(first.MemberID, first.Generation, 10); err != nil || committed() != 10 {
		t.Fatalf("commit in Stable: %v, committed %d, want 10", err, committed())
	}

	// Member 2 joins: PreparingRebalance until member 1 rejoins, which its heartbeat tells it.
	second := make(chan *kmsg.JoinGroupResponse, 1)
	secondErr := make(chan error, 1)
	go func() {
		resp, err := joinAs(b, "")
		secondErr <- err
		second <- resp
	}()
	for heartbeat(first.MemberID, first.Generation) != kerr.RebalanceInProgress {
		if ctx.Err() != nil {
			t.Fatal("no REBALANCE_IN_PROGRESS heartbeat after the second member joined")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := commit(first.MemberID, first.Generation, 20); err != nil || committed() != 20 {
		t.Fatalf("commit in PreparingRebalance with the current generation: %v, committed %d, want 20 (Kafka takes it)", err, committed())
	}

	// Member 1 rejoins: CompletingRebalance until the leader's SyncGroup.
	again := join(a, first.MemberID)
	if err := <-secondErr; err != nil {
		t.Fatalf("second member's JoinGroup: %v", err)
	}
	joined := <-second
	if again.Generation != joined.Generation || again.Generation == first.Generation {
		t.Fatalf("generations %d and %d after the rebalance, from %d", again.Generation, joined.Generation, first.Generation)
	}
	if err := commit(first.MemberID, again.Generation, 30); err != kerr.RebalanceInProgress || committed() != 20 {
		t.Fatalf("commit in CompletingRebalance: %v, committed %d, want REBALANCE_IN_PROGRESS and 20 kept", err, committed())
	}
	if err := commit(first.MemberID, first.Generation, 30); err != kerr.IllegalGeneration || committed() != 20 {
		t.Fatalf("commit from the generation before: %v, committed %d, want ILLEGAL_GENERATION and 20 kept", err, committed())
	}
}
