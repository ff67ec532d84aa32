package central_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	// IBM's sarama, the long-standing Go Kafka client, test-only: its protocol code, consumer
	// groups and offset manager are its own (neither franz-go's nor librdkafka's), so it checks
	// central's Kafka listener against a third reading of the specification.
	"github.com/IBM/sarama"
	// sarama's metrics library, only to turn it off: its meters share a process-wide goroutine
	// that never ends, which goleak would report.
	metrics "github.com/rcrowley/go-metrics"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/tributary-iot/tributary/internal/testpki"
	"github.com/tributary-iot/tributary/sync/central"
	"github.com/tributary-iot/tributary/sync/consume"
)

func init() { metrics.UseNilMetrics = true }

// saramaVersions are the Kafka versions sarama is told the broker has, which pick the request
// versions it sends: its default, and a current one.
var saramaVersions = []sarama.KafkaVersion{sarama.DefaultVersion, sarama.V4_0_0_0}

func saramaConfig(v sarama.KafkaVersion, name string) *sarama.Config {
	cfg := sarama.NewConfig()
	cfg.Version = v
	cfg.ClientID = "sarama-" + name
	cfg.Net.DialTimeout, cfg.Net.ReadTimeout, cfg.Net.WriteTimeout = 5*time.Second, 10*time.Second, 10*time.Second
	cfg.Metadata.Retry.Max, cfg.Metadata.Retry.Backoff = 3, 100*time.Millisecond
	cfg.Consumer.Return.Errors = true
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.MaxWaitTime = 250 * time.Millisecond
	// Small fetches interleave the partitions, so commits mid-stream cover all of them.
	cfg.Consumer.Fetch.Default = 16384
	return cfg
}

// saramaRead reads topic readings from the beginning with sarama's partition consumers, all
// partitions at once, up to the end offsets its client lists first.
func saramaRead(t *testing.T, addr string, cfg *sarama.Config) ([]clientRecord, error) {
	t.Helper()
	client, err := sarama.NewClient([]string{addr}, cfg)
	if err != nil {
		return nil, err
	}
	defer client.Close()
	parts, err := client.Partitions("readings")
	if err != nil {
		return nil, err
	}
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		return nil, err
	}
	defer consumer.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	byPart := make([][]clientRecord, len(parts))
	errs := make(chan error, len(parts))
	for i, p := range parts {
		end, err := client.GetOffset("readings", p, sarama.OffsetNewest)
		if err != nil {
			return nil, err
		}
		pc, err := consumer.ConsumePartition("readings", p, sarama.OffsetOldest)
		if err != nil {
			return nil, err
		}
		// Closed all at once: each Close waits for the long poll in flight (MaxWaitTime).
		defer pc.AsyncClose()
		go func() {
			for next := int64(0); next < end; {
				select {
				case m := <-pc.Messages():
					byPart[i] = append(byPart[i], saramaRecord("c", m))
					next = m.Offset + 1
				case err := <-pc.Errors():
					errs <- err
					return
				case <-ctx.Done():
					errs <- fmt.Errorf("partition %d: records up to %d not read in 30s", p, end)
					return
				}
			}
			errs <- nil
		}()
	}
	for range parts {
		if err := <-errs; err != nil {
			return nil, err
		}
	}
	var recs []clientRecord
	for _, rs := range byPart {
		recs = append(recs, rs...)
	}
	return recs, nil
}

func saramaRecord(consumer string, m *sarama.ConsumerMessage) clientRecord {
	h := map[string]string{}
	for _, rh := range m.Headers {
		h[string(rh.Key)] = string(rh.Value)
	}
	return clientRecord{Consumer: consumer, Partition: int(m.Partition), Offset: m.Offset, Key: string(m.Key), Value: string(m.Value), Headers: h}
}

// countingDialer dials TCP and counts the bytes read from its connections: the size of what
// the Kafka listener sent.
type countingDialer struct{ read atomic.Int64 }

