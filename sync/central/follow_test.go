package central_test

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/sync/consume"
	"github.com/tributary-iot/tributary/sync/forward"
)

// TestFollowSurvivesCentralKill follows the merged stream with the consume client while central,
// a child process, is SIGKILLed and restarted twice, once while records flow: the follower
// reconnects by itself and ends up with every reading exactly once, each partition's offsets
// contiguous, and its group's committed offsets at the end of what it read.
func TestFollowSurvivesCentralKill(t *testing.T) {
	c, url, token := startChildCentral(t, childCentral{})
	edge, st := openEdge(t, 2)
	defer edge.Close()
	f := newFleet(100, 31)
	_, stopFwd := runForwarder(t, edge, forward.Config{CentralURL: url, EdgeID: "gw-1", Token: token,
		BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond})
	defer stopFwd()
	appendAll(t, st, f, 3000)
	waitCaughtUp(t, url, 3000, 20*time.Second)

	var mu sync.Mutex
	chk := newChecker()
	next := map[int]int64{}
	gaps := 0
	reconnects := 0
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	done := make(chan error, 1)
	cl := &consume.Client{BaseURL: url}
	go func() {
		sum, err := cl.Lines(ctx, consume.Options{FromBeginning: true, Follow: true, Group: "followers",
			OnReconnect: func(err error, d time.Duration) {
				t.Logf("reconnect in %v: %v", d, err)
				mu.Lock()
				reconnects++
				mu.Unlock()
			}},
			func(line []byte, p int, off int64) error {
				var m consume.Message
				if err := json.Unmarshal(line, &m); err != nil {
					return err
				}
				mu.Lock()
				defer mu.Unlock()
				if off != next[p] {
					gaps++
				}
				next[p] = off + 1
				return chk.add(m)
			})
		if err == nil && sum.Reconnects == 0 {
			t.Error("the summary counts no reconnection")
		}
		done <- err
	}()
	consumed := func() int {
		mu.Lock()
		defer mu.Unlock()
		return chk.count
	}
	waitUntil(t, 20*time.Second, func() bool { return consumed() == 3000 }, "follower read the first 3000")

	c.kill() // idle follower: its stream breaks
	c.start()
	appendAll(t, st, f, 2000)
	waitUntil(t, 30*time.Second, func() bool { return consumed() >= 4000 }, "follower read on after a restart")
	c.kill() // while records flow
	appendAll(t, st, f, 2000)
	c.start()
	waitUntil(t, 30*time.Second, func() bool { return consumed() >= 7000 }, "follower read on after the second restart", func() {
		streams, err := cl.Streams(context.Background())
		mu.Lock()
		t.Logf("central: %+v (%v); follower at %v", streams, err, next)
		mu.Unlock()
	})
	time.Sleep(300 * time.Millisecond) // nothing more may arrive
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("follower: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if gaps != 0 || reconnects == 0 {
		t.Fatalf("offsets jumped %d times; %d reconnections", gaps, reconnects)
	}
	chk.verify(t, f)
	streams, err := cl.Streams(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	committed := groupOffsets(t, url, "followers")
	for _, s := range streams {
		for _, p := range s.Partitions {
			if committed[p.Partition] != p.End || next[p.Partition] != p.End {
				t.Errorf("partition %d: end %d, read up to %d, committed %d", p.Partition, p.End, next[p.Partition], committed[p.Partition])
			}
		}
	}
	t.Logf("7000 readings exactly once across 2 SIGKILLs of central; %d reconnections", reconnects)
}

func groupOffsets(t *testing.T, url, group string) map[int]int64 {
	t.Helper()
	resp, err := http.Get(url + "/v1/groups/" + group + "/offsets?stream=readings")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var g consume.GroupOffsets
	if err := json.NewDecoder(resp.Body).Decode(&g); err != nil {
		t.Fatal(err)
	}
	return g.Offsets
}

func waitUntil(t *testing.T, d time.Duration, cond func() bool, what string, explain ...func()) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			for _, f := range explain {
				f()
			}
			t.Fatalf("timed out: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
