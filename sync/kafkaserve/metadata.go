package kafkaserve

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"strconv"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tributary-iot/tributary/storage"
)

// topicID is a stable Kafka topic ID for a stream: the first 16 bytes of SHA-256 of its name.
// Streams are never recreated under the same name with other data, so the name identifies it.
func topicID(name string) [16]byte {
	sum := sha256.Sum256([]byte("tributary stream " + name))
	var id [16]byte
	copy(id[:], sum[:16])
	return id
}

// advertised is the broker address Metadata gives: the configured one, or the address this
// client connected to, which is right for every client that reached us directly.
func (cc *conn) advertised() (string, int32) {
	addr := cc.s.cfg.Advertise
	if addr == "" {
		addr = cc.c.LocalAddr().String()
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr, 9092
	}
	p, _ := strconv.Atoi(port)
	return host, int32(p)
}

func (cc *conn) metadata(r *kmsg.MetadataRequest) *kmsg.MetadataResponse {
	resp := r.ResponseKind().(*kmsg.MetadataResponse)
	host, port := cc.advertised()
	b := kmsg.NewMetadataResponseBroker()
	b.NodeID, b.Host, b.Port = brokerID, host, port
	resp.Brokers = append(resp.Brokers, b)
	cid := clusterID
	resp.ClusterID = &cid
	resp.ControllerID = brokerID
	log := cc.s.cfg.Log
	add := func(st *storage.Stream) {
		t := kmsg.NewMetadataResponseTopic()
		name := st.Name()
		t.Topic = &name
		t.TopicID = topicID(name)
		for i := 0; i < st.Partitions(); i++ {
			p := kmsg.NewMetadataResponseTopicPartition()
			p.Partition = int32(i)
			p.Leader = brokerID
			p.LeaderEpoch = leaderEpoch // one epoch ever: a single broker never changes leader
			p.Replicas = []int32{brokerID}
			p.ISR = []int32{brokerID}
			t.Partitions = append(t.Partitions, p)
		}
		resp.Topics = append(resp.Topics, t)
	}
	if r.Topics == nil || (r.Version == 0 && len(r.Topics) == 0) {
		for _, st := range log.Streams() {
			add(st)
		}
		return resp
	}
	for _, rt := range r.Topics {
		var name string
		if rt.Topic != nil {
			name = *rt.Topic
		} else {
			name = cc.s.topicByID(rt.TopicID)
		}
		if st, err := log.Stream(name); err == nil {
			add(st)
			continue
		}
		t := kmsg.NewMetadataResponseTopic()
		t.Topic = rt.Topic
		t.TopicID = rt.TopicID
		t.ErrorCode = kerr.UnknownTopicOrPartition.Code
		resp.Topics = append(resp.Topics, t)
	}
	return resp
}

func (s *Server) topicByID(id [16]byte) string {
	for _, st := range s.cfg.Log.Streams() {
		if topicID(st.Name()) == id {
			return st.Name()
		}
	}
	return ""
}

// partition resolves a topic and partition, or returns the Kafka error for them.
func (s *Server) partition(topic string, partition int32) (*storage.Partition, *kerr.Error) {
	st, err := s.cfg.Log.Stream(topic)
	if err != nil {
		return nil, kerr.UnknownTopicOrPartition
	}
	if partition < 0 || int(partition) >= st.Partitions() {
		return nil, kerr.UnknownTopicOrPartition
	}
	return st.Partition(int(partition)), nil
}

