package edge

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/tributary-iot/tributary/storage"
)

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("EDGE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

// startAgent runs an agent on 127.0.0.1:0 until the test ends (or stop is called).
func startAgent(t testing.TB, cfg Config) (a *Agent, stop func()) {
	t.Helper()
	return startAgentLogged(t, cfg, testLogger(t))
}

// startAgentLogged is startAgent with the agent's logger given, for tests that read its lines.
func startAgentLogged(t testing.TB, cfg Config, logger *slog.Logger) (a *Agent, stop func()) {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.MQTT.Listen == "" {
		cfg.MQTT.Listen = "127.0.0.1:0"
	}
	if logger != nil {
		cfg.Logger = logger
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for !a.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("agent not ready after 5s")
		}
		time.Sleep(time.Millisecond)
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("Run did not return 15s after cancel")
		}
	}
	t.Cleanup(stop)
	return a, stop
}

// readStream returns every record of a stream, per partition, in offset order.
func readStream(t testing.TB, l *storage.Log, name string) [][]storage.Record {
	t.Helper()
	s, err := l.Stream(name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	out := make([][]storage.Record, s.Partitions())
	for i := range s.Partitions() {
		rd := s.Partition(i).NewReader(0, nil)
		for {
			e, err := rd.Next(context.Background())
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("read %s/%d: %v", name, i, err)
			}
			if e.Gap == nil {
				out[i] = append(out[i], e.Record)
			}
		}
	}
	return out
}

func countStream(t testing.TB, l *storage.Log, name string) int {
	n := 0
	for _, p := range readStream(t, l, name) {
		n += len(p)
	}
	return n
}

func pahoClient(t testing.TB, addr, clientID, user, pass string) paho.Client {
	t.Helper()
	o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(clientID).
		SetUsername(user).SetPassword(pass).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", clientID, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

// rawClient is a minimal MQTT client for what paho hides: raw packet ids, the DUP flag, MQTT 5,
// and the exact order of PUBACKs. It uses mochi's packet codec.
type rawClient struct {
	t       testing.TB
	conn    net.Conn
	r       *bufio.Reader
	version byte
}

func dialRaw(t testing.TB, addr, clientID string, version byte, user, pass string) (*rawClient, packets.Packet) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return connectRaw(t, conn, clientID, version, user, pass, false)
}

// connectRaw sends CONNECT on conn and reads the CONNACK. Without clean, an MQTT 5 session
// outlives the connection for an hour, so resend tests find it again.
func connectRaw(t testing.TB, conn net.Conn, clientID string, version byte, user, pass string, clean bool) (*rawClient, packets.Packet) {
	t.Helper()
	t.Cleanup(func() { conn.Close() })
	c := &rawClient{t: t, conn: conn, r: bufio.NewReader(conn), version: version}
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: version,
		Connect: packets.ConnectParams{
			ProtocolName: []byte("MQTT"), Clean: clean, Keepalive: 30, ClientIdentifier: clientID,
			UsernameFlag: user != "", Username: []byte(user), PasswordFlag: pass != "", Password: []byte(pass),
		},
	}
	if version == 5 && !clean {
		pk.Properties.SessionExpiryInterval = 3600
		pk.Properties.SessionExpiryIntervalFlag = true
	}
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	c.write(buf.Bytes())
	ack, err := c.read()
	if err != nil {
		t.Fatalf("read CONNACK: %v", err)
	}
	return c, ack
}

func (c *rawClient) write(b []byte) {
	c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *rawClient) publishBytes(topic string, payload []byte, id uint16, qos byte, dup bool) []byte {
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Publish, Qos: qos, Dup: dup},
		ProtocolVersion: c.version, TopicName: topic, Payload: payload, PacketID: id,
	}
	var buf bytes.Buffer
	if err := pk.PublishEncode(&buf); err != nil {
		c.t.Fatal(err)
	}
	return buf.Bytes()
}

func (c *rawClient) publish(topic string, payload []byte, id uint16, qos byte, dup bool) {
	c.write(c.publishBytes(topic, payload, id, qos, dup))
}

// read returns the next packet from the server.
func (c *rawClient) read() (packets.Packet, error) {
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var pk packets.Packet
	b, err := c.r.ReadByte()
	if err != nil {
		return pk, err
	}
	if err := pk.FixedHeader.Decode(b); err != nil {
		return pk, err
	}
	n, _, err := packets.DecodeLength(c.r)
	if err != nil {
		return pk, err
	}
	pk.FixedHeader.Remaining = n
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return pk, err
	}
	pk.ProtocolVersion = c.version
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Pubrec:
		err = pk.PubrecDecode(body)
	case packets.Pubcomp:
		err = pk.PubcompDecode(body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	default:
		err = fmt.Errorf("unexpected packet type %d", pk.FixedHeader.Type)
	}
	return pk, err
}

// expectAck reads one PUBACK and checks its packet id.
func (c *rawClient) expectAck(id uint16) {
	c.t.Helper()
	pk, err := c.read()
	if err != nil {
		c.t.Fatalf("waiting for PUBACK %d: %v", id, err)
	}
	if pk.FixedHeader.Type != packets.Puback || pk.PacketID != id {
		c.t.Fatalf("got packet type %d id %d, want PUBACK %d", pk.FixedHeader.Type, pk.PacketID, id)
	}
}

// logBuffer collects an agent's log lines (text handler) for tests that read them.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// logger returns a text logger at info level (the default of `tributary edge`) writing into b.
func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func netSplit(addr string) (string, string, error) { return net.SplitHostPort(addr) }

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func httpGet(t testing.TB, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return b
}
