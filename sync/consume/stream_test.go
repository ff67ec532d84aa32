package consume

import (
	"context"
	"net/http/httptest"
	"testing"

	"github.com/tributary-iot/tributary/storage"
)

func TestLinesCount(t *testing.T) {
	l, err := storage.Open(t.TempDir(), &storage.Options{Fsync: storage.FsyncNone})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fillLog(t, l, 8, 5000)
	srv := httptest.NewServer(&Server{Log: l})
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
