package edge

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/devices/format"
	"github.com/tributary-iot/tributary/devices/sparkplug"
	"github.com/tributary-iot/tributary/storage"
)

// inbound is one PUBLISH on its way into the log, from a device or from the external source.
type inbound struct {
	route       devices.Route
	topic       string
	payload     []byte
	clientID    string
	device      string
	packetID    uint16
	qos         byte
	hash        uint64  // set for QoS 1/2
	res         *result // set for QoS 1/2 from a device: told when the payload is refused, completed once stored or failed
	contentType string  // MQTT 5 content type property, if any
	receiveTime time.Time
}

// Edge-side refusal reasons, beside those of devices.
const (
	reasonStreamLimit      devices.Reason = "stream_limit"      // devices asked for more than max_streams streams
	reasonUndeclaredStream devices.Reason = "undeclared_stream" // the topic names a stream the config does not declare
)

var (
	errStreamLimit      = errors.New("too many streams")
	errUndeclaredStream = errors.New("stream is not declared in the edge config (streams:, or undeclared_streams: create)")
)

// maxUndeclaredLogged bounds the memory of (device, topic) pairs already logged as refused for an
// undeclared stream; past it the memory starts over, so a pair may be logged again.
const maxUndeclaredLogged = 1024

// firstUndeclared reports whether a device's publish to a topic of an undeclared stream is the
// first since the memory started: a device retrying a mistyped topic is logged once, counted always.
func (a *Agent) firstUndeclared(device, topic string) bool {
	a.undeclaredMu.Lock()
	defer a.undeclaredMu.Unlock()
	k := device + "\x00" + topic
	if _, ok := a.undeclaredLogged[k]; ok {
		return false
	}
	if a.undeclaredLogged == nil || len(a.undeclaredLogged) >= maxUndeclaredLogged {
		a.undeclaredLogged = map[string]struct{}{}
	}
	a.undeclaredLogged[k] = struct{}{}
	return true
}

// refusalReason is the metric label and log reason of a refused publish.
func refusalReason(err error) devices.Reason {
	if errors.Is(err, errUndeclaredStream) {
		return reasonUndeclaredStream
	}
	if errors.Is(err, sparkplug.ErrInvalidTopic) {
		return devices.ReasonBadTopic
	}
	return devices.ReasonOf(err)
}

// authorize maps a topic for a session and checks it is the device's own, into a declared stream.
func (a *Agent) authorize(s *session, topic string) (devices.Route, error) {
	var route devices.Route
	var err error
	switch {
	case a.sparkplug != nil && sparkplug.IsTopic(topic):
		route, err = a.authorizeSparkplug(s, topic)
	case s.anonymous && a.cfg.AnonymousPublish == "any":
		route, err = a.mapper.Map(topic)
	case s.anonymous:
		route, err = a.mapper.Authorize(s.device, topic)
	default:
		route, err = a.cache.Authorize(s.device, topic)
	}
	if err == nil && a.declared != nil && !a.declared[route.Stream] {
		err = fmt.Errorf("publish to %s: stream %q: %w", topic, route.Stream, errUndeclaredStream)
	}
	return route, err
}

// stream returns the stream named by a route, creating it with the configured partition count.
func (a *Agent) stream(name string) (*streamEntry, error) {
	a.streamsMu.RLock()
	e := a.streams[name]
	a.streamsMu.RUnlock()
	if e != nil {
		return e, nil
	}
	a.streamsMu.Lock()
	defer a.streamsMu.Unlock()
	if e := a.streams[name]; e != nil {
		return e, nil
	}
	if a.declared != nil && !a.declared[name] {
		return nil, fmt.Errorf("stream %q: %w", name, errUndeclaredStream)
	}
	if len(a.streams) >= a.cfg.MaxStreams {
		return nil, fmt.Errorf("create stream %q: %w (max_streams %d)", name, errStreamLimit, a.cfg.MaxStreams)
	}
	s, err := a.log.CreateStream(name, storage.StreamConfig{Partitions: a.cfg.partitions(name)})
	if err != nil {
		return nil, fmt.Errorf("create stream %q: %w", name, err)
	}
	e = &streamEntry{stream: s, policy: a.policy(name)}
	a.streams[name] = e
	a.logger.Info("stream created", "stream", name, "partitions", s.Partitions())
	return e, nil
}

