package edge

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/devices/sparkplug"
	"github.com/tributary-iot/tributary/storage"
)

// SparkplugConfig configures Sparkplug B ingest: edge nodes publish protobuf payloads to
// spBv1.0/<group>/<type>/<node>[/<device>], and the agent, acting as their host application,
// stores each message as JSON with aliases resolved from the node's last birth.
type SparkplugConfig struct {
	// Stream receives every Sparkplug message; default "sparkplug", "off" disables Sparkplug
	// ingest (spBv1.0 topics then go through the mapping rules like any other).
	Stream string `yaml:"stream"`
	// Partitions of the stream when it is created; default default_partitions.
	Partitions int `yaml:"partitions"`
	// RequestRebirth makes the agent send the node an NCMD with "Node Control/Rebirth" = true
	// after a seq gap, an unknown alias, or data from a node whose birth it has not seen, as a
	// Sparkplug host application does. Off by default: a site whose SCADA host already asks for
	// rebirths does not need a second one.
	RequestRebirth bool `yaml:"request_rebirth"`
	// RebirthInterval is the least time between two rebirth requests to one node; default 10s.
	RebirthInterval time.Duration `yaml:"rebirth_interval"`
}

// Sparkplug defaults.
const (
	DefaultSparkplugStream  = "sparkplug"
	DefaultRebirthInterval  = 10 * time.Second
	sparkplugMetaNamespace  = "sparkplug-aliases"
	reasonNotSparkplug      = devices.Reason("not_sparkplug")   // payload on a spBv1.0 topic is not a Sparkplug B payload
	reasonSparkplugLimit    = devices.Reason("sparkplug_limit") // too many nodes or aliases
	reasonSparkplugSeq      = "sparkplug_seq"                   // gap marker reason
	headerSparkplugGap      = "sparkplug-gap"                   // gap marker records: the reason
	headerSparkplugExpected = "sparkplug-expected-seq"
)

func (c SparkplugConfig) withDefaults(defaultPartitions int) SparkplugConfig {
	if c.Stream == "" {
		c.Stream = DefaultSparkplugStream
	}
	if c.Partitions <= 0 {
		c.Partitions = defaultPartitions
	}
	if c.RebirthInterval <= 0 {
		c.RebirthInterval = DefaultRebirthInterval
	}
	return c
}

func (c SparkplugConfig) enabled() bool { return c.Stream != "off" }

func (c SparkplugConfig) validate() error {
	if !c.enabled() {
		return nil
	}
	if err := devices.CheckStream(c.Stream); err != nil {
		return fmt.Errorf("sparkplug.stream: %w", err)
	}
	if c.Stream == devices.DeadLetterStream {
		return fmt.Errorf("sparkplug.stream: %q is written by the edge only", c.Stream)
	}
	return nil
}

// sparkplugIngest is the agent's Sparkplug host: alias tables kept in the log's metadata, and
// the rebirth requests it has sent.
type sparkplugIngest struct {
	cfg  SparkplugConfig
	host *sparkplug.Host

	rebirthMu   sync.Mutex
	lastRebirth map[string]time.Time // node key → last request

	messages       *prometheus.CounterVec
	seqGaps        prometheus.Counter
	missing        prometheus.Counter
	unknownAliases prometheus.Counter
	rebirths       prometheus.Counter
}

// metaAliases keeps alias tables in the edge log's meta.db (bbolt): written once per birth, so a
// restarted agent still resolves the aliases of data that follows a birth it stored before.
type metaAliases struct{ log *storage.Log }

func (m metaAliases) LoadAliases(node string) ([]byte, error) {
	return m.log.Meta(sparkplugMetaNamespace, node)
}

func (m metaAliases) SaveAliases(node string, table []byte) error {
	return m.log.SetMeta(sparkplugMetaNamespace, node, table)
}

