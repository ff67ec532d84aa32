//go:build linux

package lossyfs_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/tributary-iot/tributary/internal/lossyfs"
)

func write(t *testing.T, p string, data string, sync bool) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(data); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func appendTo(t *testing.T, p, data string, sync bool) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(data); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
}

func syncDir(t *testing.T, dir string) {
	t.Helper()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		t.Fatalf("fsync folder %s: %v", dir, err)
	}
}

func cut(t *testing.T, fsys *lossyfs.FS, pids ...int) lossyfs.CutReport {
	t.Helper()
	rep, err := fsys.Cut(pids...)
	if err != nil {
		t.Fatalf("cut: %v", err)
	}
	return rep
}

// content returns the file's content, or "<absent>".
func content(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return "<absent>"
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func want(t *testing.T, p, wantContent string) {
	t.Helper()
	if got := content(t, p); got != wantContent {
		t.Errorf("%s after the cut = %q, want %q", filepath.Base(p), got, wantContent)
	}
}

func TestUnsyncedWritesAreLostSyncedStay(t *testing.T) {
	fsys := lossyfs.Mount(t, nil)
	dir := fsys.Dir()
	p := filepath.Join(dir, "log")
	write(t, p, "synced;", true)
	syncDir(t, dir)
	appendTo(t, p, "pending;", false)
	if got := content(t, p); got != "synced;pending;" {
		t.Fatalf("before the cut the mount shows %q", got)
	}
	rep := cut(t, fsys)
	want(t, p, "synced;")
	if rep.FilesReverted != 1 {
		t.Errorf("cut reverted %d files, want 1", rep.FilesReverted)
	}
	// A sync after the cut covers writes made after it.
	appendTo(t, p, "more;", true)
	cut(t, fsys)
	want(t, p, "synced;more;")
}

func TestOverwriteAndTruncateRevert(t *testing.T) {
	fsys := lossyfs.Mount(t, nil)
	p := filepath.Join(fsys.Dir(), "f")
	write(t, p, "0123456789", true)
	syncDir(t, fsys.Dir())
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("ab"), 3)
	if err := f.Truncate(6); err != nil {
		t.Fatal(err)
	}
	f.Close()
	cut(t, fsys)
	want(t, p, "0123456789")

	// Shrink and regrow, then sync: the regrown range must read as zeros, not old bytes.
	f, _ = os.OpenFile(p, os.O_RDWR, 0)
	f.Truncate(2)
	f.Truncate(5)
	f.Sync()
	f.Close()
	cut(t, fsys)
	want(t, p, "01\x00\x00\x00")
}

func TestCreateNeedsFolderSync(t *testing.T) {
	fsys := lossyfs.Mount(t, nil)
	dir := fsys.Dir()
	// Synced file, unsynced folder: the name is not durable.
	write(t, filepath.Join(dir, "a"), "data", true)
	// Synced folder, unsynced file: the name is durable, the content is not.
	write(t, filepath.Join(dir, "b"), "data", false)
	syncDir(t, dir)
	write(t, filepath.Join(dir, "c"), "late", true) // after the folder's sync
	// Both synced.
	write(t, filepath.Join(dir, "d"), "data", true)
	// "a" was created before the folder sync, so that sync made it durable too.
	rep := cut(t, fsys)
	want(t, filepath.Join(dir, "a"), "data")
	want(t, filepath.Join(dir, "b"), "")
	want(t, filepath.Join(dir, "c"), "<absent>")
	want(t, filepath.Join(dir, "d"), "<absent>")
	if rep.DirsReverted != 1 {
		t.Errorf("cut reverted %d folders, want 1", rep.DirsReverted)
	}
}

func TestNewFolderLostWithItsFiles(t *testing.T) {
	fsys := lossyfs.Mount(t, nil)
	dir := fsys.Dir()
	sub := filepath.Join(dir, "streams", "readings")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(sub, "seg"), "x", true)
	syncDir(t, sub)
	// Only the deepest folder was synced: "streams" itself is not durable in the root.
	cut(t, fsys)
	if _, err := os.Stat(filepath.Join(dir, "streams")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("unsynced folder survived the cut: %v", err)
	}

	os.MkdirAll(sub, 0o755)
	write(t, filepath.Join(sub, "seg"), "x", true)
	syncDir(t, sub)
	syncDir(t, filepath.Join(dir, "streams"))
	syncDir(t, dir)
	cut(t, fsys)
	want(t, filepath.Join(sub, "seg"), "x")
}

