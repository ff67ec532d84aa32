//go:build unix

package edge

import (
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// TestMochiInvariantsOfTheDirectAckPath pins what the committer's direct PUBACK write
// (direct_unix.go, clientAcks.tryWrite) relies on in mochi, so an upgrade that changes it fails
// here instead of interleaving bytes on a socket:
//
//  1. the module is v2.7.9, the version these invariants were read from;
//  2. Client.WritePacket writes under the client's embedded mutex, so holding it (TryLock) keeps
//     every mochi write off the socket until Unlock;
//  3. Client.Net.Conn of a TCP client is the socket itself, with a raw descriptor;
//  4. mochi buffers nothing between its writes: with ClientNetWriteBufferSize 1 every packet goes
//     to the socket whole in WritePacket (Net.outbuf stays nil), so a direct write cannot
//     overtake an ack mochi still holds.
func TestMochiInvariantsOfTheDirectAckPath(t *testing.T) {
	// A test binary's build info lists no module versions: read the requirement from go.mod.
	mod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*github.com/mochi-mqtt/server/v2 (\S+)`).FindSubmatch(mod)
	if m == nil {
		t.Fatal("go.mod does not require github.com/mochi-mqtt/server/v2")
	}
	version := string(m[1])
	if version != "v2.7.9" {
		t.Fatalf("mochi is %q: re-read its Client.WritePacket and flushOutbuf, check the invariants in this test's doc, then update it", version)
	}

	a, _ := startAgent(t, Config{})
	if got := a.server.Options.ClientNetWriteBufferSize; got != 1 {
		t.Fatalf("ClientNetWriteBufferSize %d: mochi would hold unflushed packets that a direct write overtakes", got)
	}
	c, _ := dialRaw(t, a.MQTTAddr(), "inv-1", 4, "", "")
	mc, ok := a.server.Clients.Get("inv-1")
	if !ok {
		t.Fatal("client not registered")
	}
	if directConn(mc.Net.Conn) == nil {
		t.Fatalf("a TCP client's Net.Conn (%T) has no raw descriptor: every ack would take the slow path", mc.Net.Conn)
	}
	// mochi may still hold the lock for a moment after the CONNACK reached the client (it unlocks
	// after its write returns), so the lock must come free soon, not at the first try.
	locked := mc.TryLock()
	for deadline := time.Now().Add(2 * time.Second); !locked && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
		locked = mc.TryLock()
	}
	if !locked {
		t.Fatal("the idle client's write lock stayed taken for 2 s")
	}
	wrote := make(chan error, 1)
	go func() {
		wrote <- mc.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: 77})
	}()
	select {
	case err := <-wrote:
		mc.Unlock()
		t.Fatalf("WritePacket went through while the client's lock was held (err %v)", err)
	case <-time.After(200 * time.Millisecond):
	}
	mc.Unlock()
	if err := <-wrote; err != nil {
		t.Fatalf("WritePacket after Unlock: %v", err)
	}
	pk, err := c.read()
	if err != nil || pk.FixedHeader.Type != packets.Puback || pk.PacketID != 77 {
		t.Fatalf("read %v %d %v, want the PUBACK 77 once the lock was released", pk.FixedHeader.Type, pk.PacketID, err)
	}
}
