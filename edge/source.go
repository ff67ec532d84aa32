package edge

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	// paho subscribes to an external broker (Mosquitto, EMQX, a cloud broker) when devices publish
	// there instead of to the embedded broker. It speaks MQTT 3.1.1 only, and its manual acks
	// (SetAutoAckDisabled) are what let a message be acknowledged only after its durable append.
	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/devices/sparkplug"
)

// source subscribes to an external broker with a persistent session (CleanSession false) and
// acks each message only after its append is durable, in the order the messages arrived. If an
// append fails, the connection is dropped without acking, so the broker redelivers.
type source struct {
	agent *Agent
	cfg   SourceConfig
	log   *slog.Logger
	ring  *dedupeRing
	gen   uint32

	queue    chan *sourceItem // ordered acks; its capacity caps messages waiting for their fsync
	failures chan error

	stopOnce   sync.Once
	stopping   chan struct{}
	subscribed atomic.Bool // the broker acknowledged the subscription of the current connection
}

type sourceItem struct {
	msg  paho.Message
	done <-chan struct{}
	err  error
	// dupOf is the stored original of a DUP redelivery: the item completes with it, and done is
	// its doneChan.
	dupOf *result
}

func newSource(a *Agent, cfg SourceConfig) *source {
	ring, gen := a.dedupe.attach("source:" + cfg.ClientID)
	return &source{
		agent: a, cfg: cfg, log: a.logger.With("component", "source", "broker", cfg.Broker),
		ring: ring, gen: gen,
		queue:    make(chan *sourceItem, a.cfg.MaxPendingPerClient),
		failures: make(chan error, 1),
		stopping: make(chan struct{}),
	}
}

// stop makes the handler refuse new messages (not acked: the broker keeps them for the session).
func (s *source) stop() { s.stopOnce.Do(func() { close(s.stopping) }) }

// run connects, and reconnects after append failures, until ctx ends or stop is called.
func (s *source) run(ctx context.Context) error {
	for {
		err := s.session(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-s.stopping:
			return nil
		default:
		}
		s.log.Warn("external broker session ended; reconnecting", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-s.stopping:
			return nil
		case <-time.After(time.Second):
		}
	}
}

// session runs one paho connection until an append fails, ctx ends or stop is called.
func (s *source) session(ctx context.Context) error {
	opts := paho.NewClientOptions().
		AddBroker(s.cfg.Broker).
		SetClientID(s.cfg.ClientID).
		SetUsername(s.cfg.Username).
		SetPassword(s.cfg.Password).
		SetCleanSession(false).
		SetAutoAckDisabled(true).
		SetOrderMatters(true).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(10 * time.Second).
		SetKeepAlive(30 * time.Second)
	// A persistent session's queued messages arrive right after CONNACK, before the subscribe in
	// the connect handler registers its route; paho neither handles nor acks a message without a
	// handler, and mosquitto then stalls the session behind those unacked messages. The default
	// handler takes them.
	opts.SetDefaultPublishHandler(s.handle)
	opts.SetOnConnectHandler(func(c paho.Client) {
		filters := make(map[string]byte, len(s.cfg.Topics))
		for _, t := range s.cfg.Topics {
			filters[t] = s.cfg.QoS
		}
		tok := c.SubscribeMultiple(filters, s.handle)
		go func() {
			if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				s.log.Error("subscribe", "topics", s.cfg.Topics, "err", tok.Error())
				return
			}
			s.subscribed.Store(true)
		}()
		s.log.Info("connected to external broker", "topics", s.cfg.Topics)
	})
	opts.SetConnectionLostHandler(func(_ paho.Client, err error) {
		s.subscribed.Store(false)
		s.log.Warn("external broker connection lost", "err", err)
	})
	client := paho.NewClient(opts)
	client.Connect() // with ConnectRetry it keeps trying in the background

	ackerDone := make(chan error, 1)
	ackerCtx, stopAcker := context.WithCancel(context.Background())
	go func() { ackerDone <- s.acker(ackerCtx) }()

	var err error
	select {
	case <-ctx.Done():
	case <-s.stopping:
	case err = <-ackerDone:
		stopAcker()
		client.Disconnect(0) // drop without acking what follows the failed append
		return err
	}
	// Shutdown: let already-appended messages get their acks out, then leave.
	deadline := time.Now().Add(s.agent.cfg.DrainTimeout)
	for len(s.queue) > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	stopAcker()
	<-ackerDone
	client.Disconnect(250)
	return nil
}

// handle runs on paho's router goroutine for every message, in arrival order.
func (s *source) handle(_ paho.Client, m paho.Message) {
	select {
	case <-s.stopping:
		return // not acked; the broker redelivers to the next session
	default:
	}
	a := s.agent
	a.metrics.receivedQoS[min(m.Qos(), 2)].Inc()
	var route devices.Route
	var err error
	if a.sparkplug != nil && sparkplug.IsTopic(m.Topic()) {
		route, err = a.authorizeSparkplug(nil, m.Topic())
	} else {
		route, err = a.mapper.Map(m.Topic())
	}
	if err != nil {
		// Not a reading under the mapping rules: count it and ack it, redelivering cannot help.
		reason := string(refusalReason(err))
		a.metrics.rejected.WithLabelValues(reason).Inc()
		s.log.Info("source message has no route", "topic", m.Topic(), "reason", reason)
		m.Ack()
		return
	}
	in := inbound{
		route: route, topic: m.Topic(), payload: m.Payload(), clientID: "source:" + s.cfg.ClientID,
		device: route.Key, packetID: m.MessageID(), qos: m.Qos(), receiveTime: time.Now(),
	}
	closed := make(chan struct{})
	item := &sourceItem{msg: m, done: closed}
	done := func(err error) { item.err = err; close(closed) }
	if m.Qos() > 0 {
		in.hash = payloadHash(in.topic, in.payload)
		// Brokers set DUP on every redelivery (Mosquitto does), so only flagged ones are looked up.
		if m.Duplicate() {
			if res := s.ring.resendOf(in.packetID, in.hash, s.gen, true); res != nil {
				// Stored already, or still in its group commit: ack it when the original is
				// durable, without storing it twice.
				a.metrics.resends(true).Inc()
				item.done, item.dupOf = res.doneChan(), res
				s.queue <- item
				return
			}
		}
		res := &result{}
		s.ring.add(in.packetID, in.hash, s.gen, res)
		inner := done
		done = func(err error) { res.complete(err); inner(err) }
	}
	s.queue <- item // blocks when too many wait for their fsync: paces the broker's delivery
	a.ingest(&in, done)
}

// acker acks queued messages in arrival order once durable; it returns the first append error.
func (s *source) acker(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case it := <-s.queue:
			select {
			case <-it.done:
			case <-ctx.Done():
				return nil
			}
			if it.dupOf != nil {
				_, it.err = it.dupOf.outcome()
			}
			if it.err != nil {
				return fmt.Errorf("append message from %s: %w", it.msg.Topic(), it.err)
			}
			it.msg.Ack()
			if it.msg.Qos() > 0 {
				s.agent.metrics.acked.Inc()
			}
		}
	}
}

// sourceSubscribed reports whether the external-broker source holds its subscription.
func (a *Agent) sourceSubscribed() bool { return a.source != nil && a.source.subscribed.Load() }
