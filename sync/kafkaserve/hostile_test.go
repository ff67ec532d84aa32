package kafkaserve_test

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/tributary-iot/tributary/internal/testpki"
	"github.com/tributary-iot/tributary/sync/kafkaserve"
)

// expectClosed checks that the server closes c without sending anything.
func expectClosed(t *testing.T, c net.Conn, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(make([]byte, 64))
	if n != 0 || !(errors.Is(err, io.EOF) || isReset(err)) {
		t.Fatalf("%s: read %d bytes, err %v; want the connection closed", what, n, err)
	}
}

func isReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne) && !ne.Timeout()
}

func frame(body []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

// requestBytes is a framed request: header v1 (key, version, correlation, client id) and body.
func requestBytes(key, version int16, body []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(key))
	b = binary.BigEndian.AppendUint16(b, uint16(version))
	b = binary.BigEndian.AppendUint32(b, 7)
	b = binary.BigEndian.AppendUint16(b, 4)
	b = append(b, "test"...)
	return frame(append(b, body...))
}

// TestHostileInput sends what a broken or hostile client might: each gets a closed connection
// or the protocol's error, and a consumer on another connection keeps reading throughout.
func TestHostileInput(t *testing.T) {
	log := openLog(t)
	fillLog(t, log, 2, 10, 2000, time.UnixMilli(1_700_000_000_000))
	addr := serve(t, kafkaserve.Config{Log: log})
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DisableIdempotentWrite(), kgo.RequestRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stillServing := func(what string) {
		t.Helper()
		req := kmsg.NewPtrListOffsetsRequest()
		rt := kmsg.NewListOffsetsRequestTopic()
		rt.Topic = "readings"
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Timestamp = -1
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl)
		if err != nil || resp.Topics[0].Partitions[0].Offset <= 0 {
			t.Fatalf("after %s, a well-behaved client got %v, %v", what, resp, err)
		}
	}
	cases := []struct {
		name string
		send []byte
	}{
		{"garbage bytes", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},
		{"huge declared size", binary.BigEndian.AppendUint32(nil, 0x7fffffff)},
		{"negative size", binary.BigEndian.AppendUint32(nil, 0xfffffff0)},
		{"size below a header", frame([]byte{0, 1, 2})},
		{"unknown API key", requestBytes(999, 0, nil)},
		{"unsupported Fetch version", requestBytes(1, 0, nil)},
		{"truncated Fetch body", requestBytes(1, 11, []byte{0, 0, 0})},
		{"Metadata with a lying array length", requestBytes(3, 4, []byte{0x7f, 0xff, 0xff, 0xff})},
	}
	for _, tc := range cases {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(tc.send); err != nil {
			t.Fatal(err)
		}
		expectClosed(t, c, tc.name)
		c.Close()
		stillServing(tc.name)
	}

	// A Fetch for a topic that does not exist: UNKNOWN_TOPIC_OR_PARTITION, connection kept.
	fetch := kmsg.NewPtrFetchRequest()
	fetch.MaxWaitMillis, fetch.MinBytes, fetch.MaxBytes = 100, 1, 1<<20
	for _, topic := range []string{"nope", "readings"} {
		ft := kmsg.NewFetchRequestTopic()
		ft.Topic = topic
		fp := kmsg.NewFetchRequestTopicPartition()
		fp.Partition, fp.PartitionMaxBytes = 0, 1<<20
		if topic == "readings" {
			fp.Partition = 5 // the stream has 2
		}
		ft.Partitions = append(ft.Partitions, fp)
		fetch.Topics = append(fetch.Topics, ft)
	}
	fresp, err := fetch.RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	for _, ft := range fresp.Topics {
		if code := ft.Partitions[0].ErrorCode; code != kerr.UnknownTopicOrPartition.Code {
			t.Fatalf("fetch %s/%d: error %v, want UNKNOWN_TOPIC_OR_PARTITION", ft.Topic, ft.Partitions[0].Partition, kerr.ErrorForCode(code))
		}
	}
	// A Fetch at an offset past the end: OFFSET_OUT_OF_RANGE.
	fetch.Topics = fetch.Topics[1:]
	fetch.Topics[0].Partitions[0].Partition, fetch.Topics[0].Partitions[0].FetchOffset = 0, 1<<40
	fresp, err = fetch.RequestWith(ctx, cl)
	if err != nil || fresp.Topics[0].Partitions[0].ErrorCode != kerr.OffsetOutOfRange.Code {
		t.Fatalf("fetch past the end: %v, %v; want OFFSET_OUT_OF_RANGE", fresp, err)
	}

	// Writes are refused with a reason.
	err = cl.ProduceSync(ctx, &kgo.Record{Topic: "readings", Value: []byte("x")}).FirstErr()
	if !errors.Is(err, kerr.PolicyViolation) {
		t.Fatalf("produce: %v, want POLICY_VIOLATION", err)
	}
	stillServing("a refused produce")
}