func (d *countingDialer) Dial(network, addr string) (net.Conn, error) {
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, n: &d.read}, nil
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// TestSaramaReadsCentral: sarama's partition consumers read every reading an edge forwarded,
// from the beginning, once each, in offset order, with the keys, values and headers central
// stored; at sarama's default Kafka version and at 4.0's request versions; from a listener that
// serves the batches as stored and from one that serves them zstd-compressed (`kafka:
// compression: zstd`), decoded by sarama's own codec, which must then be what came over the
// wire: far fewer bytes.
func TestSaramaReadsCentral(t *testing.T) {
	received := map[string]int64{}
	for _, compression := range []string{"none", "zstd"} {
		func() {
			cdir := t.TempDir()
			token := addEdge(t, cdir, "gw-1")
			url, kaddr, stop := runCentralKafka(t, central.Config{DataDir: cdir, Kafka: central.KafkaListener{Compression: compression}})
			defer stop()
			cl := &consume.Client{BaseURL: url}
			f := forwardFleet(t, url, "", token, cl, 200, 10000)
			for _, v := range saramaVersions {
				cfg := saramaConfig(v, "read")
				dialer := &countingDialer{}
				cfg.Net.Proxy.Enable, cfg.Net.Proxy.Dialer = true, dialer
				name := fmt.Sprintf("sarama (Kafka %s, %s)", v, compression)
				recs, err := saramaRead(t, kaddr, cfg)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				verifyClientRead(t, name, recs, cl, f)
				received[v.String()+" "+compression] = dialer.read.Load()
			}
		}()
	}
	for _, v := range saramaVersions {
		plain, zstd := received[v.String()+" none"], received[v.String()+" zstd"]
		if zstd*2 > plain {
			t.Fatalf("sarama (Kafka %s) received %d bytes from the zstd listener, %d from the uncompressed one: want zstd's batches", v, zstd, plain)
		}
		t.Logf("sarama (Kafka %s) received %d bytes uncompressed, %d with zstd", v, plain, zstd)
	}
}

// saramaMember is one member of a sarama consumer group, consuming from its own goroutine and
// marking every record it reads for sarama's offset manager to commit.
type saramaMember struct {
	name  string
	group sarama.ConsumerGroup
	g     *saramaGroupRun
	mu    sync.Mutex
	claim []int // partitions of the current session
	done  chan error
}

// saramaGroupRun is what the members of a group read, in order, and how many they may read.
type saramaGroupRun struct {
	mu    sync.Mutex
	recs  []clientRecord
	limit int // no more records are read, or marked, once this many were
	slow  bool
}

func (m *saramaMember) Setup(s sarama.ConsumerGroupSession) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.claim = append([]int(nil), intsOf(s.Claims()["readings"])...)
	return nil
}

func (m *saramaMember) Cleanup(sarama.ConsumerGroupSession) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.claim = nil
	return nil
}

func (m *saramaMember) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
	for {
		select {
		case msg, ok := <-c.Messages():
			if !ok {
				return nil
			}
			m.g.mu.Lock()
			if len(m.g.recs) >= m.g.limit {
				m.g.mu.Unlock()
				return nil
			}
			m.g.recs = append(m.g.recs, saramaRecord(m.name, msg))
			s.MarkMessage(msg, "")
			slow := m.g.slow
			m.g.mu.Unlock()
			if slow {
				// Slow enough that the records last until the group has settled twice.
				time.Sleep(5 * time.Millisecond)
			}
		case <-s.Context().Done():
			return nil
		}
	}
}

func (m *saramaMember) assigned() []int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]int(nil), m.claim...)
}

func intsOf(ps []int32) []int {
	out := make([]int, len(ps))
	for i, p := range ps {
		out[i] = int(p)
	}
	return out
}