// ingest validates a reading and appends it to its stream, or to the dead-letter stream with the
// reason. in.res, when set, is completed and done, when set, runs once the append is durable (nil
// error) or failed; done runs on a partition's committer goroutine and must not block. ingest
// keeps no reference to in: it copies what the append's callback needs.
func (a *Agent) ingest(in *inbound, done func(error)) {
	if a.sparkplug != nil && sparkplug.IsTopic(in.topic) && in.route.Stream == a.cfg.Sparkplug.Stream {
		spb := *in
		if res := spb.res; res != nil { // ingestSparkplug reports to done only
			spb.res = nil
			inner := done
			done = func(err error) {
				res.complete(err)
				if inner != nil {
					inner(err)
				}
			}
		}
		a.ingestSparkplug(&spb, done)
		return
	}
	target := a.deadLetter
	var policy devices.Policy
	reason := devices.ReasonNone
	e, err := a.stream(in.route.Stream)
	switch {
	case errors.Is(err, errStreamLimit):
		reason = reasonStreamLimit
	case errors.Is(err, errUndeclaredStream):
		reason = reasonUndeclaredStream // from the external source, which cannot be refused
	case err != nil:
		a.failed(in, done, err)
		return
	default:
		target, policy = e.stream, e.policy
	}
	var reading devices.Reading
	if reason == devices.ReasonNone {
		reading, reason = devices.Validate(in.payload, policy)
	}
	sc := recordScratchPool.Get().(*recordScratch)
	rec, buf := a.recordInto(sc.buf, sc.headers, in, reading, reason, policy)
	if reason != devices.ReasonNone {
		target = a.deadLetter
	}
	pa := pendingAppendPool.Get().(*pendingAppend)
	if pa.appended == nil {
		pa.appended = pa.complete
	}
	pa.agent, pa.in, pa.done, pa.reason, pa.detail = a, *in, done, reason, reading.Detail
	// The partition's own AppendAsync: the stream's wraps the callback in a closure per record.
	target.Partition(target.PartitionFor(rec.Key)).AppendAsync(rec, pa.appended)
	sc.put(rec, buf) // AppendAsync copied the record before it returned
}

// pendingAppend is what a reading's append callback needs, from AppendAsync until the append is
// durable or failed. It is pooled with its callback bound once: a closure per reading, with the
// reading it captured, cost two heap allocations per PUBLISH.
type pendingAppend struct {
	agent    *Agent
	in       inbound
	done     func(error)
	reason   devices.Reason
	detail   string
	appended func(offset int64, err error) // complete, bound once
}

var pendingAppendPool = sync.Pool{New: func() any { return new(pendingAppend) }}

// complete runs on the partition's committer goroutine once the append is durable or failed, and
// returns pa to the pool.
func (pa *pendingAppend) complete(_ int64, err error) {
	a, in, done, reason := pa.agent, &pa.in, pa.done, pa.reason
	switch {
	case err != nil:
		a.failed(in, done, err)
	default:
		if reason != devices.ReasonNone {
			a.metrics.deadLetters.WithLabelValues(string(reason)).Inc()
			if in.res != nil && formatReason(reason) {
				msg := string(reason)
				if pa.detail != "" {
					msg += ": " + pa.detail
				}
				in.res.refuse(msg)
			}
		}
		if in.res != nil {
			in.res.complete(nil)
		}
		if done != nil {
			done(nil)
		}
	}
	*pa = pendingAppend{appended: pa.appended} // let go of the reading's topic, payload and result
	pendingAppendPool.Put(pa)
}

// formatReason reports a refusal for a payload that breaks its stream's declared format: MQTT 5
// devices hear of it (PUBACK 0x99). Size and stream-limit refusals keep today's success ack.
func formatReason(r devices.Reason) bool {
	switch r {
	case devices.ReasonNotJSON, devices.ReasonInvalidUTF8, devices.ReasonBadDeviceTime,
		devices.ReasonSchema, devices.ReasonNotProtobuf, devices.ReasonNotAvro:
		return true
	}
	return false
}

func (a *Agent) failed(in *inbound, done func(error), err error) {
	label := "append_error"
	switch {
	case errors.Is(err, storage.ErrFull):
		label = "log_full"
	case errors.Is(err, storage.ErrClosed):
		label = "log_closed"
	case errors.Is(err, storage.ErrRecordTooLarge):
		label = "record_too_large"
	}
	a.metrics.rejected.WithLabelValues(label).Inc()
	a.logger.Warn("reading not stored; the client will resend it", "client", in.clientID, "topic", in.topic, "qos", in.qos, "err", err)
	if in.res != nil {
		in.res.complete(err)
	}
	if done != nil {
		done(err)
	}
}

var (
	contentTypeJSON   = []byte(devices.ContentTypeJSON)
	contentTypeText   = []byte(devices.ContentTypeText)
	contentTypeBinary = []byte(devices.ContentTypeBinary)
)