type users map[string]string

func (u users) Password(user string) (string, bool) { p, ok := u[user]; return p, ok }

// TestSASLOverTLS: PLAIN and SCRAM-SHA-256 logins over TLS read the stream; a wrong password
// gets SASL_AUTHENTICATION_FAILED and a closed connection; a client skipping SASL is cut off.
func TestSASLOverTLS(t *testing.T) {
	log := openLog(t)
	fillLog(t, log, 2, 10, 1000, time.UnixMilli(1_700_000_000_000))
	ca := testpki.New(t, "kafka")
	certFile, keyFile := ca.ServerCert(t, "central")
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, kafkaserve.Config{Log: log, Users: users{"analyst": "s3cret-token"},
		TLS: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}})
	dialer := &tls.Dialer{Config: &tls.Config{RootCAs: ca.Pool, ServerName: "127.0.0.1"}}
	read := func(mech kgo.Opt) (int, error) {
		cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.Dialer(dialer.DialContext), mech, kgo.ConsumeTopics("readings"),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.RequestRetries(0))
		if err != nil {
			return 0, err
		}
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n := 0
		for n < 1000 {
			fs := cl.PollFetches(ctx)
			if err := fs.Err0(); err != nil {
				return n, err
			}
			n += fs.NumRecords()
		}
		return n, nil
	}
	plainAuth := func(user, pass string) kgo.Opt {
		return kgo.SASL(plain.Auth{User: user, Pass: pass}.AsMechanism())
	}
	scramAuth := func(user, pass string) kgo.Opt {
		return kgo.SASL(scram.Auth{User: user, Pass: pass}.AsSha256Mechanism())
	}
	for name, opt := range map[string]kgo.Opt{"PLAIN": plainAuth("analyst", "s3cret-token"), "SCRAM-SHA-256": scramAuth("analyst", "s3cret-token")} {
		if n, err := read(opt); err != nil || n != 1000 {
			t.Fatalf("%s: read %d records, %v", name, n, err)
		}
	}
	for name, opt := range map[string]kgo.Opt{"PLAIN": plainAuth("analyst", "wrong"), "SCRAM-SHA-256": scramAuth("analyst", "wrong"),
		"SCRAM unknown user": scramAuth("nobody", "s3cret-token")} {
		cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.Dialer(dialer.DialContext), opt, kgo.RequestRetries(0))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl)
		cancel()
		cl.Close()
		if !errors.Is(err, kerr.SaslAuthenticationFailed) {
			t.Fatalf("%s with a wrong password: %v, want SASL_AUTHENTICATION_FAILED", name, err)
		}
	}
	// Before logging in, a large request is refused before it is read.
	big, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer big.Close()
	big.Write(binary.BigEndian.AppendUint32(nil, 1<<20))
	expectClosed(t, big, "a 1 MiB request before SASL")
	// Without SASL, a Metadata request closes the connection.
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.Pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(requestBytes(3, 4, []byte{0, 0, 0, 0, 0}))
	expectClosed(t, c, "Metadata before SASL")
}

// TestConnectionLimit: past MaxConnections a new connection is closed at once, and the ones
// already open keep working.
func TestConnectionLimit(t *testing.T) {
	log := openLog(t)
	fillLog(t, log, 1, 1, 10, time.UnixMilli(1_700_000_000_000))
	addr := serve(t, kafkaserve.Config{Log: log, MaxConnections: 3})
	var open []net.Conn
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		open = append(open, c)
	}
	// The server counts a connection once it accepted it: make sure all three are.
	api := requestBytes(18, 0, nil)
	for _, c := range open {
		c.Write(api)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, make([]byte, 8)); err != nil {
			t.Fatalf("open connection: %v", err)
		}
	}
	extra, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	expectClosed(t, extra, "a fourth connection")
}
