//go:build linux

package storage

import (
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/internal/lossyfs"
)

// TestPowerCutRecovery is TestCrashRecovery with power cuts instead of kills: the child runs on a
// lossy mount that forgets every write and folder entry not synced (and tears pending writes),
// and everything it acknowledged must survive. Each round is checked on a copy of what the cut
// left, so the checking process never reads the mount it serves.
func TestPowerCutRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("power-cut test starts child processes")
	}
	rounds := 8
	if *crashRounds > 0 {
		rounds = *crashRounds
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("power-cut test: %d rounds, seed %d", rounds, seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	fsys := lossyfs.Mount(t, &lossyfs.Options{TearWrites: true, Seed: seed})
	cut := func(pid int) error {
		_, err := fsys.Cut(pid)
		return err
	}
	acked := map[[2]int64]crashAck{}
	total := 0
	for round := 0; round < rounds; round++ {
		beforeReady := rng.IntN(10) == 0
		kill := time.Duration(rng.IntN(150)) * time.Millisecond
		got := runCrashChildCut(t, fsys.Dir(), round, kill, beforeReady, cut)
		total += len(got)
		for k, v := range got {
			acked[k] = v
		}
		copyDir := filepath.Join(t.TempDir(), "after-cut")
		if err := copyTree(fsys.Backing(), copyDir); err != nil {
			t.Fatal(err)
		}
		checkCrashLog(t, copyDir, round, acked, [crashParts]int64{}, true)
		if t.Failed() {
			t.Fatalf("round %d (seed %d, cut after %v, before ready %v) failed", round, seed, kill, beforeReady)
		}
	}
	t.Logf("power-cut test: %d acknowledged records checked over %d rounds", total, rounds)
	if total == 0 {
		t.Fatal("no child acknowledged anything")
	}
}

func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		out := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(out, 0o755)
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(out, b, 0o644)
		}
		return nil
	})
}