// record builds the log record of a reading. The key and header values share one buffer.
func (a *Agent) record(in *inbound, r devices.Reading, reason devices.Reason, p devices.Policy) storage.Record {
	rec, _ := a.recordInto(make([]byte, 0, len(in.topic)+len(in.clientID)+len(in.device)+len(reason)+len(r.Detail)+112),
		make([]storage.Header, 0, 12), in, r, reason, p)
	return rec
}

// recordScratch is the buffers of one record, kept for the next reading: storage copies a record
// before AppendAsync returns, so the durable path builds reading after reading in the same ones.
type recordScratch struct {
	buf     []byte
	headers []storage.Header
}

var recordScratchPool = sync.Pool{New: func() any {
	return &recordScratch{buf: make([]byte, 0, 512), headers: make([]storage.Header, 0, 12)}
}}

// put returns sc to the pool with rec's buffers, unless an unusual reading grew them large.
func (sc *recordScratch) put(rec storage.Record, buf []byte) {
	if cap(buf) > 4096 || cap(rec.Headers) > 32 {
		return
	}
	sc.buf, sc.headers = buf[:0], rec.Headers[:0]
	recordScratchPool.Put(sc)
}

// recordInto is record, building in buf and headers (both empty); it returns the buffer as it
// grew, to be reused once the record is appended.
func (a *Agent) recordInto(buf []byte, headers []storage.Header, in *inbound, r devices.Reading, reason devices.Reason, p devices.Policy) (storage.Record, []byte) {
	add := func(key string, start int) {
		headers = append(headers, storage.Header{Key: key, Value: buf[start:len(buf):len(buf)]})
	}
	start := len(buf)
	buf = append(buf, in.topic...)
	add(HeaderTopic, start)
	switch {
	case in.contentType != "":
		start = len(buf)
		buf = append(buf, in.contentType...)
		add(HeaderContentType, start)
	case r.ContentType == devices.ContentTypeJSON:
		headers = append(headers, storage.Header{Key: HeaderContentType, Value: contentTypeJSON})
	case r.ContentType == devices.ContentTypeText:
		headers = append(headers, storage.Header{Key: HeaderContentType, Value: contentTypeText})
	case r.ContentType == devices.ContentTypeBinary:
		headers = append(headers, storage.Header{Key: HeaderContentType, Value: contentTypeBinary})
	}
	if s, ok := p.Schema.(*format.Schema); ok && reason == devices.ReasonNone {
		buf, headers = schemaHeaders(s, buf, headers)
	}
	if !r.DeviceTime.IsZero() {
		start = len(buf)
		buf = strconv.AppendInt(buf, r.DeviceTime.UnixMilli(), 10)
		add(HeaderDeviceTime, start)
	}
	start = len(buf)
	buf = strconv.AppendInt(buf, in.receiveTime.UnixMilli(), 10)
	add(HeaderReceiveTime, start)
	start = len(buf)
	buf = append(buf, in.clientID...)
	add(HeaderClientID, start)
	if in.qos > 0 {
		start = len(buf)
		buf = strconv.AppendUint(buf, uint64(in.packetID), 10)
		add(HeaderPacketID, start)
		start = len(buf)
		buf = appendHash(buf, in.hash)
		add(HeaderPayloadHash, start)
	}
	key := in.route.Key
	value := in.payload
	if reason != devices.ReasonNone {
		if key == "" {
			key = in.device
		}
		start = len(buf)
		buf = append(buf, in.device...)
		add(HeaderDevice, start)
		start = len(buf)
		buf = append(buf, reason...)
		add(HeaderReason, start)
		if r.Detail != "" {
			start = len(buf)
			buf = append(buf, r.Detail...)
			add(HeaderReasonDetail, start)
		}
		if limit := max(p.MaxPayloadBytes, a.cfg.MaxPayloadBytes); len(value) > limit {
			// Keep the dead letter itself bounded: the head shows what the device sent.
			start = len(buf)
			buf = strconv.AppendInt(buf, int64(len(value)), 10)
			add(HeaderPayloadSize, start)
			value = value[:limit]
		}
	}
	start = len(buf)
	buf = append(buf, key...)
	return storage.Record{Key: buf[start:len(buf):len(buf)], Value: value, Timestamp: in.receiveTime, Headers: headers}, buf
}

// httpHandler serves /metrics, /healthz (the process runs) and /readyz (the broker accepts
// readings, every MQTT listener accepts connections, and every log partition takes appends).
func (a *Agent) httpHandler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range a.extraRoutes {
		mux.Handle(rt.pattern, rt.handler)
	}
	mux.Handle("/metrics", promhttp.HandlerFor(a.metrics.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !a.ready.Load() {
			http.Error(w, "not ready: starting or shutting down", http.StatusServiceUnavailable)
			return
		}
		if err := a.listenerProblem(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		if err := a.logProblem(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	return mux
}
