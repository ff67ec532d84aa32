package firmwaresim

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/url"
	"sync"
	"time"

	// paho is the MQTT 3.1.1 client most device firmware ports mirror; one client per simulated
	// device gives each its own connection, client id and credentials, as real devices have.
	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tributary-iot/tributary/devices/sparkplug"
)

// maxConnectFailures bounds how long a device keeps retrying a broker that refuses or is down
// (with backoff up to maxBackoff, about half a minute), so a count-bounded run still ends.
const (
	maxConnectFailures = 10
	firstBackoff       = 100 * time.Millisecond
	maxBackoff         = 5 * time.Second
)

// device is one simulated device: a publisher goroutine that paces and sends readings, an acker
// goroutine that waits for their PUBACKs in publish order, and the current MQTT client, which is
// replaced on every reconnect because paho warns against reusing a disconnected client.
type device struct {
	id         string // the reading's device id, and the key reports and manifests use
	clientID   string // MQTT client id and username: id, or <group>:<node> in Sparkplug mode
	sp         *sparkplugNode
	index      int
	topic      string
	wrongTopic string // another device's topic, for wrong-topic faults
	cfg        *Config
	signal     *Signal
	skew       time.Duration
	rng        *rand.Rand // publisher goroutine only: fault picks
	flakyRng   *rand.Rand // flaky goroutine only

	mu        sync.Mutex // guards client, lost and downUntil
	client    paho.Client
	lost      chan struct{} // closed when the current client's connection is dropped
	downUntil time.Time

	connMu sync.Mutex // guards conn; separate from mu because dial runs while mu is held
	conn   net.Conn

	statsMu sync.Mutex // guards the fields below
	stats   DeviceStats
	acked   seqSet
	latency histogram
}

// pending is a published reading waiting for its PUBACK (QoS 1) or its write (QoS 0).
type pending struct {
	seq  uint64
	tok  paho.Token
	sent time.Time
	lost <-chan struct{} // the publishing client's lost channel
}

// lostGrace is how long the acker still waits for a token after its connection was dropped: an
// ack already in the socket may land, anything else fails within it. Without this bound a publish
// racing the drop can sit in paho until its write timeout.
const lostGrace = 250 * time.Millisecond

func newDevice(cfg *Config, index int, epoch time.Time) *device {
	id := DeviceID(cfg.IDPrefix, index+1)
	other := DeviceID(cfg.IDPrefix, (index+1)%cfg.Devices+1)
	if other == id {
		other = DeviceID(cfg.IDPrefix, index+2) // a one-device fleet borrows a device outside it
	}
	sig := NewSignal(cfg.Seed, id, epoch)
	d := &device{
		id:         id,
		index:      index,
		topic:      ReadingsTopic(id),
		wrongTopic: ReadingsTopic(other),
		cfg:        cfg,
		signal:     sig,
		rng:        rand.New(rand.NewPCG(sig.seed, 1)),
		flakyRng:   rand.New(rand.NewPCG(sig.seed, 2)),
	}
	if s := cfg.Faults.ClockSkew; s > 0 {
		d.skew = time.Duration((2*d.rng.Float64() - 1) * float64(s))
	}
	d.clientID = id
	if sp := cfg.Sparkplug; sp != nil {
		d.sp = &sparkplugNode{cfg: sp, node: id}
		d.clientID = sp.Group + ":" + id
		d.id = SparkplugKey(sp, id)
		d.topic = d.sp.topic(sparkplug.DDATA)
		d.wrongTopic = (&sparkplugNode{cfg: sp, node: other}).topic(sparkplug.DDATA)
		d.signal.device = d.id
	}
	d.stats.Device = d.id
	d.stats.ClockSkew = d.skew
	return d
}

// dial opens the network connection for paho and keeps it, so faults can cut it abruptly (a
// clean MQTT DISCONNECT would not look like a lost link to the broker).
func (d *device) dial(uri *url.URL, opts paho.ClientOptions) (net.Conn, error) {
	dialer := &net.Dialer{Timeout: opts.ConnectTimeout}
	var conn net.Conn
	var err error
	switch uri.Scheme {
	case "tcp", "mqtt":
		conn, err = dialer.Dial("tcp", uri.Host)
	case "ssl", "tls", "mqtts":
		conn, err = tls.DialWithDialer(dialer, "tcp", uri.Host, opts.TLSConfig)
	case "ws", "wss":
		u := *uri
		u.User = nil
		conn, err = paho.NewWebsocket(u.String(), opts.TLSConfig, opts.ConnectTimeout, opts.HTTPHeaders, opts.WebsocketOptions)
	default:
		err = fmt.Errorf("unsupported broker scheme %q", uri.Scheme)
	}
	if err != nil {
		return nil, err
	}
	d.connMu.Lock()
	d.conn = conn
	d.connMu.Unlock()
	return conn, nil
}

