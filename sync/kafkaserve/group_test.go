package kafkaserve_test

import (
	"context"
	"sync"
	"testing"
	"time"

	// kadm is franz-go's admin client: the group tooling that shows lag must work against us.
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/tributary-iot/tributary/sync/consume"
	"github.com/tributary-iot/tributary/sync/kafkaserve"
)

// TestKgoGroupAndLag: two franz-go consumers in one group share the partitions, commit, and
// kadm reports the group's members and its lag, which matches what the HTTP API's group
// cursors hold; after the rest is read the lag is zero.
func TestKgoGroupAndLag(t *testing.T) {
	log := openLog(t)
	st := fillLog(t, log, 6, 60, 12000, time.UnixMilli(1_700_000_000_000))
	addr := serve(t, kafkaserve.Config{Log: log})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	newMember := func() *kgo.Client {
		cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumerGroup("kg"), kgo.ConsumeTopics("readings"),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit(),
			kgo.FetchMaxWait(200*time.Millisecond), kgo.FetchMaxPartitionBytes(8<<10),
			kgo.Balancers(kgo.CooperativeStickyBalancer()))
		if err != nil {
			t.Fatal(err)
		}
		return cl
	}
	a, b := newMember(), newMember()
	defer a.Close()
	defer b.Close()
	adm := kadm.NewClient(a)
	// Start reading once both members hold partitions: records read before a rebalance and not
	// committed are read again by the partition's next owner, as Kafka's model allows.
	for {
		described, err := adm.DescribeGroups(ctx, "kg")
		if err != nil {
			t.Fatal(err)
		}
		g := described["kg"]
		held := 0
		for _, m := range g.Members {
			if ca, ok := m.Assigned.AsConsumer(); ok && len(ca.Topics) > 0 {
				held++
			}
		}
		if g.State == "Stable" && held == 2 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("group kg is %s with %d members holding partitions", g.State, held)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var mu sync.Mutex
	c := newOrderChecker()
	owners := map[int32]map[*kgo.Client]bool{}
	poll := func(cl *kgo.Client, n int) int {
		pctx, pcancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer pcancel()
		fs := cl.PollRecords(pctx, n)
		fs.EachError(func(topic string, p int32, err error) {
			if pctx.Err() == nil {
				t.Errorf("fetch %s/%d: %v", topic, p, err)
			}
		})
		mu.Lock()
		defer mu.Unlock()
		fs.EachRecord(func(r *kgo.Record) {
			c.add(string(r.Key), r.Value)
			if owners[r.Partition] == nil {
				owners[r.Partition] = map[*kgo.Client]bool{}
			}
			owners[r.Partition][cl] = true
		})
		return fs.NumRecords()
	}
	// Read about half, both members polling, then commit what each read.
	for read := 0; read < 6000 && ctx.Err() == nil; {
		read += poll(a, 500) + poll(b, 500)
	}
	if err := a.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatal(err)
	}
	lags, err := adm.Lag(ctx, "kg")
	if err != nil {
		t.Fatal(err)
	}
	g := lags["kg"]
	if err := g.Error(); err != nil {
		t.Fatal(err)
	}
	if g.State != "Stable" || len(g.Members) != 2 {
		t.Fatalf("kadm describes group kg as %s with %d members, want Stable with 2", g.State, len(g.Members))
	}
	var total int64
	for p, l := range g.Lag["readings"] {
		cur, ok := log.Cursor(consume.GroupCursor("kg"), "readings", int(p))
		end := st.Partition(int(p)).EndOffset()
		if l.Err != nil || l.End.Offset != end || (ok && l.Commit.At != cur) || l.Lag != end-max(l.Commit.At, 0) {
			t.Fatalf("partition %d: kadm says commit %d end %d lag %d (err %v); central holds cursor %d (set %v), end %d",
				p, l.Commit.At, l.End.Offset, l.Lag, l.Err, cur, ok, end)
		}
		total += l.Lag
	}
	if len(g.Lag["readings"]) != 6 || total <= 0 {
		t.Fatalf("lag covers %d partitions, total %d: want all 6 and some lag left", len(g.Lag["readings"]), total)
	}
	t.Logf("kadm: group kg Stable, 2 members, lag %d", total)
	for c.count < 12000 && ctx.Err() == nil {
		poll(a, 1000)
		poll(b, 1000)
	}
	c.check(t, 12000)
	a.CommitUncommittedOffsets(ctx)
	b.CommitUncommittedOffsets(ctx)
	lags, err = adm.Lag(ctx, "kg")
	if err != nil {
		t.Fatal(err)
	}
	for p, l := range lags["kg"].Lag["readings"] {
		if l.Lag != 0 {
			t.Fatalf("partition %d lag %d after reading everything", p, l.Lag)
		}
	}
	perMember := map[*kgo.Client]int{}
	for p, o := range owners {
		for cl := range o {
			perMember[cl]++
		}
		if len(o) != 1 {
			t.Logf("partition %d moved between members", p)
		}
	}
	if len(owners) != 6 || perMember[a] == 0 || perMember[b] == 0 {
		t.Fatalf("records came from %d partitions, members read %d and %d of them: want 6 shared by both", len(owners), perMember[a], perMember[b])
	}
}

// TestStaticMemberRestart: a consumer with a group.instance.id that restarts replaces its old
// membership instead of leaving a ghost holding partitions until its session expires.
func TestStaticMemberRestart(t *testing.T) {
	log := openLog(t)
	fillLog(t, log, 4, 10, 400, time.UnixMilli(1_700_000_000_000))
	addr := serve(t, kafkaserve.Config{Log: log})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := func() *kgo.Client {
		cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumerGroup("static"), kgo.ConsumeTopics("readings"),
			kgo.InstanceID("reader-1"), kgo.SessionTimeout(30*time.Second), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		if err != nil {
			t.Fatal(err)
		}
		if fs := cl.PollRecords(ctx, 10); fs.NumRecords() == 0 {
			t.Fatalf("no records: %v", fs.Err0())
		}
		return cl
	}
	first := start()
	first.Close() // a static member does not leave on close
	second := start()
	defer second.Close()
	described, err := kadm.NewClient(second).DescribeGroups(ctx, "static")
	if err != nil {
		t.Fatal(err)
	}
	if g := described["static"]; len(g.Members) != 1 {
		t.Fatalf("group has %d members after the static member restarted, want 1", len(g.Members))
	}
}