func (cc *conn) listOffsets(r *kmsg.ListOffsetsRequest) *kmsg.ListOffsetsResponse {
	resp := r.ResponseKind().(*kmsg.ListOffsetsResponse)
	for _, rt := range r.Topics {
		t := kmsg.NewListOffsetsResponseTopic()
		t.Topic = rt.Topic
		for _, rp := range rt.Partitions {
			p := kmsg.NewListOffsetsResponseTopicPartition()
			p.Partition = rp.Partition
			p.Timestamp, p.Offset, p.LeaderEpoch = -1, -1, -1
			part, kerrv := cc.s.partition(rt.Topic, rp.Partition)
			if kerrv == nil && r.Version >= 4 && rp.CurrentLeaderEpoch > leaderEpoch {
				kerrv = kerr.UnknownLeaderEpoch
			}
			if kerrv != nil {
				p.ErrorCode = kerrv.Code
				t.Partitions = append(t.Partitions, p)
				continue
			}
			switch ts := rp.Timestamp; {
			case ts == -1: // latest
				p.Offset = part.EndOffset()
			case ts == -2: // earliest
				p.Offset = part.StartOffset()
			case ts == -3: // the record with the largest timestamp (v7)
				p.Offset, p.Timestamp = maxTimestampOffset(part)
			case ts >= 0:
				off, found, err := seekTime(part, ts)
				if err != nil {
					p.ErrorCode = kerr.KafkaStorageError.Code
				} else {
					p.Offset = off
					if found >= 0 {
						p.Timestamp = found
					}
				}
			default:
				p.ErrorCode = kerr.InvalidRequest.Code
			}
			if r.Version == 0 && p.Offset >= 0 {
				p.OldStyleOffsets = []int64{p.Offset}
			}
			if p.ErrorCode == 0 && p.Offset >= 0 {
				p.LeaderEpoch = leaderEpoch
			}
			t.Partitions = append(t.Partitions, p)
		}
		resp.Topics = append(resp.Topics, t)
	}
	return resp
}

// seekTime finds Kafka's answer for a timestamp: the first offset whose record's timestamp is
// at or after ts, and that timestamp; past every record it is the end offset and -1. Segments
// whose newest record is older than ts are skipped without reading them.
func seekTime(p *storage.Partition, ts int64) (offset, found int64, err error) {
	from := p.StartOffset()
	for _, seg := range p.Segments() {
		if seg.MaxTime < ts && seg.Next > from {
			from = seg.Next
			continue
		}
		break
	}
	r := p.NewReader(from, &storage.ReaderOptions{ReadBytes: 256 << 10})
	for {
		e, err := r.Next(context.Background())
		if errors.Is(err, io.EOF) {
			return p.EndOffset(), -1, nil
		}
		if err != nil {
			return 0, 0, err
		}
		if e.Gap == nil && e.Timestamp.UnixMilli() >= ts {
			return e.Offset, e.Timestamp.UnixMilli(), nil
		}
	}
}

// maxTimestampOffset is the offset of the newest-stamped record, found by reading the segment
// that holds it.
func maxTimestampOffset(p *storage.Partition) (offset, ts int64) {
	best := storage.SegmentInfo{MaxTime: -1}
	for _, seg := range p.Segments() {
		if seg.Next > seg.Base && seg.MaxTime > best.MaxTime {
			best = seg
		}
	}
	if best.MaxTime < 0 {
		return -1, -1
	}
	r := p.NewReader(best.Base, &storage.ReaderOptions{ReadBytes: 256 << 10})
	offset, ts = -1, -1
	for {
		e, err := r.Next(context.Background())
		if err != nil || e.Offset >= best.Next {
			return offset, ts
		}
		if e.Gap == nil && e.Timestamp.UnixMilli() > ts {
			offset, ts = e.Offset, e.Timestamp.UnixMilli()
		}
	}
}

func (cc *conn) findCoordinator(r *kmsg.FindCoordinatorRequest) *kmsg.FindCoordinatorResponse {
	resp := r.ResponseKind().(*kmsg.FindCoordinatorResponse)
	host, port := cc.advertised()
	if r.Version < 4 {
		resp.NodeID, resp.Host, resp.Port = brokerID, host, port
		if r.CoordinatorType != 0 {
			resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
			msg := "only consumer group coordinators: central has no transactions"
			resp.ErrorMessage = &msg
		}
		return resp
	}
	for _, key := range r.CoordinatorKeys {
		c := kmsg.NewFindCoordinatorResponseCoordinator()
		c.Key, c.NodeID, c.Host, c.Port = key, brokerID, host, port
		if r.CoordinatorType != 0 {
			c.ErrorCode = kerr.CoordinatorNotAvailable.Code
		}
		resp.Coordinators = append(resp.Coordinators, c)
	}
	return resp
}