// connect makes sure the device has an open connection, connecting a new client if not.
func (d *device) connect(ctx context.Context) (paho.Client, <-chan struct{}, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.client != nil && d.client.IsConnectionOpen() {
		return d.client, d.lost, nil
	}
	if wait := time.Until(d.downUntil); wait > 0 {
		if err := sleep(ctx, wait); err != nil {
			return nil, nil, err
		}
	}
	opts := paho.NewClientOptions().
		AddBroker(d.cfg.Broker).
		SetClientID(d.clientID).
		// A clean session and no automatic reconnect: the simulator decides when to reconnect and
		// never resends a reading, so every duplicate verification finds was made downstream.
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(d.cfg.ConnectTimeout).
		SetWriteTimeout(d.cfg.AckTimeout).
		SetKeepAlive(30 * time.Second).
		SetCustomOpenConnectionFn(d.dial)
	// Without passwords the device connects anonymously, its client id naming it, which a broker
	// on loopback accepts; a username without a password would be refused as an unknown login.
	if d.cfg.Passwords != nil {
		opts.SetUsername(d.clientID)
		opts.SetPassword(d.cfg.Passwords(d.clientID))
	}
	if d.sp != nil {
		// A new connection is a new birth/death pair: the will is this connection's NDEATH.
		d.sp.bdSeq++
		opts.SetBinaryWill(d.sp.topic(sparkplug.NDEATH), d.sp.death(), 1, false)
	}
	if d.cfg.TLS != nil {
		opts.SetTLSConfig(d.cfg.TLS)
	}
	client := paho.NewClient(opts)
	tok := client.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		// The attempt ends within ConnectTimeout; disconnect it then so it does not linger.
		go func() {
			if tok.WaitTimeout(d.cfg.ConnectTimeout) && tok.Error() == nil {
				client.Disconnect(0)
			}
		}()
		return nil, nil, ctx.Err()
	}
	if err := tok.Error(); err != nil {
		d.count(func(s *DeviceStats) { s.ConnectErrors++ })
		return nil, nil, fmt.Errorf("connect %s to %s: %w", d.id, d.cfg.Broker, err)
	}
	if d.sp != nil {
		if err := d.sp.births(client, d.signal.Reading(d.lastSeq(), time.Now().Add(d.skew)), d.cfg.AckTimeout); err != nil {
			client.Disconnect(0)
			d.count(func(s *DeviceStats) { s.ConnectErrors++ })
			return nil, nil, fmt.Errorf("publish the Sparkplug births of %s: %w", d.id, err)
		}
	}
	d.client = client
	d.lost = make(chan struct{})
	d.count(func(s *DeviceStats) { s.Connects++ })
	return client, d.lost, nil
}

// ensureConnected retries connect with backoff; it gives up after maxConnectFailures in a row.
func (d *device) ensureConnected(ctx context.Context) (paho.Client, <-chan struct{}, error) {
	backoff := firstBackoff
	var err error
	for range maxConnectFailures {
		c, lost, cerr := d.connect(ctx)
		if cerr == nil {
			return c, lost, nil
		}
		err = cerr
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		d.cfg.Logger.Warn("device connect failed, retrying", "device", d.id, "backoff", backoff, "err", err)
		if err := sleep(ctx, backoff); err != nil {
			return nil, nil, err
		}
		backoff = min(2*backoff, maxBackoff)
	}
	return nil, nil, fmt.Errorf("give up after %d connection attempts: %w", maxConnectFailures, err)
}

// drop cuts the device's connection as a lost link would, and keeps it down for downtime.
// The abandoned client fails its outstanding tokens ("connection lost"), so those readings are
// counted as unacked.
func (d *device) drop(downtime time.Duration) {
	// Holding mu while closing keeps a concurrent connect from installing a new conn that this
	// drop would then close instead of the old one.
	d.mu.Lock()
	had := d.client != nil
	d.client = nil
	if d.lost != nil {
		close(d.lost)
		d.lost = nil
	}
	d.downUntil = time.Now().Add(downtime)
	d.connMu.Lock()
	if d.conn != nil {
		d.conn.Close()
		d.conn = nil
	}
	d.connMu.Unlock()
	d.mu.Unlock()
	if had {
		d.count(func(s *DeviceStats) { s.InjectedDisconnects++ })
	}
}