func TestRenameOverExisting(t *testing.T) {
	fsys := lossyfs.Mount(t, nil)
	dir := fsys.Dir()
	dst, tmp := filepath.Join(dir, "meta"), filepath.Join(dir, "meta.tmp")
	write(t, dst, "old", true)
	syncDir(t, dir)

	// Rename without syncing the folder: the old file is back, the temp file is gone.
	write(t, tmp, "new", true)
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
	cut(t, fsys)
	want(t, dst, "old")
	want(t, tmp, "<absent>")

	// The same with the folder synced after the rename: the new content under the old name.
	write(t, tmp, "new", true)
	os.Rename(tmp, dst)
	syncDir(t, dir)
	cut(t, fsys)
	want(t, dst, "new")
	want(t, tmp, "<absent>")

	// Renamed and synced folder, but the data never synced: the name points to an empty file.
	write(t, tmp, "newer", false)
	os.Rename(tmp, dst)
	syncDir(t, dir)
	cut(t, fsys)
	want(t, dst, "")
}

func TestRemoveAndLinkUndone(t *testing.T) {
	fsys := lossyfs.Mount(t, nil)
	dir := fsys.Dir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	write(t, a, "keep", true)
	syncDir(t, dir)
	if err := os.Link(a, b); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(a); err != nil {
		t.Fatal(err)
	}
	cut(t, fsys)
	want(t, a, "keep")
	want(t, b, "<absent>")

	// A synced hard link survives as a hard link.
	os.Link(a, b)
	syncDir(t, dir)
	cut(t, fsys)
	var sa, sb syscall.Stat_t
	syscall.Stat(a, &sa)
	syscall.Stat(b, &sb)
	if sa.Ino != sb.Ino || sa.Ino == 0 {
		t.Errorf("hard link not kept: inodes %d and %d", sa.Ino, sb.Ino)
	}
}

func TestFileSyncVersusFolderSync(t *testing.T) {
	fsys := lossyfs.Mount(t, nil)
	dir := fsys.Dir()
	sub := filepath.Join(dir, "d")
	os.Mkdir(sub, 0o755)
	syncDir(t, dir)
	cut(t, fsys)
	// fsync of the folder itself, through a file handle on it, is what makes entries durable;
	// fsync of a file in it does not.
	f1 := filepath.Join(sub, "f1")
	write(t, f1, "one", true)
	cut(t, fsys)
	want(t, f1, "<absent>")
	write(t, f1, "one", false)
	syncDir(t, sub)
	cut(t, fsys)
	want(t, f1, "")
}

func TestTornWrites(t *testing.T) {
	fsys := lossyfs.Mount(t, &lossyfs.Options{TearWrites: true, Seed: 7})
	p := filepath.Join(fsys.Dir(), "seg")
	// The pending write stays inside one page, so the kernel hands it over as one write.
	base := strings.Repeat("s", 600)
	write(t, p, base, true)
	syncDir(t, fsys.Dir())
	pending := bytes.Repeat([]byte("p"), 3000)
	torn := 0
	for round := range 20 {
		appendTo(t, p, string(pending), false)
		rep := cut(t, fsys)
		got := content(t, p)
		if !strings.HasPrefix(got, base) {
			t.Fatalf("round %d: synced content damaged: %.40q", round, got)
		}
		kept := got[len(base):]
		if strings.Trim(kept, "p") != "" || len(kept) >= len(pending) {
			t.Fatalf("round %d: kept %d bytes of the pending write, want a strict prefix", round, len(kept))
		}
		if len(kept) > 0 {
			torn++
			if len(got)%512 != 0 {
				t.Fatalf("round %d: torn write ends at byte %d, not at a 512-byte boundary", round, len(got))
			}
			if rep.TornWrites != 1 {
				t.Errorf("round %d: report says %d torn writes", round, rep.TornWrites)
			}
		}
		// Start the next round from the synced base again.
		f, _ := os.OpenFile(p, os.O_RDWR, 0)
		f.Truncate(int64(len(base)))
		f.Sync()
		f.Close()
	}
	if torn == 0 {
		t.Fatal("no write was torn in 20 cuts")
	}
	t.Logf("%d of 20 cuts kept a torn prefix", torn)
}

