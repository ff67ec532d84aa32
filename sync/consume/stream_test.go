package consume

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/storage"
)

func TestLinesCount(t *testing.T) {
	l, err := storage.Open(t.TempDir(), &storage.Options{Fsync: storage.FsyncNone})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fillLog(t, l, 8, 5000)
	srv := httptest.NewServer(newServer(t, l))
	defer srv.Close()
	cl := &Client{BaseURL: srv.URL}
	for _, n := range []int{1, 7, 4999, 5000, 6000} {
		sum, err := cl.Lines(context.Background(), Options{Count: n}, func([]byte, int, int64) error { return nil })
		if err != nil {
			t.Fatalf("count %d: %v", n, err)
		}
		if want := min(n, 5000); sum.Records != want {
			t.Fatalf("count %d: read %d records", n, sum.Records)
		}
	}
}

// since= starts each partition at its first record that new, as a linear scan finds it.
func TestLinesSince(t *testing.T) {
	l, err := storage.Open(t.TempDir(), &storage.Options{Fsync: storage.FsyncNone})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	st := fillLog(t, l, 4, 4000) // timestamps one millisecond apart
	var since time.Time
	want := map[int]int64{}
	for p := 0; p < st.Partitions(); p++ {
		r := st.Partition(p).NewReader(0, nil)
		for {
			e, err := r.Next(context.Background())
			if err != nil {
				break
			}
			if p == 0 && e.Offset == 500 {
				since = e.Timestamp
			}
		}
	}
	for p := 0; p < st.Partitions(); p++ {
		r := st.Partition(p).NewReader(0, nil)
		want[p] = st.Partition(p).EndOffset()
		for {
			e, err := r.Next(context.Background())
			if err != nil {
				break
			}
			if !e.Timestamp.Before(since) {
				want[p] = e.Offset
				break
			}
		}
	}
	srv := httptest.NewServer(newServer(t, l))
	defer srv.Close()
	first := map[int]int64{}
	_, err = (&Client{BaseURL: srv.URL}).Lines(context.Background(), Options{Since: since}, func(_ []byte, p int, off int64) error {
		if _, ok := first[p]; !ok {
			first[p] = off
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for p, o := range want {
		if got, ok := first[p]; (ok && got != o) || (!ok && o != st.Partition(p).EndOffset()) {
			t.Errorf("partition %d starts at %d (read: %v), want %d", p, got, ok, o)
		}
	}
}