func newSparkplugIngest(cfg SparkplugConfig, l *storage.Log, r *prometheus.Registry, deadLetters *prometheus.CounterVec) *sparkplugIngest {
	s := &sparkplugIngest{
		cfg: cfg, host: sparkplug.NewHost(metaAliases{l}), lastRebirth: map[string]time.Time{},
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tributary_edge_sparkplug_messages_total",
			Help: "Sparkplug B messages stored, by message type.",
		}, []string{"type"}),
		seqGaps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tributary_edge_sparkplug_seq_gaps_total",
			Help: "Sparkplug seq gaps: a node's message did not follow its previous one; each is a gap marker record with reason sparkplug_seq.",
		}),
		missing: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tributary_edge_sparkplug_missing_messages_total",
			Help: "Sparkplug messages the seq gaps say were lost before they reached the edge.",
		}),
		unknownAliases: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tributary_edge_sparkplug_unknown_aliases_total",
			Help: "Sparkplug data metrics whose alias no stored birth named (stored with an empty name).",
		}),
		rebirths: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tributary_edge_sparkplug_rebirth_requests_total",
			Help: "NCMD Node Control/Rebirth requests sent to nodes (sparkplug.request_rebirth).",
		}),
	}
	for _, t := range []sparkplug.MessageType{sparkplug.NBIRTH, sparkplug.NDATA, sparkplug.NDEATH, sparkplug.DBIRTH, sparkplug.DDATA, sparkplug.DDEATH} {
		s.messages.WithLabelValues(string(t))
	}
	deadLetters.WithLabelValues(string(reasonNotSparkplug))
	deadLetters.WithLabelValues(string(reasonSparkplugLimit))
	r.MustRegister(s.messages, s.seqGaps, s.missing, s.unknownAliases, s.rebirths)
	return s
}

// authorizeSparkplug routes a spBv1.0 topic into the Sparkplug stream, keyed by
// <group>/<node>[/<device>], if the session may publish as that node: its device id is
// <group>:<node>, or one of its extra topic filters matches. Anonymous clients follow
// anonymous_publish as for other topics.
func (a *Agent) authorizeSparkplug(s *session, topic string) (devices.Route, error) {
	t, err := sparkplug.ParseTopic(topic)
	if err != nil {
		return devices.Route{}, err
	}
	route := devices.Route{Stream: a.cfg.Sparkplug.Stream, Key: t.Key()}
	switch {
	case s == nil: // the external source: its broker authorized the publisher
	case s.anonymous && a.cfg.AnonymousPublish == "any":
	case s.anonymous:
		if s.device != t.Owner() {
			return devices.Route{}, fmt.Errorf("authorize device %q for topic %q: %w: the topic belongs to device %q", s.device, topic, devices.ErrNotAuthorized, t.Owner())
		}
	default:
		if err := a.cache.AuthorizeOwned(s.device, t.Owner(), topic); err != nil {
			return devices.Route{}, err
		}
	}
	return route, nil
}

// sparkplugSubscribeAllowed lets a node subscribe to the commands a host sends it,
// spBv1.0/<group>/NCMD/<node> and spBv1.0/<group>/DCMD/<node>/..., when it may publish as that
// node; allow_subscribe is not needed, as commands are part of the protocol.
func (a *Agent) sparkplugSubscribeAllowed(s *session, filter string) bool {
	levels := strings.Split(filter, "/")
	if len(levels) < 4 || levels[0] != sparkplug.Namespace {
		return false
	}
	group, typ, node := levels[1], levels[2], levels[3]
	if strings.ContainsAny(group+node, "+#") || group == "" || node == "" {
		return false
	}
	switch {
	case typ == string(sparkplug.NCMD) && (len(levels) == 4 || len(levels) == 5 && levels[4] == "#"):
	case typ == string(sparkplug.DCMD) && len(levels) == 5 && levels[4] != "":
	default:
		return false
	}
	_, err := a.authorizeSparkplug(s, sparkplug.Namespace+"/"+group+"/"+string(sparkplug.NBIRTH)+"/"+node)
	return err == nil
}

// ingestSparkplug decodes a Sparkplug message, resolves its aliases, checks its seq and appends
// it as JSON; a payload that is not Sparkplug B goes to the dead-letter stream with its reason.
func (a *Agent) ingestSparkplug(in *inbound, done func(error)) {
	sp := a.sparkplug
	t, err := sparkplug.ParseTopic(in.topic)
	if err != nil { // authorize parsed it already
		a.failed(in, done, err)
		return
	}
	e, err := a.stream(in.route.Stream)
	if err != nil {
		a.failed(in, done, err)
		return
	}
	reason := devices.ReasonNone
	var res sparkplug.Result
	reading := devices.Reading{ContentType: devices.ContentTypeJSON}
	switch {
	case len(in.payload) > max(e.policy.MaxPayloadBytes, a.cfg.MaxPayloadBytes):
		reason = devices.ReasonOversized
	default:
		p, err := sparkplug.Decode(in.payload)
		if err != nil {
			reason = reasonNotSparkplug
			break
		}
		res, err = sp.host.Process(t, p)
		switch {
		case errors.Is(err, sparkplug.ErrTooManyAliases), errors.Is(err, sparkplug.ErrTooManyNodes):
			reason = reasonSparkplugLimit
		case err != nil:
			// The birth's aliases could not be saved: not acked, so the node sends it again.
			a.failed(in, done, err)
			return
		}
		if p.Timestamp != nil {
			reading.DeviceTime = time.UnixMilli(int64(p.GetTimestamp())).UTC()
		}
	}
	if reason != devices.ReasonNone {
		a.logger.Info("Sparkplug message dead-lettered", "client", in.clientID, "topic", in.topic, "reason", reason)
		a.ingestRecord(in, a.deadLetter, a.record(in, devices.Reading{}, reason, e.policy), reason, done)
		return
	}
	if res.Gap != nil {
		a.sparkplugGap(in, t, e.stream, res.Gap)
	}
	if res.UnknownAliases > 0 {
		sp.unknownAliases.Add(float64(res.UnknownAliases))
	}
	if res.Rebirth && sp.cfg.RequestRebirth {
		a.requestRebirth(t)
	}
	sp.messages.WithLabelValues(string(t.Type)).Inc()
	rec := a.record(in, reading, devices.ReasonNone, e.policy)
	rec.Value = res.JSON
	a.ingestRecord(in, e.stream, rec, devices.ReasonNone, done)
}

