package kafkaserve

import (
	"sort"

	// kerr names Kafka's error codes.
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const (
	produceKey          = 0
	apiVersionsKey      = 18
	saslHandshakeKey    = 17
	saslAuthenticateKey = 36
)

type versionRange struct{ min, max int16 }

// versions is what ApiVersions advertises. The floors are Kafka 2.1's (record batch v2 everywhere,
// which Kafka 4.0 also requires); the ceilings stop before topic-ID-only Fetch (v13), so every
// request names its topic.
var versions = map[int16]versionRange{
	0:  {3, 9},  // Produce: refused, central is read-only
	1:  {4, 12}, // Fetch
	2:  {1, 7},  // ListOffsets
	3:  {0, 12}, // Metadata
	8:  {2, 8},  // OffsetCommit
	9:  {1, 8},  // OffsetFetch
	10: {0, 4},  // FindCoordinator
	11: {0, 9},  // JoinGroup
	12: {0, 4},  // Heartbeat
	13: {0, 5},  // LeaveGroup
	14: {0, 5},  // SyncGroup
	15: {0, 5},  // DescribeGroups
	16: {0, 4},  // ListGroups
	// SaslHandshake: librdkafka requires v0 in the range before it uses SASL at all; it and most
	// current clients then authenticate with v1 and SaslAuthenticate; kafka-python 2.0 sends v0
	// and its unframed tokens (sasl.go).
	17: {0, 1},
	18: {0, 3}, // ApiVersions
	19: {2, 7}, // CreateTopics: refused
	20: {1, 6}, // DeleteTopics: refused
	21: {0, 2}, // DeleteRecords: refused
	22: {0, 4}, // InitProducerId: refused
	23: {0, 4}, // OffsetForLeaderEpoch
	36: {0, 2}, // SaslAuthenticate
	37: {0, 3}, // CreatePartitions: refused
}

func apiVersions(h header, r *kmsg.ApiVersionsRequest) *kmsg.ApiVersionsResponse {
	resp := r.ResponseKind().(*kmsg.ApiVersionsResponse)
	if h.version > versions[apiVersionsKey].max {
		resp.ErrorCode = kerr.UnsupportedVersion.Code
	}
	keys := make([]int16, 0, len(versions))
	for k := range versions {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	for _, k := range keys {
		v := versions[k]
		resp.ApiKeys = append(resp.ApiKeys, kmsg.ApiVersionsResponseApiKey{ApiKey: k, MinVersion: v.min, MaxVersion: v.max})
	}
	return resp
}

const readOnly = "Tributary central is read-only over Kafka: edges are its only writers. Publish readings to an edge over MQTT."

// refuseWrite answers the write APIs with an error on every item, saying why.
func refuseWrite(req kmsg.Request) kmsg.Response {
	msg := readOnly
	switch r := req.(type) {
	case *kmsg.ProduceRequest:
		resp := r.ResponseKind().(*kmsg.ProduceResponse)
		for _, t := range r.Topics {
			rt := kmsg.NewProduceResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewProduceResponseTopicPartition()
				rp.Partition = p.Partition
				rp.ErrorCode = kerr.PolicyViolation.Code
				rp.ErrorMessage = &msg
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp
	case *kmsg.CreateTopicsRequest:
		resp := r.ResponseKind().(*kmsg.CreateTopicsResponse)
		for _, t := range r.Topics {
			rt := kmsg.NewCreateTopicsResponseTopic()
			rt.Topic = t.Topic
			rt.ErrorCode = kerr.PolicyViolation.Code
			rt.ErrorMessage = &msg
			resp.Topics = append(resp.Topics, rt)
		}
		return resp
	case *kmsg.DeleteTopicsRequest:
		resp := r.ResponseKind().(*kmsg.DeleteTopicsResponse)
		for _, t := range r.TopicNames {
			rt := kmsg.NewDeleteTopicsResponseTopic()
			rt.Topic = &t
			rt.ErrorCode = kerr.PolicyViolation.Code
			rt.ErrorMessage = &msg
			resp.Topics = append(resp.Topics, rt)
		}
		return resp
	case *kmsg.DeleteRecordsRequest:
		resp := r.ResponseKind().(*kmsg.DeleteRecordsResponse)
		for _, t := range r.Topics {
			rt := kmsg.NewDeleteRecordsResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewDeleteRecordsResponseTopicPartition()
				rp.Partition = p.Partition
				rp.LowWatermark = -1
				rp.ErrorCode = kerr.PolicyViolation.Code
				rt.Partitions = append(rt.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp
	case *kmsg.InitProducerIDRequest:
		resp := r.ResponseKind().(*kmsg.InitProducerIDResponse)
		resp.ProducerID, resp.ProducerEpoch = -1, -1
		resp.ErrorCode = kerr.ClusterAuthorizationFailed.Code
		return resp
	case *kmsg.CreatePartitionsRequest:
		resp := r.ResponseKind().(*kmsg.CreatePartitionsResponse)
		for _, t := range r.Topics {
			rt := kmsg.NewCreatePartitionsResponseTopic()
			rt.Topic = t.Topic
			rt.ErrorCode = kerr.PolicyViolation.Code
			rt.ErrorMessage = &msg
			resp.Topics = append(resp.Topics, rt)
		}
		return resp
	}
	return nil
}
