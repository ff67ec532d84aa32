package consume

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/storage"
)

// TestTailEventStream reads /v1/tail/{stream} as a browser's EventSource does, with a real HTTP
// client over a socket: from=beginning brings the stored records as events (id PARTITION:OFFSET,
// data a Message), then records appended while the stream is open arrive live.
func TestTailEventStream(t *testing.T) {
	l, err := storage.Open(t.TempDir(), &storage.Options{Fsync: storage.FsyncNone})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	st := fillLog(t, l, 2, 10)
	srv := httptest.NewServer(newServer(t, l))
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v1/tail/readings?from=beginning", nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, content type %q: want 200 text/event-stream", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	events := readEvents(resp.Body)
	seen := map[string]bool{}
	next := func() (id string, m Message) {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("event stream ended after %d events", len(seen))
			}
			if err := json.Unmarshal([]byte(ev.data), &m); err != nil {
				t.Fatalf("event data %q: %v", ev.data, err)
			}
			if want := strings.Join([]string{itoa(m.Partition), itoa64(m.Offset)}, ":"); ev.id != want {
				t.Fatalf("event id %q for a message at %s", ev.id, want)
			}
			return ev.id, m
		case <-ctx.Done():
			t.Fatalf("no event after %d: %v", len(seen), ctx.Err())
		}
		return "", Message{}
	}
	for len(seen) < 10 {
		id, m := next()
		if seen[id] {
			t.Fatalf("event %s twice", id)
		}
		seen[id] = true
		if m.Stream != "readings" || m.Edge != "gw-1" || m.EdgeOffset < 0 || len(m.Value) == 0 {
			t.Fatalf("event %s: %+v, want a readings message with its provenance and JSON value", id, m)
		}
	}
	// Live: a record appended now arrives on the open stream.
	var wg sync.WaitGroup
	wg.Add(1)
	rec := centralRecord(10, time.Now())
	st.AppendAsync(rec, func(_ int, _ int64, err error) {
		if err != nil {
			t.Error(err)
		}
		wg.Done()
	})
	wg.Wait()
	id, m := next()
	if seen[id] || m.Key != string(rec.Key) || m.EdgeOffset != 5 {
		t.Fatalf("live event %s: %+v, want the new record of %s", id, m, rec.Key)
	}
}

type event struct{ id, data string }

// readEvents parses a text/event-stream body (comments and blank-line framing included).
func readEvents(r io.Reader) <-chan event {
	out := make(chan event, 64)
	go func() {
		defer close(out)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		var ev event
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.data != "" {
					out <- ev
				}
				ev = event{}
			case strings.HasPrefix(line, ":"): // keepalive comment
			case strings.HasPrefix(line, "id: "):
				ev.id = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "data: "):
				ev.data += strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	return out
}

// TestServerRoutes: the API's method-and-path routes answer in JSON for a wrong path or method,
// and the group offsets route takes GET and POST.
func TestServerRoutes(t *testing.T) {
	l, err := storage.Open(t.TempDir(), &storage.Options{Fsync: storage.FsyncNone})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fillLog(t, l, 2, 4)
	srv := httptest.NewServer(newServer(t, l))
	defer srv.Close()
	for _, c := range []struct {
		method, path, body string
		code               int
		has                string
	}{
		{"GET", "/v1/streams", "", 200, `"name":"readings"`},
		{"GET", "/v1/consume/readings?max=1", "", 200, `"messages":[{`},
		{"GET", "/v1/consume/nosuch", "", 404, `"error":"stream \"nosuch\" does not exist`},
		{"POST", "/v1/groups/g1/offsets?stream=readings", `{"offsets":{"0":1}}`, 200, `"offsets":{"0":1}`},
		{"GET", "/v1/groups/g1/offsets?stream=readings", "", 200, `"offsets":{"0":1}`},
		{"DELETE", "/v1/groups/g1/offsets?stream=readings", "", 405, `"error":"use GET or POST"`},
		{"GET", "/v1/nothing", "", 404, `"error":"no such endpoint GET /v1/nothing"`},
		{"POST", "/v1/streams", "", 404, `"error":"no such endpoint POST /v1/streams"`},
	} {
		req, _ := http.NewRequest(c.method, srv.URL+c.path, strings.NewReader(c.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.code || !strings.Contains(string(b), c.has) {
			t.Errorf("%s %s: %d %s, want %d with %s", c.method, c.path, resp.StatusCode, b, c.code, c.has)
		}
	}
}

func itoa(n int) string     { return itoa64(int64(n)) }
func itoa64(n int64) string { return strconv.FormatInt(n, 10) }

func newServer(tb testing.TB, l *storage.Log) *Server {
	s, err := New(l, Config{})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}