// TestCutKillsProcesses runs a writer in a child process and cuts its power while it holds files
// open on the mount.
func TestCutKillsProcesses(t *testing.T) {
	fsys := lossyfs.Mount(t, nil)
	dir := fsys.Dir()
	script := `cd "$1"; printf durable > f; sync f; sync .; while :; do printf x >> f; sleep 0.01; done`
	cmd := exec.Command("sh", "-c", script, "sh", dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	deadline := time.Now().Add(10 * time.Second)
	for !strings.HasPrefix(content(t, filepath.Join(dir, "f")), "durablexx") {
		if time.Now().After(deadline) {
			t.Fatal("writer did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	rep := cut(t, fsys, cmd.Process.Pid)
	if rep.Killed != 1 {
		t.Errorf("cut killed %d processes, want 1", rep.Killed)
	}
	if err := <-done; err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("writer ended with %v, want killed", err)
	}
	want(t, filepath.Join(dir, "f"), "durable")
}

// TestWatchFreezesAtTheOperation cuts the power right after a rename, before the caller hears back.
func TestWatchFreezesAtTheOperation(t *testing.T) {
	fsys := lossyfs.Mount(t, &lossyfs.Options{Watch: func(ev lossyfs.Event) bool {
		return ev.Op == lossyfs.OpRename && strings.HasSuffix(ev.To, ".zst")
	}})
	dir := fsys.Dir()
	write(t, filepath.Join(dir, "1.log"), "plain", true)
	syncDir(t, dir)
	write(t, filepath.Join(dir, "1.zst.tmp"), "sealed", true)
	renamed := make(chan error, 1)
	go func() { renamed <- os.Rename(filepath.Join(dir, "1.zst.tmp"), filepath.Join(dir, "1.zst")) }()
	deadline := time.Now().Add(10 * time.Second)
	for !fsys.Frozen() {
		if time.Now().After(deadline) {
			t.Fatal("the rename did not freeze the mount")
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case err := <-renamed:
		t.Fatalf("the frozen rename answered: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	cut(t, fsys)
	if err := <-renamed; err == nil {
		t.Error("the rename cut by the power loss reported success")
	}
	want(t, filepath.Join(dir, "1.log"), "plain")
	want(t, filepath.Join(dir, "1.zst"), "<absent>")
	want(t, filepath.Join(dir, "1.zst.tmp"), "<absent>")
}

// TestBbolt checks that bbolt (mmap reads, pwrite, fdatasync, flock) runs on the mount, and that
// a commit made without sync is lost at a cut while a synced one stays. bbolt runs in a child
// process (this test binary again): a process must not page-fault on a FUSE mount it serves
// itself, since the Go runtime may stop the very goroutines that would answer the fault.
func TestBbolt(t *testing.T) {
	fsys := lossyfs.Mount(t, nil)
	path := filepath.Join(fsys.Dir(), "meta.db")
	run := func(mode string) *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^TestBboltChild$", "-test.v")
		cmd.Env = append(os.Environ(), "LOSSYFS_BBOLT_CHILD="+mode, "LOSSYFS_BBOLT_PATH="+path)
		return cmd
	}
	writer := run("write")
	out, err := writer.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	writer.Stderr = os.Stderr
	if err := writer.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { writer.Process.Kill(); writer.Wait() })
	// The writer says "ready" once its unsynced commit is done, then waits for the cut.
	buf := make([]byte, 64<<10)
	var got []byte
	deadline := time.Now().Add(20 * time.Second)
	for !bytes.Contains(got, []byte("ready")) {
		if time.Now().After(deadline) {
			t.Fatalf("bbolt writer never got ready:\n%s", got)
		}
		n, err := out.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			t.Fatalf("bbolt writer ended: %v\n%s", err, got)
		}
	}
	cut(t, fsys, writer.Process.Pid)
	if b, err := run("check").CombinedOutput(); err != nil {
		t.Fatalf("bbolt check after the cut: %v\n%s", err, b)
	}
}

// TestBboltChild is TestBbolt's child process; it does nothing when run on its own.
func TestBboltChild(t *testing.T) {
	mode, path := os.Getenv("LOSSYFS_BBOLT_CHILD"), os.Getenv("LOSSYFS_BBOLT_PATH")
	if mode == "" {
		t.Skip("run by TestBbolt")
	}
	db, err := bolt.Open(path, 0o644, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatalf("open bbolt on the mount: %v", err)
	}
	put := func(k string) {
		err := db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("b"))
			if err != nil {
				return err
			}
			return b.Put([]byte(k), bytes.Repeat([]byte(k), 3000))
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	switch mode {
	case "write":
		syncDir(t, filepath.Dir(path)) // bbolt does not sync the folder after creating its file
		for _, k := range []string{"a", "b", "c"} {
			put(k)
		}
		// flock: a second open of the same file must wait for the first.
		if _, err := bolt.Open(path, 0o644, &bolt.Options{Timeout: 200 * time.Millisecond}); !errors.Is(err, bolterrors.ErrTimeout) {
			t.Fatalf("second open while locked = %v, want a timeout on the flock", err)
		}
		db.NoSync = true
		put("unsynced")
		os.Stdout.WriteString("ready\n")
		time.Sleep(time.Minute) // until the cut kills this process
	case "check":
		err := db.View(func(tx *bolt.Tx) error {
			b := tx.Bucket([]byte("b"))
			if b == nil {
				t.Fatal("bucket lost")
			}
			for _, k := range []string{"a", "b", "c"} {
				if v := b.Get([]byte(k)); len(v) != 3000 {
					t.Errorf("synced key %s lost (%d bytes)", k, len(v))
				}
			}
			if v := b.Get([]byte("unsynced")); v != nil {
				t.Error("key committed without sync survived the cut")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
