//go:build linux

package storage

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/internal/lossyfs"
)

// removalChildEnv makes the test binary run removalChild: bbolt must not run in the process that
// serves the lossy mount.
const removalChildEnv = "TRIBUTARY_REMOVAL_CHILD"

// removalChild appends until retention has deleted sealed segments from the front of the
// partition, prints the segment files that are left and waits to be cut.
func removalChild(dir string) int {
	l, err := Open(dir, &Options{SegmentBytes: 4 << 10, RetentionBytes: 8 << 10, MaintenanceInterval: 20 * time.Millisecond})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	st, err := l.CreateStream("readings", StreamConfig{Partitions: 1})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	p := st.Partition(0)
	val := []byte(strings.Repeat("reading ", 12))
	for i := 0; i < 2000 && p.StartOffset() == 0; i++ {
		if _, _, err := st.Append(context.Background(), Record{Key: []byte("dev-1"), Value: val, Timestamp: time.Now()}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if i > 300 {
			time.Sleep(time.Millisecond) // leave the sealer and retention time to run
		}
	}
	for deadline := time.Now().Add(10 * time.Second); p.StartOffset() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			fmt.Fprintln(os.Stderr, "retention removed nothing")
			return 1
		}
	}
	time.Sleep(200 * time.Millisecond) // let a removal in progress finish
	var left []string
	for _, s := range p.Segments() {
		left = append(left, s.File)
	}
	fmt.Printf("LEFT %d %s\n", p.StartOffset(), strings.Join(left, ","))
	select {} // the parent cuts the power
}

// TestPowerCutAfterRetention: segments retention deleted stay deleted after a power cut. The
// removal is a folder change, durable only once the folder is synced; before, the deleted segments
// came back after a cut, beside the start offset that said they were gone.
func TestPowerCutAfterRetention(t *testing.T) {
	if testing.Short() {
		t.Skip("power-cut test starts a child process")
	}
	fsys := lossyfs.Mount(t, &lossyfs.Options{})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), removalChildEnv+"="+fsys.Dir())
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var left string
	select {
	case l, ok := <-lines:
		if !ok {
			cmd.Wait()
			t.Fatalf("child exited: %s", stderr.String())
		}
		left = l
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child did not report within 60s: %s", stderr.String())
	}
	if _, err := fsys.Cut(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	f := strings.Fields(left)
	if len(f) != 3 || f[0] != "LEFT" {
		t.Fatalf("child said %q", left)
	}
	kept := map[string]bool{}
	for _, name := range strings.Split(f[2], ",") {
		kept[filepath.Base(name)] = true
	}
	copyDir := filepath.Join(t.TempDir(), "after-cut")
	if err := copyTree(fsys.Backing(), copyDir); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(copyDir, "streams", "readings", "0", "*"))
	var back []string
	for _, file := range files {
		name := filepath.Base(file)
		if (strings.HasSuffix(name, plainExt) || strings.HasSuffix(name, sealedExt)) && !kept[name] {
			back = append(back, name)
		}
	}
	if len(back) > 0 {
		t.Errorf("after the cut, segments retention had deleted are back: %v (start offset was %s, kept %v)", back, f[1], f[2])
	}
}

// removalChildMain runs TestPowerCutAfterRetention's child, cut by its parent, when the
// environment names it.
func removalChildMain() (code int, child bool) {
	if dir := os.Getenv(removalChildEnv); dir != "" {
		return removalChild(dir), true
	}
	return 0, false
}