// joinSarama starts a member of group, assigning with strategy when it leads, that consumes until ctx ends or its group is closed.
func joinSarama(t *testing.T, ctx context.Context, addr, group, name string, strategy sarama.BalanceStrategy, g *saramaGroupRun) *saramaMember {
	t.Helper()
	cfg := saramaConfig(sarama.V4_0_0_0, name)
	cfg.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{strategy}
	cfg.Consumer.Group.Session.Timeout = 6 * time.Second
	cfg.Consumer.Group.Heartbeat.Interval = 500 * time.Millisecond
	cfg.Consumer.Group.Rebalance.Timeout = 10 * time.Second
	cfg.Consumer.Offsets.AutoCommit.Interval = 100 * time.Millisecond
	cg, err := sarama.NewConsumerGroup([]string{addr}, group, cfg)
	if err != nil {
		t.Fatalf("sarama consumer group %s: %v", name, err)
	}
	m := &saramaMember{name: name, group: cg, g: g, done: make(chan error, 1)}
	go func() {
		var err error
		for ctx.Err() == nil && err == nil {
			// Consume returns at each rebalance; a member calls it again to rejoin.
			err = cg.Consume(ctx, []string{"readings"}, m)
		}
		if errors.Is(err, sarama.ErrClosedConsumerGroup) {
			err = nil
		}
		m.done <- err
	}()
	return m
}

