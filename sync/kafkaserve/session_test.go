package kafkaserve_test

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tributary-iot/tributary/sync/kafkaserve"
)

// TestFetchSessions walks a KIP-227 session over one connection: a full request opens it, an
// incremental one naming nothing still fetches every partition of the session but answers only
// those with news, a forgotten partition is no longer fetched, a wrong epoch and an unknown
// session id get their errors, and epoch -1 stays sessionless.
func TestFetchSessions(t *testing.T) {
	log := openLog(t)
	st := fillLog(t, log, 2, 20, 2000, time.UnixMilli(1_700_000_000_000))
	end1 := st.Partition(1).EndOffset()
	addr := serve(t, kafkaserve.Config{Log: log})
	// One connection, as a consumer's fetches to a broker: kgo keeps one per broker.
	cl := rawClient(t, addr)
	ctx := timeout(t, 30*time.Second)
	broker := cl.Broker(1)
	fetch := func(id, epoch int32, parts map[int32]int64, forget ...int32) *kmsg.FetchResponse {
		t.Helper()
		var asked []kmsg.FetchRequestTopicPartition
		for _, p := range []int32{0, 1} {
			if off, ok := parts[p]; ok {
				asked = append(asked, fetchPartition(p, off, 4<<10))
			}
		}
		req := fetchReadings(12, asked...)
		req.MaxWaitMillis, req.MaxBytes = 50, 1<<20
		req.SessionID, req.SessionEpoch = id, epoch
		if len(forget) > 0 {
			ft := kmsg.NewFetchRequestForgottenTopic()
			ft.Topic, ft.Partitions = "readings", forget
			req.ForgottenTopics = append(req.ForgottenTopics, ft)
		}
		resp, err := req.RequestWith(ctx, broker)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	answered := func(resp *kmsg.FetchResponse) map[int32]int {
		got := map[int32]int{}
		for _, rt := range resp.Topics {
			for _, p := range rt.Partitions {
				if p.ErrorCode != 0 {
					t.Fatalf("partition %d: error %v", p.Partition, kerr.ErrorForCode(p.ErrorCode))
				}
				got[p.Partition] = len(p.RecordBatches)
			}
		}
		return got
	}

	// Partition 0 from the start, partition 1 at its end: only 0 has records to give.
	resp := fetch(0, 0, map[int32]int64{0: 0, 1: end1})
	if resp.ErrorCode != 0 || resp.SessionID == 0 {
		t.Fatalf("opening a session: error %d, session id %d", resp.ErrorCode, resp.SessionID)
	}
	id := resp.SessionID
	if got := answered(resp); len(got) != 2 || got[0] == 0 || got[1] != 0 {
		t.Fatalf("the full response answers %v (partition: record bytes), want both, records for 0 only", got)
	}
	// Incremental, naming nothing: partition 0 is fetched again at the session's offset (the
	// client did not move it), partition 1 has nothing new and is left out.
	resp = fetch(id, 1, nil)
	if got := answered(resp); resp.ErrorCode != 0 || resp.SessionID != id || len(got) != 1 || got[0] == 0 {
		t.Fatalf("incremental epoch 1: error %d, session %d, answers %v; want partition 0 alone, with records", resp.ErrorCode, resp.SessionID, got)
	}
	// Forgetting partition 0 leaves a session with nothing new: an empty answer.
	resp = fetch(id, 2, nil, 0)
	if got := answered(resp); resp.ErrorCode != 0 || len(got) != 0 {
		t.Fatalf("after forgetting partition 0: error %d, answers %v, want none", resp.ErrorCode, got)
	}
	// Naming partition 0 again at a new offset brings it back.
	resp = fetch(id, 3, map[int32]int64{0: 10})
	if got := answered(resp); resp.ErrorCode != 0 || len(got) != 1 || got[0] == 0 {
		t.Fatalf("re-adding partition 0: error %d, answers %v", resp.ErrorCode, got)
	}
	if resp = fetch(id, 9, nil); resp.ErrorCode != kerr.InvalidFetchSessionEpoch.Code {
		t.Fatalf("a skipped epoch: error %d, want INVALID_FETCH_SESSION_EPOCH", resp.ErrorCode)
	}
	if resp = fetch(id^0x5a5a, 1, nil); resp.ErrorCode != kerr.FetchSessionIDNotFound.Code {
		t.Fatalf("an unknown session: error %d, want FETCH_SESSION_ID_NOT_FOUND", resp.ErrorCode)
	}
	// The session still works at its expected epoch after those errors.
	if resp = fetch(id, 4, nil); resp.ErrorCode != 0 {
		t.Fatalf("epoch 4 after refused requests: error %d", resp.ErrorCode)
	}
	// Epoch -1 closes the session and is answered sessionless, in full.
	resp = fetch(id, -1, map[int32]int64{0: 0, 1: end1})
	if got := answered(resp); resp.ErrorCode != 0 || resp.SessionID != 0 || len(got) != 2 {
		t.Fatalf("sessionless: error %d, session %d, answers %v", resp.ErrorCode, resp.SessionID, got)
	}
	if resp = fetch(id, 5, nil); resp.ErrorCode != kerr.FetchSessionIDNotFound.Code {
		t.Fatalf("a closed session: error %d, want FETCH_SESSION_ID_NOT_FOUND", resp.ErrorCode)
	}
}