// disconnect ends the run's connection cleanly.
func (d *device) disconnect() {
	d.mu.Lock()
	c := d.client
	d.client = nil
	d.mu.Unlock()
	if c != nil && c.IsConnectionOpen() {
		if d.sp != nil {
			// A clean DISCONNECT discards the will, so the node says NDEATH itself.
			c.Publish(d.sp.topic(sparkplug.NDEATH), 1, false, d.sp.death()).WaitTimeout(d.cfg.AckTimeout)
		}
		c.Disconnect(250)
	}
}

func (d *device) lastSeq() uint64 {
	d.statsMu.Lock()
	defer d.statsMu.Unlock()
	return d.stats.LastSeq
}

func (d *device) count(f func(*DeviceStats)) {
	d.statsMu.Lock()
	f(&d.stats)
	d.statsMu.Unlock()
}

// publish runs the device's publish loop until its count is reached or ctx ends, then closes out.
// inflight bounds unacked readings; faults tracks the goroutines waiting on faulty publishes.
func (d *device) publish(ctx context.Context, start time.Time, out chan<- pending, inflight chan struct{}, faults *sync.WaitGroup, drained <-chan struct{}) error {
	defer close(out)
	rate := d.cfg.perDeviceRate()
	var interval, phase time.Duration
	if rate > 0 {
		interval = time.Duration(float64(time.Second) / rate)
		// Spread devices over one interval so a fleet does not publish in lockstep.
		phase = time.Duration(d.rng.Float64() * float64(interval))
	}
	count := d.cfg.Count
	if count == 0 {
		count = math.MaxUint64
	}
	// Faults take slots without advancing seq; with their fractions capped at 0.5 this bound is
	// never reached in practice, but it keeps the loop finite whatever the random draws.
	maxSlots := count
	if count < math.MaxUint64/4 {
		maxSlots = 4*count + 100
	}
	buf := make([]byte, 0, 256)
	var seq uint64
	for slot := uint64(0); seq < count && slot < maxSlots; slot++ {
		if interval > 0 {
			due := start.Add(phase + time.Duration(slot)*interval)
			if err := sleep(ctx, time.Until(due)); err != nil {
				return nil
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		fault := d.pickFault()
		if fault == "" {
			select {
			case inflight <- struct{}{}:
			case <-ctx.Done():
				return nil
			}
		}
		client, lost, err := d.ensureConnected(ctx)
		if err != nil {
			if fault == "" {
				<-inflight
			}
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("device %s: %w", d.id, err)
		}
		now := time.Now()
		deviceTime := now.Add(d.skew)
		if fault != "" {
			d.publishFault(client, fault, deviceTime, faults, drained)
			continue
		}
		seq++
		r := d.signal.Reading(seq, deviceTime)
		var payload []byte
		if d.sp != nil {
			skip := d.cfg.Sparkplug.SkipFraction > 0 && d.rng.Float64() < d.cfg.Sparkplug.SkipFraction
			if skip {
				d.count(func(s *DeviceStats) { s.SeqSkipped++ })
			}
			payload = d.sp.data(r, skip)
		} else {
			buf = r.padTo(buf, d.cfg.PayloadSize)
			// paho keeps the slice until it is written, so each publish gets its own copy.
			payload = append([]byte(nil), buf...)
		}
		tok := client.Publish(d.topic, d.cfg.QoS, false, payload)
		d.count(func(s *DeviceStats) { s.Offered++; s.LastSeq = seq; s.Bytes += uint64(len(payload)) })
		out <- pending{seq: seq, tok: tok, sent: now, lost: lost}
	}
	return nil
}

func (d *device) pickFault() string {
	f := d.cfg.Faults
	x := d.rng.Float64()
	switch {
	case x < f.MalformedFraction:
		return FaultMalformed
	case x < f.MalformedFraction+f.OversizedFraction:
		return FaultOversized
	case x < f.MalformedFraction+f.OversizedFraction+f.WrongTopicFraction:
		return FaultWrongTopic
	}
	return ""
}

// faultPayload builds the payload and topic of a faulty publish. Faulty readings carry seq 0 and a
// "fault" field so verification can tell them from the device's sequence if a broker lets them in.
func (d *device) faultPayload(kind string, deviceTime time.Time) (topic string, payload []byte) {
	r := d.signal.Reading(0, deviceTime)
	r.Fault = kind
	switch kind {
	case FaultMalformed:
		// A reading cut in half: what a firmware buffer overrun or a torn write produces. Any
		// proper prefix of a JSON object is invalid JSON.
		full := r.AppendJSON(nil)
		return d.topic, full[:len(full)/2]
	case FaultOversized:
		return d.topic, r.padTo(nil, d.cfg.Faults.OversizedBytes)
	default: // FaultWrongTopic
		return d.wrongTopic, r.AppendJSON(nil)
	}
}

func (d *device) publishFault(client paho.Client, kind string, deviceTime time.Time, faults *sync.WaitGroup, drained <-chan struct{}) {
	topic, payload := d.faultPayload(kind, deviceTime)
	tok := client.Publish(topic, d.cfg.QoS, false, payload)
	d.count(func(s *DeviceStats) {
		if s.Faults == nil {
			s.Faults = make(map[string]uint64)
		}
		s.Faults[kind]++
	})
	// A broker that refuses a faulty publish may never ack it; waiting here would stall the
	// in-order acker, so each faulty publish is watched on its own, bounded by AckTimeout.
	faults.Go(func() {
		timer := time.NewTimer(d.cfg.AckTimeout)
		defer timer.Stop()
		select {
		case <-tok.Done():
			if tok.Error() == nil && d.cfg.QoS == 1 {
				d.count(func(s *DeviceStats) { s.FaultsAcked++ })
			}
		case <-timer.C:
		case <-drained:
		}
	})
}

// ack waits for each published reading's completion, in publish order, until in is closed.
// PUBACKs arrive in publish order on one connection, so waiting in order delays none of them; the
// latency recorded is from Publish to when the acker saw the token complete. A reading whose
// connection was dropped is handed to a straggler goroutine for its grace period, so it does not
// hold up (and inflate the latency of) readings already acked on the next connection.
func (d *device) ack(in <-chan pending, inflight <-chan struct{}, drained <-chan struct{}, stragglers *sync.WaitGroup) {
	for p := range in {
		timer := time.NewTimer(time.Until(p.sent.Add(d.cfg.AckTimeout)))
		select {
		case <-p.tok.Done():
			d.settle(p, "", inflight)
		case <-timer.C:
			d.settle(p, "timeout", inflight)
		case <-drained:
			d.settle(p, "pending-at-stop", inflight)
		case <-p.lost:
			stragglers.Go(func() {
				grace := time.NewTimer(lostGrace)
				defer grace.Stop()
				select {
				case <-p.tok.Done():
				case <-grace.C:
				case <-drained:
				}
				d.settle(p, "connection-lost", inflight)
			})
		}
		timer.Stop()
	}
}

// settle accounts for one reading: acked or written if its token completed without error,
// otherwise by the token's error or, if it never completed, by why the wait ended.
func (d *device) settle(p pending, notDone string, inflight <-chan struct{}) {
	now := time.Now()
	outcome := notDone
	if isDone(p.tok) { // a completed token wins over a deadline that fired with it
		outcome = ""
		if err := p.tok.Error(); err != nil {
			outcome = "error"
			if errors.Is(err, paho.ErrNotConnected) {
				outcome = "not-connected"
			}
		}
	}
	<-inflight
	d.statsMu.Lock()
	defer d.statsMu.Unlock()
	switch {
	case outcome == "" && d.cfg.QoS == 1:
		d.stats.Acked++
		d.acked.add(p.seq)
		d.latency.record(now.Sub(p.sent))
	case outcome == "":
		d.stats.Written++
	default:
		if d.cfg.QoS == 1 {
			d.stats.Unacked++
		}
		if d.stats.Errors == nil {
			d.stats.Errors = make(map[string]uint64)
		}
		d.stats.Errors[outcome]++
	}
}

func isDone(tok paho.Token) bool { return isClosed(tok.Done()) }

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// flaky cuts the device's link at random, on average once per FlakyMeanInterval, until ctx ends.
func (d *device) flaky(ctx context.Context) {
	mean := d.cfg.Faults.FlakyMeanInterval
	for {
		wait := time.Duration(d.flakyRng.ExpFloat64() * float64(mean))
		if err := sleep(ctx, wait); err != nil {
			return
		}
		d.cfg.Logger.Debug("flaky link: dropping connection", "device", d.id)
		d.drop(d.cfg.Faults.FlakyDowntime)
	}
}

// sleep waits for d or until ctx ends, whichever is first; it returns ctx's error if ctx ended.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
