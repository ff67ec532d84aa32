package edge

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tributary-iot/tributary/storage"
)

// The crash test re-executes the test binary as the agent process, so the parent can SIGKILL it.
const (
	crashChildDir  = "TRIBUTARY_EDGE_CRASH_CHILD_DIR"
	crashChildAddr = "TRIBUTARY_EDGE_CRASH_CHILD_ADDR"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildDir); dir != "" {
		runCrashChild(dir, os.Getenv(crashChildAddr))
		return
	}
	if spec := os.Getenv(fdChildEnv); spec != "" {
		runFdChild(spec)
		return
	}
	os.Exit(m.Run())
}

func runCrashChild(dir, addr string) {
	a, err := New(Config{DataDir: dir, MQTT: MQTTConfig{Listen: addr}, HTTPListen: "127.0.0.1:0"})
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(2)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for !a.Ready() {
			time.Sleep(time.Millisecond)
		}
		fmt.Println("READY", a.MQTTAddr(), a.HTTPAddr())
	}()
	if err := a.Run(ctx); err != nil {
		os.Exit(3)
	}
}

type crashChild struct {
	cmd      *exec.Cmd
	httpAddr string // its /metrics
}

func startCrashChild(t *testing.T, dir, addr string) *crashChild {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildDir+"="+dir, crashChildAddr+"="+addr)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case line <- sc.Text():
			default:
			}
		}
	}()
	select {
	case l := <-line:
		f := strings.Fields(l)
		if len(f) != 3 || f[0] != "READY" {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("agent child: %s", l)
		}
		return &crashChild{cmd: cmd, httpAddr: f[2]}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("agent child not ready after 10s")
	}
	return nil // not reached: Fatal ends the test
}

func (c *crashChild) kill(t *testing.T) {
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill child %d: %v", c.cmd.Process.Pid, err)
	}
	c.cmd.Wait()
}

// Paho clients publish QoS 1 while the agent process is SIGKILLed at random moments and restarted;
// every reading whose PUBACK a client received is in the log afterwards, the clients resend the
// rest, and the DUP resends of readings stored but not acked are not stored twice.
func TestCrashAckedReadingsSurviveSIGKILL(t *testing.T) {
	rounds := 12
	if testing.Short() {
		rounds = 4
	}
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	child := startCrashChild(t, dir, addr)
	defer func() {
		if child != nil {
			child.kill(t)
		}
	}()

	const devicesN, window = 6, 20
	var (
		mu      sync.Mutex
		acked   = map[string]map[int]bool{}
		stopPub = make(chan struct{})
		pubWG   sync.WaitGroup
		sent    = map[string]int{}
	)
	for d := range devicesN {
		id := fmt.Sprintf("crash-%d", d)
		mine := map[int]bool{} // the publisher's own set: acked itself is still being filled
		mu.Lock()
		acked[id] = mine
		mu.Unlock()
		o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
			SetCleanSession(false).SetAutoReconnect(true).SetConnectRetry(true).
			SetConnectRetryInterval(50 * time.Millisecond).SetMaxReconnectInterval(100 * time.Millisecond).
			SetConnectTimeout(2 * time.Second).SetWriteTimeout(2 * time.Second)
		c := paho.NewClient(o)
		c.Connect()
		defer c.Disconnect(0)
		pubWG.Go(func() {
			sem := make(chan struct{}, window)
			var tokWG sync.WaitGroup
			defer tokWG.Wait()
			for seq := 0; seq < 1_000_000; seq++ {
				select {
				case <-stopPub:
					mu.Lock()
					sent[id] = seq
					mu.Unlock()
					return
				case sem <- struct{}{}:
				}
				p, _ := json.Marshal(reading{Device: id, Seq: seq})
				tok := c.Publish("devices/"+id+"/readings", 1, false, p)
				tokWG.Go(func() {
					defer func() { <-sem }()
					// A token stays pending across reconnects while paho resends the message.
					if tok.WaitTimeout(20*time.Second) && tok.Error() == nil {
						mu.Lock()
						mine[seq] = true
						mu.Unlock()
					}
				})
			}
		})
	}

	for r := range rounds {
		time.Sleep(time.Duration(150+rand.IntN(500)) * time.Millisecond)
		mu.Lock()
		n := 0
		for _, m := range acked {
			n += len(m)
		}
		mu.Unlock()
		t.Logf("round %d: SIGKILL after %d acked readings", r, n)
		child.kill(t)
		child = startCrashChild(t, dir, addr)
	}
	// Let the clients resend what is pending, then stop them and wait for the last acks.
	time.Sleep(300 * time.Millisecond)
	close(stopPub)
	pubWG.Wait()
	child.kill(t)
	child = nil

	l, err := storage.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	stored := map[string]map[int]int{}
	for _, part := range readStream(t, l, "readings") {
		for _, rec := range part {
			var rd reading
			if err := json.Unmarshal(rec.Value, &rd); err != nil {
				t.Fatal(err)
			}
			if stored[rd.Device] == nil {
				stored[rd.Device] = map[int]int{}
			}
			stored[rd.Device][rd.Seq]++
		}
	}
	var totalAcked, dups int
	for id, seqs := range acked {
		totalAcked += len(seqs)
		for seq := range seqs {
			if stored[id][seq] == 0 {
				t.Errorf("%s seq %d was acked but is not in the log", id, seq)
			}
		}
		for seq, n := range stored[id] {
			if n > 1 {
				dups++
				t.Errorf("%s seq %d stored %d times", id, seq, n)
			}
		}
	}
	t.Logf("%d rounds, %d readings acked, %d stored twice", rounds, totalAcked, dups)
	if totalAcked < devicesN*rounds {
		t.Errorf("only %d readings acked: the test did not exercise the agent", totalAcked)
	}
}