// leave closes the member's group (LeaveGroup, after a last commit) and waits for it.
func (m *saramaMember) leave(t *testing.T) {
	t.Helper()
	if err := m.group.Close(); err != nil {
		t.Fatalf("sarama %s leaving: %v", m.name, err)
	}
	select {
	case err := <-m.done:
		if err != nil {
			t.Fatalf("sarama %s: %v", m.name, err)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("sarama %s still consuming 15s after leaving", m.name)
	}
}

func waitFor(t *testing.T, d time.Duration, cond func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s within %v", what(), d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSaramaGroup runs sarama's consumer-group code and offset manager against central's
// coordinator, with each of sarama's assignors (range, round-robin, sticky), which the
// coordinator relays as chosen: two members split the partitions, the one left takes every
// partition when the other leaves, what sarama's offset manager commits for the records it
// marked is the group's offsets in the HTTP API and in sarama's own admin client, and a new
// member starts at exactly those offsets and reads the rest once.
func TestSaramaGroup(t *testing.T) {
	cdir := t.TempDir()
	token := addEdge(t, cdir, "gw-1")
	url, kaddr, stop := runCentralKafka(t, central.Config{DataDir: cdir})
	defer stop()
	cl := &consume.Client{BaseURL: url}
	forwardFleet(t, url, "", token, cl, 100, 12000)
	ends := partitionEnds(t, cl)
	admin, err := sarama.NewClusterAdmin([]string{kaddr}, saramaConfig(sarama.V4_0_0_0, "admin"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	for _, strategy := range []sarama.BalanceStrategy{sarama.NewBalanceStrategyRange(),
		sarama.NewBalanceStrategyRoundRobin(), sarama.NewBalanceStrategySticky()} {
		t.Run(strategy.Name(), func(t *testing.T) { saramaGroup(t, url, kaddr, strategy, ends, admin) })
	}
}

func saramaGroup(t *testing.T, url, kaddr string, strategy sarama.BalanceStrategy, ends map[int]int64, admin sarama.ClusterAdmin) {
	group := "sarama-" + strategy.Name()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	g := &saramaGroupRun{limit: 6000, slow: true}
	m1 := joinSarama(t, ctx, kaddr, group, "c1", strategy, g)
	m2 := joinSarama(t, ctx, kaddr, group, "c2", strategy, g)
	waitFor(t, 30*time.Second, func() bool {
		a1, a2 := m1.assigned(), m2.assigned()
		return len(a1) > 0 && len(a2) > 0 && len(a1)+len(a2) == len(ends)
	}, func() string { return fmt.Sprintf("no split: c1 %v, c2 %v", m1.assigned(), m2.assigned()) })
	a1, a2 := m1.assigned(), m2.assigned()
	checkSplit(t, "sarama", a1, a2, len(ends))
	t.Logf("two sarama members split the partitions: c1=%v c2=%v", a1, a2)
	desc, err := admin.DescribeConsumerGroups([]string{group})
	if err != nil || len(desc) != 1 {
		t.Fatalf("sarama admin describing %s: %v, %v", group, desc, err)
	}
	if d := desc[0]; d.Err != sarama.ErrNoError || d.State != "Stable" || d.ProtocolType != "consumer" || d.Protocol != strategy.Name() || len(d.Members) != 2 {
		t.Fatalf("sarama admin describes %s as %s, %q/%q with %d members (%v); want Stable, consumer/%s, 2 members",
			group, d.State, d.ProtocolType, d.Protocol, len(d.Members), d.Err, strategy.Name())
	}
	m2.leave(t)
	waitFor(t, 30*time.Second, func() bool { return len(m1.assigned()) == len(ends) },
		func() string { return fmt.Sprintf("c1 did not take over: %v", m1.assigned()) })
	t.Logf("c2 left, c1 took over %v", m1.assigned())
	g.mu.Lock()
	g.slow = false
	g.mu.Unlock()
	waitFor(t, 30*time.Second, func() bool { g.mu.Lock(); defer g.mu.Unlock(); return len(g.recs) >= g.limit },
		func() string { return fmt.Sprintf("only %d of %d records read", len(g.recs), g.limit) })
	m1.leave(t) // commits what it marked, then leaves

	// The members marked every record they read, and each committed its marks as it left: the
	// last record read of each partition is where the group stands.
	g.mu.Lock()
	recs := append([]clientRecord(nil), g.recs...)
	g.mu.Unlock()
	marked := map[int]int64{}
	for _, r := range recs {
		marked[r.Partition] = r.Offset + 1
	}
	committed, err := getGroupOffsets(url, group)
	if err != nil {
		t.Fatal(err)
	}
	for p := range ends {
		if committed.Offsets[p] != marked[p] {
			t.Fatalf("partition %d: sarama's offset manager marked up to %d, the HTTP API reports %d committed", p, marked[p], committed.Offsets[p])
		}
	}
	fetched, err := admin.ListConsumerGroupOffsets(group, nil)
	if err != nil {
		t.Fatalf("sarama admin: %v", err)
	}
	for p := range ends {
		b := fetched.GetBlock("readings", int32(p))
		if b == nil || b.Err != sarama.ErrNoError || b.Offset != committed.Offsets[p] {
			t.Fatalf("partition %d: sarama's admin sees %+v, the HTTP API %d", p, b, committed.Offsets[p])
		}
	}
	checkGroupRead(t, "sarama", recs, committed.Offsets, ends)

	// A new member resumes at the committed offsets and reads to the end.
	left := 0
	for p, end := range ends {
		left += int(end - committed.Offsets[p])
	}
	g3 := &saramaGroupRun{limit: left}
	m3 := joinSarama(t, ctx, kaddr, group, "c3", strategy, g3)
	waitFor(t, 30*time.Second, func() bool { g3.mu.Lock(); defer g3.mu.Unlock(); return len(g3.recs) >= left },
		func() string { return fmt.Sprintf("the new member read %d of the %d records left", len(g3.recs), left) })
	m3.leave(t)
	checkResumed(t, "sarama", g3.recs, committed.Offsets, ends)
}

// saramaSCRAM lets sarama's SCRAM exchange (its framing, over SaslHandshake v0 or v1 and
// SaslAuthenticate) run on franz-go's SCRAM-SHA-256 client messages: sarama leaves the SCRAM
// computation to the caller.
type saramaSCRAM struct {
	user, pass string
	sess       sasl.Session
	done       bool
}

func (s *saramaSCRAM) Begin(user, pass, _ string) error {
	s.user, s.pass = user, pass
	return nil
}

func (s *saramaSCRAM) Step(challenge string) (string, error) {
	if s.sess == nil {
		sess, first, err := scram.Auth{User: s.user, Pass: s.pass}.AsSha256Mechanism().Authenticate(context.Background(), "")
		s.sess = sess
		return string(first), err
	}
	done, resp, err := s.sess.Challenge([]byte(challenge))
	s.done = done
	return string(resp), err
}

func (s *saramaSCRAM) Done() bool { return s.done }

// TestSaramaSASLOverTLS: sarama logs in to central's Kafka listener over TLS with PLAIN and
// SCRAM-SHA-256, password = central's API token, through both of Kafka's SASL framings
// (SaslHandshake v1 with SaslAuthenticate, and v0 with bare tokens), and reads every reading;
// a wrong password is refused: SASL_AUTHENTICATION_FAILED with v1, a closed connection (and a
// refusal in central's log) with v0.
func TestSaramaSASLOverTLS(t *testing.T) {
	ca := testpki.New(t, "kafka")
	certFile, keyFile := ca.ServerCert(t, "central")
	cdir := t.TempDir()
	token := addEdge(t, cdir, "gw-1")
	const apiToken = "analytics-s3cret"
	logs := &lockedBuffer{}
	url, kaddr, stop := runCentralKafka(t, central.Config{DataDir: cdir, TLSCert: certFile, TLSKey: keyFile, APIToken: apiToken,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	defer stop()
	url = "https" + url[len("http"):]
	cl := &consume.Client{BaseURL: url, HTTP: tlsClient(ca, nil), Token: apiToken}
	f := forwardFleet(t, url, ca.File, token, cl, 50, 2000)

	login := func(mech sarama.SASLMechanism, handshake int16, pass string) *sarama.Config {
		cfg := saramaConfig(sarama.DefaultVersion, "sasl")
		cfg.Metadata.Retry.Max = 0
		cfg.Net.TLS.Enable = true
		cfg.Net.TLS.Config = &tls.Config{RootCAs: ca.Pool, ServerName: "127.0.0.1"}
		cfg.Net.SASL.Enable = true
		cfg.Net.SASL.Mechanism = mech
		cfg.Net.SASL.Version = handshake
		cfg.Net.SASL.User, cfg.Net.SASL.Password = "analyst", pass
		if mech == sarama.SASLTypeSCRAMSHA256 {
			cfg.Net.SASL.SCRAMClientGeneratorFunc = func() sarama.SCRAMClient { return &saramaSCRAM{} }
		}
		if handshake == sarama.SASLHandshakeV0 {
			cfg.ApiVersionsRequest = false // sarama's rule for v0
		}
		return cfg
	}
	for _, mech := range []sarama.SASLMechanism{sarama.SASLTypeSCRAMSHA256, sarama.SASLTypePlaintext} {
		for _, hs := range []int16{sarama.SASLHandshakeV1, sarama.SASLHandshakeV0} {
			name := fmt.Sprintf("sarama %s (SaslHandshake v%d)", mech, hs)
			recs, err := saramaRead(t, kaddr, login(mech, hs, apiToken))
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			verifyClientRead(t, name, recs, cl, f)

			refusal := []string{`msg="kafka SASL authentication failed"`, "mechanism=" + string(mech), `reason="wrong user or password"`}
			before := countLogLines(logs.String(), refusal...)
			_, err = saramaRead(t, kaddr, login(mech, hs, "wrong"))
			if err == nil || (hs == sarama.SASLHandshakeV1 && !errors.Is(err, sarama.ErrSASLAuthenticationFailed)) {
				t.Fatalf("%s with a wrong password: %v, want SASL_AUTHENTICATION_FAILED", name, err)
			}
			if n := countLogLines(logs.String(), refusal...); n <= before {
				t.Fatalf("%s with a wrong password failed with %v, but central logged no refused login", name, err)
			}
			t.Logf("%s with a wrong password: %v", name, err)
		}
	}
}
