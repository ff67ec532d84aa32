package edge

import (
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

func persistentConnect(version byte, id, user, pass string) packets.Packet {
	pk := packets.Packet{ProtocolVersion: version, Connect: packets.ConnectParams{Keepalive: 30, ClientIdentifier: id,
		UsernameFlag: user != "", Username: []byte(user), PasswordFlag: pass != "", Password: []byte(pass)}}
	if version == 5 {
		pk.Properties.SessionExpiryInterval, pk.Properties.SessionExpiryIntervalFlag = 86400, true
	}
	return pk
}

// One device's credentials hold at most max_sessions_per_device sessions, connected or kept:
// the next client id is refused with "quota exceeded" (0x03 for MQTT 3.1.1), a known client id
// resumes its session, and other devices are not affected. Mochi kept every client id's session
// for a day with no cap.
func TestSessionsPerDeviceCapped(t *testing.T) {
	dir := t.TempDir()
	addDevice(t, dir, "d", "pw")
	addDevice(t, dir, "e", "pw")
	a, _ := startAgent(t, Config{DataDir: dir})
	for i := range DefaultMaxSessionsPerDevice {
		c, ack, _ := connectWith(t, a.MQTTAddr(), persistentConnect(4, fmt.Sprintf("d-%d", i), "d", "pw"))
		if ack.ReasonCode != 0 {
			t.Fatalf("session %d: CONNACK 0x%02x", i, ack.ReasonCode)
		}
		c.conn.Close() // the session stays
	}
	time.Sleep(100 * time.Millisecond)
	for _, tc := range []struct {
		version byte
		want    byte
	}{{4, 0x03}, {5, packets.ErrQuotaExceeded.Code}} {
		_, ack, closed := connectWith(t, a.MQTTAddr(), persistentConnect(tc.version, "d-new", "d", "pw"))
		if closed || ack.ReasonCode != tc.want {
			t.Errorf("MQTT %d session past the cap: CONNACK 0x%02x (closed %v), want 0x%02x", tc.version, ack.ReasonCode, closed, tc.want)
		}
	}
	if _, ack, _ := connectWith(t, a.MQTTAddr(), persistentConnect(4, "d-0", "d", "pw")); ack.ReasonCode != 0 || !ack.SessionPresent {
		t.Errorf("resuming a kept session: CONNACK 0x%02x present %v, want 0 and present", ack.ReasonCode, ack.SessionPresent)
	}
	if _, ack, _ := connectWith(t, a.MQTTAddr(), persistentConnect(4, "e-0", "e", "pw")); ack.ReasonCode != 0 {
		t.Errorf("another device: CONNACK 0x%02x", ack.ReasonCode)
	}
	if n := refusals(t, a)[reasonSessionLimit]; n != 2 {
		t.Errorf("%v refusals counted as %s, want 2", n, reasonSessionLimit)
	}
}

// max_sessions caps all sessions; a clean session ends with its connection and frees its place.
func TestSessionsTotalCapped(t *testing.T) {
	a, _ := startAgent(t, Config{MQTT: MQTTConfig{MaxSessions: 3}})
	for i := range 3 {
		c, ack, _ := connectWith(t, a.MQTTAddr(), persistentConnect(4, fmt.Sprintf("anon-%d", i), "", ""))
		if ack.ReasonCode != 0 {
			t.Fatalf("session %d: CONNACK 0x%02x", i, ack.ReasonCode)
		}
		if i == 2 {
			c.write([]byte{packets.Disconnect << 4, 0})
		}
	}
	if _, ack, _ := connectWith(t, a.MQTTAddr(), persistentConnect(4, "anon-3", "", "")); ack.ReasonCode != 0x03 {
		t.Fatalf("fourth session: CONNACK 0x%02x, want 0x03", ack.ReasonCode)
	}
	clean := packets.Packet{ProtocolVersion: 4, Connect: packets.ConnectParams{Clean: true, Keepalive: 30, ClientIdentifier: "anon-2"}}
	c, ack, _ := connectWith(t, a.MQTTAddr(), clean) // replaces anon-2's session with a clean one
	if ack.ReasonCode != 0 {
		t.Fatalf("clean session for a known id: CONNACK 0x%02x", ack.ReasonCode)
	}
	c.write([]byte{packets.Disconnect << 4, 0})
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, ack, _ := connectWith(t, a.MQTTAddr(), persistentConnect(4, "anon-4", "", ""))
		if ack.ReasonCode == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a clean session ended: CONNACK 0x%02x, want its place free", ack.ReasonCode)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Sessions are kept mqtt.session_expiry (default an hour, not mochi's day): an MQTT 5 client
// asking for a day is told the shorter interval, and an MQTT 3.1.1 session is gone once it passed.
func TestSessionExpiry(t *testing.T) {
	a, _ := startAgent(t, Config{})
	_, ack, _ := connectWith(t, a.MQTTAddr(), persistentConnect(5, "long", "", ""))
	if !ack.Properties.SessionExpiryIntervalFlag || ack.Properties.SessionExpiryInterval != 3600 {
		t.Errorf("CONNACK session expiry %d (flag %v), want 3600", ack.Properties.SessionExpiryInterval, ack.Properties.SessionExpiryIntervalFlag)
	}

	b, _ := startAgent(t, Config{MQTT: MQTTConfig{SessionExpiry: time.Second}})
	c, _, _ := connectWith(t, b.MQTTAddr(), persistentConnect(4, "short", "", ""))
	c.conn.Close()
	time.Sleep(3 * time.Second) // expiry runs once a second
	if _, ack, _ := connectWith(t, b.MQTTAddr(), persistentConnect(4, "short", "", "")); ack.SessionPresent {
		t.Error("session present 3s after a 1s session expiry")
	}
	if n := b.sessions.len(); n != 1 {
		t.Errorf("session table holds %d sessions, want the one reconnected", n)
	}
}

// BenchmarkKeptSessionHeap measures what one kept session (a persistent client that left) costs
// the agent's heap, the figure behind mqtt.max_sessions' default:
//
//	go test ./edge/ -run '^$' -bench KeptSessionHeap -benchtime 2000x
func BenchmarkKeptSessionHeap(b *testing.B) {
	a, _ := startAgent(b, Config{MQTT: MQTTConfig{MaxSessions: b.N + 1}})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for i := range b.N {
		conn, err := net.DialTimeout("tcp", a.MQTTAddr(), 5*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		if _, ack := connectRaw(b, conn, fmt.Sprintf("kept-%d", i), 4, "", "", false); ack.ReasonCode != 0 {
			b.Fatalf("session %d: CONNACK 0x%02x", i, ack.ReasonCode)
		}
		conn.Close()
	}
	b.StopTimer()
	deadline := time.Now().Add(30 * time.Second)
	for metricSum(b, a.metrics.registry, "tributary_edge_connected_devices") != 0 {
		if time.Now().After(deadline) {
			b.Fatal("clients still connected 30s after they closed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if n := a.server.Clients.Len(); n != b.N {
		b.Fatalf("broker keeps %d sessions, want %d", n, b.N)
	}
	b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(b.N), "heap-B/session")
}
