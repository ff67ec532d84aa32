package kafkaserve_test

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/tributary-iot/tributary/sync/kafkaserve"
)

// readPacket reads one size-prefixed packet and returns what follows the size.
func readPacket(t *testing.T, c net.Conn, what string) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var size [4]byte
	if _, err := io.ReadFull(c, size[:]); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	body := make([]byte, binary.BigEndian.Uint32(size[:]))
	if _, err := io.ReadFull(c, body); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return body
}

// handshakeV0 sends SaslHandshake v0 for mechanism and checks that the server takes it.
func handshakeV0(t *testing.T, c net.Conn, mechanism string) {
	t.Helper()
	body := binary.BigEndian.AppendUint16(nil, uint16(len(mechanism)))
	c.Write(requestBytes(17, 0, append(body, mechanism...)))
	resp := readPacket(t, c, "SaslHandshake v0 response")
	hr := kmsg.NewPtrSASLHandshakeResponse()
	hr.SetVersion(0)
	if len(resp) < 4 || binary.BigEndian.Uint32(resp) != 7 || hr.ReadFrom(resp[4:]) != nil || hr.ErrorCode != 0 {
		t.Fatalf("SaslHandshake v0 %s: response %x, want correlation 7 and no error", mechanism, resp)
	}
}

// authenticated checks that the connection now serves requests: Metadata v4 is answered.
func authenticated(t *testing.T, c net.Conn, what string) {
	t.Helper()
	c.Write(requestBytes(3, 4, []byte{0, 0, 0, 0, 0}))
	if resp := readPacket(t, c, what+": Metadata"); len(resp) < 4 || binary.BigEndian.Uint32(resp) != 7 {
		t.Fatalf("%s: Metadata response %x, want correlation 7", what, resp)
	}
}

// TestSASLHandshakeV0Unframed: after a SaslHandshake v0 the SASL tokens travel as bare
// size-prefixed packets, without Kafka request headers, and are answered the same way (Kafka's
// protocol guide, "SASL Authentication Sequence", KIP-43); kafka-python 2.0 logs in like this.
// PLAIN succeeds with an empty packet, SCRAM-SHA-256 exchanges its two messages, and a wrong
// password closes the connection, as a v0 exchange has no place for an error.
func TestSASLHandshakeV0Unframed(t *testing.T) {
	log := openLog(t)
	fillLog(t, log, 1, 1, 10, time.UnixMilli(1_700_000_000_000))
	// "a"/"b" makes a PLAIN token of 4 bytes, shorter than any Kafka request.
	addr := serve(t, kafkaserve.Config{Log: log, Users: users{"analyst": "s3cret-token", "a": "b"}})
	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	for _, tc := range []struct{ user, pass string }{{"analyst", "s3cret-token"}, {"a", "b"}} {
		c := dial()
		handshakeV0(t, c, "PLAIN")
		c.Write(frame([]byte("\x00" + tc.user + "\x00" + tc.pass)))
		if resp := readPacket(t, c, "PLAIN token answer"); len(resp) != 0 {
			t.Fatalf("PLAIN %s: answer %x, want an empty packet", tc.user, resp)
		}
		authenticated(t, c, "PLAIN "+tc.user)
	}
	c := dial()
	handshakeV0(t, c, "PLAIN")
	c.Write(frame([]byte("\x00analyst\x00wrong")))
	expectClosed(t, c, "PLAIN after v0 with a wrong password")

	scramLogin := func(pass string) (net.Conn, sasl.Session) {
		c := dial()
		handshakeV0(t, c, "SCRAM-SHA-256")
		sess, clientFirst, err := scram.Auth{User: "analyst", Pass: pass}.AsSha256Mechanism().Authenticate(timeout(t, 5*time.Second), addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(frame(clientFirst))
		_, clientFinal, err := sess.Challenge(readPacket(t, c, "SCRAM server-first"))
		if err != nil {
			t.Fatalf("SCRAM server-first: %v", err)
		}
		c.Write(frame(clientFinal))
		return c, sess
	}
	c, sess := scramLogin("s3cret-token")
	serverFinal := readPacket(t, c, "SCRAM server-final")
	if done, _, err := sess.Challenge(serverFinal); !done || err != nil {
		t.Fatalf("SCRAM server-final %q: done %v, %v; want the server's signature", serverFinal, done, err)
	}
	authenticated(t, c, "SCRAM-SHA-256")
	c, _ = scramLogin("wrong")
	expectClosed(t, c, "SCRAM-SHA-256 after v0 with a wrong password")
}
