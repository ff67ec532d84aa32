package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tributary-iot/tributary/internal/testprog"
	"github.com/tributary-iot/tributary/storage"
)

// TestEdgeStartsWithDamagedMetadata runs the real tributary binary on a data dir whose meta.db
// bbolt calls "invalid database" and whose devices.db has one garbled record: the edge moves both
// to quarantine, keeps the readable devices and every stored reading, says what was lost, becomes
// ready, and a kept device publishes with mosquitto_pub.
func TestEdgeStartsWithDamagedMetadata(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	pub := testprog.Find(t, "mosquitto_pub", "mosquitto-clients")
	bin, _ := buildBinaries(t)
	dir := t.TempDir()
	for _, id := range []string{"good", "garbled"} {
		out, err := exec.Command(bin, "devices", "add", id, "--data-dir", dir, "--password", "pw-"+id, "--bcrypt-cost", "4").CombinedOutput()
		if err != nil {
			t.Fatalf("devices add: %v\n%s", err, out)
		}
	}
	l, err := storage.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.CreateStream("readings", storage.StreamConfig{Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if _, _, err := s.Append(context.Background(), storage.Record{Key: []byte("good"), Value: []byte(`{"seq":` + string(rune('0'+i%10)) + `}`)}); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	// meta.db: both meta pages gone. devices.db: one record cut short.
	f, err := os.OpenFile(filepath.Join(dir, "meta.db"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte(strings.Repeat("\xab", 8192)), 0)
	f.Close()
	db, err := bolt.Open(filepath.Join(dir, "devices.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("devices")).Put([]byte("garbled"), []byte(`{"v":1,"id":"garb`))
	})
	db.Close()

	mqttAddr, httpAddr := freePort(t), freePort(t)
	logPath := filepath.Join(t.TempDir(), "edge.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "edge", "--data-dir", dir, "--mqtt-listen", mqttAddr, "--http-listen", httpAddr)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("edge exited with %v after SIGTERM", err)
			}
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			t.Error("edge did not stop within 20s of SIGTERM")
		}
	}
	t.Cleanup(stop)
	waitHTTP(t, "http://"+httpAddr+"/readyz")

	run := func(user string) error {
		return exec.Command(pub, "-h", "127.0.0.1", "-p", mqttAddr[strings.LastIndex(mqttAddr, ":")+1:],
			"-i", user, "-u", user, "-P", "pw-"+user, "-q", "1", "-t", "devices/"+user+"/readings", "-m", `{"seq":99}`).Run()
	}
	if err := run("good"); err != nil {
		t.Errorf("kept device could not publish: %v", err)
	}
	if err := run("garbled"); err == nil {
		t.Error("device whose record was lost still connected")
	}
	stop()
	logFile.Close()
	out, _ := os.ReadFile(logPath)
	t.Logf("edge log:\n%s", out)
	for _, want := range []string{"meta.db was damaged", "device registry was damaged", "kept_ids=good", "devices add"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("edge log lacks %q:\n%s", want, out)
		}
	}
	q, _ := filepath.Glob(filepath.Join(dir, "quarantine", "*.db.*"))
	if len(q) != 2 {
		t.Errorf("quarantine holds %v, want the damaged meta.db and devices.db", q)
	}
	l, err = storage.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s, err = l.Stream("readings")
	if err != nil || s.Partitions() != 2 {
		t.Fatalf("readings after the repair: %v", err)
	}
	n := int64(0)
	for i := range s.Partitions() {
		n += s.Partition(i).EndOffset() - s.Partition(i).StartOffset()
	}
	if n != 21 {
		t.Errorf("readings holds %d records, want the 20 stored before and the 1 published after", n)
	}
}
