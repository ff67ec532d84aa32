package forward

import (
	"bytes"
	"context"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/central"
	"github.com/tributary-iot/tributary/sync/internal/faultproxy"
)

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestCatchUpIsReported: while central is unreachable a backlog builds; when it is back, each
// lane logs that forwarding resumed, the catch-up logs its progress (records behind, rate, time
// left) while it drains through a slow link, and a last line says it is done.
func TestCatchUpIsReported(t *testing.T) {
	url, token := testCentral(t, central.Config{})
	proxy, err := faultproxy.Start(strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	proxy.Refuse(true)

	log, st := openLog(t, t.TempDir(), 2)
	defer log.Close()
	var out lockedBuffer
	f, err := New(log, Config{CentralURL: "http://" + proxy.Addr(), EdgeID: "gw-1", Token: token,
		BackoffMin: 20 * time.Millisecond, BackoffMax: 100 * time.Millisecond, ProgressInterval: 100 * time.Millisecond,
		MaxChunkBytes: 32 << 10, // many chunks, so the rate shows between them
		Logger:        slog.New(slog.NewTextHandler(&out, nil))})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, f)
	defer stop()

	// 6,000 incompressible 200-byte readings: 1.2 MB through a 600 kB/s link takes about two
	// seconds, long enough for several progress lines.
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 6000
	for i := 0; i < n; i++ {
		if _, _, err := st.Append(context.Background(), storage.Record{Key: keyFor(i%2, 2), Value: random(rng, 200), Timestamp: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond) // a few refused attempts: an outage
	proxy.Throttle(600 << 10)
	proxy.Refuse(false)

	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "msg=\"caught up\"") {
		if time.Now().After(deadline) {
			t.Fatalf("no \"caught up\" line within 30s; log:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	logs := out.String()
	if got := strings.Count(logs, `msg="forwarding resumed"`); got != 2 {
		t.Errorf("%d \"forwarding resumed\" lines, want one per lane (2):\n%s", got, logs)
	}
	var progress []string
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, `msg="catching up"`) {
			progress = append(progress, l)
		}
	}
	if len(progress) < 2 {
		t.Fatalf("%d progress lines during a 2s catch-up at a 100ms interval; log:\n%s", len(progress), logs)
	}
	moving := 0
	for _, l := range progress {
		if !strings.Contains(l, "rate_per_sec=0 ") && !strings.Contains(l, "eta=unknown") {
			moving++
		}
		for _, field := range []string{"records_behind=", "rate_per_sec=", "eta="} {
			if !strings.Contains(l, field) {
				t.Errorf("progress line lacks %s: %s", field, l)
			}
		}
	}
	if moving == 0 {
		t.Errorf("no progress line shows a rate and a time left:\n%s", logs)
	}
	if !strings.Contains(logs, `msg="catching up a backlog"`) {
		t.Errorf("no line announces the backlog:\n%s", logs)
	}
	t.Logf("log:\n%s", logs)
}
