package kafkaserve

import (
	"context"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tributary-iot/tributary/storage"
)

// encodeRequest frames nothing: it is a request header and body as parseRequest reads them.
func encodeRequest(req kmsg.Request) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(req.Key()))
	b = binary.BigEndian.AppendUint16(b, uint16(req.GetVersion()))
	b = binary.BigEndian.AppendUint32(b, 1)
	b = binary.BigEndian.AppendUint16(b, 4)
	b = append(b, "fuzz"...)
	if req.IsFlexible() {
		b = append(b, 0)
	}
	return req.AppendTo(b)
}

func seedRequests() []kmsg.Request {
	fetch := kmsg.NewPtrFetchRequest()
	fetch.SetVersion(11)
	ft := kmsg.NewFetchRequestTopic()
	ft.Topic = "readings"
	ft.Partitions = append(ft.Partitions, kmsg.NewFetchRequestTopicPartition())
	fetch.Topics = append(fetch.Topics, ft)
	meta := kmsg.NewPtrMetadataRequest()
	meta.SetVersion(12)
	join := kmsg.NewPtrJoinGroupRequest()
	join.SetVersion(9)
	join.Group, join.ProtocolType, join.SessionTimeoutMillis = "g", "consumer", 6000
	join.Protocols = append(join.Protocols, kmsg.JoinGroupRequestProtocol{Name: "range", Metadata: []byte{0, 1}})
	commit := kmsg.NewPtrOffsetCommitRequest()
	commit.SetVersion(8)
	commit.Group, commit.Generation = "g", -1
	ct := kmsg.NewOffsetCommitRequestTopic()
	ct.Topic = "readings"
	ct.Partitions = append(ct.Partitions, kmsg.OffsetCommitRequestTopicPartition{Partition: 0, Offset: 3})
	commit.Topics = append(commit.Topics, ct)
	list := kmsg.NewPtrListOffsetsRequest()
	list.SetVersion(7)
	lt := kmsg.NewListOffsetsRequestTopic()
	lt.Topic = "readings"
	lt.Partitions = append(lt.Partitions, kmsg.ListOffsetsRequestTopicPartition{Timestamp: 5})
	list.Topics = append(list.Topics, lt)
	api := kmsg.NewPtrApiVersionsRequest()
	api.SetVersion(3)
	sasl := kmsg.NewPtrSASLAuthenticateRequest()
	sasl.SASLAuthBytes = []byte("\x00u\x00p")
	return []kmsg.Request{fetch, meta, join, commit, list, api, sasl, kmsg.NewPtrOffsetFetchRequest(), kmsg.NewPtrProduceRequest()}
}

// FuzzRequest feeds arbitrary bytes to the request decoder and the handlers: nothing may panic
// or hang past the request's deadline, and a request that decodes re-encodes to one that
// decodes the same way.
func FuzzRequest(f *testing.F) {
	for _, r := range seedRequests() {
		f.Add(encodeRequest(r))
	}
	log, err := storage.Open(f.TempDir(), nil)
	if err != nil {
		f.Fatal(err)
	}
	defer log.Close()
	st, err := log.CreateStream("readings", storage.StreamConfig{Partitions: 2})
	if err != nil {
		f.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if _, _, err := st.Append(context.Background(), storage.Record{Key: []byte("d"), Value: []byte("{}"), Timestamp: time.UnixMilli(int64(i))}); err != nil {
			f.Fatal(err)
		}
	}
	srv, err := New(Config{Log: log, Users: fuzzUsers{}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		h, req, err := parseRequest(body)
		if err == nil && req != nil && !(h.key == apiVersionsKey && h.version > versions[apiVersionsKey].max) {
			h2, req2, err := parseRequest(encodeRequest(req))
			if err != nil || h2.key != h.key || h2.version != h.version || req2.Key() != req.Key() {
				t.Fatalf("key %d v%d decoded but its re-encoding does not: %v", h.key, h.version, err)
			}
		}
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		for _, authed := range []bool{false, true} {
			cc := &conn{s: srv, c: a, authed: authed, readers: map[partKey]*partReader{}}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			start := time.Now()
			cc.handle(ctx, body)
			cancel()
			if time.Since(start) > 5*time.Second {
				t.Fatalf("a request took %v", time.Since(start))
			}
		}
	})
}

type fuzzUsers struct{}

func (fuzzUsers) Password(user string) (string, bool) { return "p", user == "u" }