// ingestRecord appends a built record and reports it to done, as ingest does.
func (a *Agent) ingestRecord(in *inbound, target *storage.Stream, rec storage.Record, reason devices.Reason, done func(error)) {
	target.AppendAsync(rec, func(_ int, _ int64, err error) {
		if err != nil {
			a.failed(in, done, err)
			return
		}
		if reason != devices.ReasonNone {
			a.metrics.deadLetters.WithLabelValues(string(reason)).Inc()
		}
		if done != nil {
			done(nil)
		}
	})
}

// sparkplugGap stores a gap marker: a record keyed by the node, before the message that showed
// the gap, with reason sparkplug_seq. Storage's own gaps name offsets of the edge log that will
// never be read; these messages never reached the edge, so no offset is missing, and the marker
// travels to central in the node's order like any record.
func (a *Agent) sparkplugGap(in *inbound, t sparkplug.Topic, s *storage.Stream, g *sparkplug.Gap) {
	sp := a.sparkplug
	sp.seqGaps.Inc()
	sp.missing.Add(float64(g.Missing))
	a.logger.Warn("Sparkplug seq gap: messages of the node were lost before the edge", "node", t.NodeKey(),
		"expected_seq", g.Expected, "seq", g.Got, "missing", g.Missing, "topic", in.topic)
	value := fmt.Appendf(nil, `{"gap":%q,"group":%q,"node":%q,"expected_seq":%d,"seq":%d,"missing":%d,"topic":%q}`,
		reasonSparkplugSeq, t.Group, t.Node, g.Expected, g.Got, g.Missing, in.topic)
	rec := storage.Record{Key: []byte(t.NodeKey()), Value: value, Timestamp: in.receiveTime, Headers: []storage.Header{
		{Key: HeaderTopic, Value: []byte(in.topic)},
		{Key: HeaderContentType, Value: contentTypeJSON},
		{Key: HeaderReceiveTime, Value: fmt.Appendf(nil, "%d", in.receiveTime.UnixMilli())},
		{Key: headerSparkplugGap, Value: []byte(reasonSparkplugSeq)},
		{Key: headerSparkplugExpected, Value: fmt.Appendf(nil, "%d", g.Expected)},
	}}
	s.AppendAsync(rec, func(_ int, _ int64, err error) {
		if err != nil {
			a.logger.Warn("Sparkplug gap marker not stored; the gap is still counted", "node", t.NodeKey(), "err", err)
		}
	})
}

// requestRebirth publishes NCMD Node Control/Rebirth = true to the node through the embedded
// broker, at most once per rebirth_interval per node.
func (a *Agent) requestRebirth(t sparkplug.Topic) {
	sp := a.sparkplug
	now := time.Now()
	sp.rebirthMu.Lock()
	if last, ok := sp.lastRebirth[t.NodeKey()]; ok && now.Sub(last) < sp.cfg.RebirthInterval {
		sp.rebirthMu.Unlock()
		return
	}
	if len(sp.lastRebirth) >= sparkplug.MaxNodes {
		clear(sp.lastRebirth)
	}
	sp.lastRebirth[t.NodeKey()] = now
	sp.rebirthMu.Unlock()
	payload, err := sparkplug.RebirthRequest(uint64(now.UnixMilli()))
	if err == nil {
		// QoS 0, not retained: Sparkplug 3.0 sends NCMD that way.
		err = a.server.Publish(t.CommandTopic(), payload, false, 0)
	}
	if err != nil {
		a.logger.Warn("Sparkplug rebirth request not sent", "node", t.NodeKey(), "err", err)
		return
	}
	sp.rebirths.Inc()
	a.logger.Info("Sparkplug rebirth requested", "node", t.NodeKey(), "topic", t.CommandTopic())
}
