package forward

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The token file is read again when it changes; a file emptied or removed by mistake keeps the
// token read before, so a half-done edit does not stop forwarding.
func TestTokenFileChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "edge.token")
	write := func(s string, mod time.Time) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		// Distinct modification times: a coarse file system clock must not hide a change.
		if err := os.Chtimes(path, mod, mod); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now().Add(-time.Hour)
	write("trb_old\n", start)
	s := newTokenSource("", path, slog.New(slog.DiscardHandler))
	if err := s.load(); err != nil {
		t.Fatal(err)
	}
	if got := s.get(false); got != "trb_old" {
		t.Fatalf("token %q", got)
	}
	write("trb_new\n", start.Add(time.Second))
	if got := s.get(true); got != "trb_new" {
		t.Fatalf("after rewriting the file: token %q, want trb_new", got)
	}
	write("  \n", start.Add(2*time.Second))
	if got := s.get(true); got != "trb_new" {
		t.Fatalf("after emptying the file: token %q, want the previous one", got)
	}
	os.Remove(path)
	if got := s.get(true); got != "trb_new" {
		t.Fatalf("after removing the file: token %q, want the previous one", got)
	}
	write("trb_third", start.Add(3*time.Second))
	// Without force the file is looked at once per tokenCheckInterval.
	deadline := time.Now().Add(tokenCheckInterval + 2*time.Second)
	for s.get(false) != "trb_third" {
		if time.Now().After(deadline) {
			t.Fatalf("token file change not seen within %v", tokenCheckInterval+2*time.Second)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
