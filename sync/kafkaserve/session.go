package kafkaserve

import (
	"math"
	"math/rand/v2"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Fetch sessions (KIP-227, Fetch v7+). A client that opens a session sends its whole partition
// list once; later ("incremental") requests name only the partitions whose fetch offset or limits
// changed, plus those it stops fetching, and responses hold only the partitions with news
// (records, an error, or a changed high watermark, stable offset or log start). A client that
// does not want a session sends epoch -1 and gets session id 0, which is also the answer when
// this connection holds as many sessions as it may: the client then keeps sending full requests,
// as the KIP specifies.
//
// Sessions live with the connection that opened them. A client that reconnects and names an old
// session gets FETCH_SESSION_ID_NOT_FOUND, and opens a new one.

// maxSessionsPerConn bounds the sessions one connection may hold; a client opens one per broker.
const maxSessionsPerConn = 4

type fetchSession struct {
	id    int32
	epoch int32 // the epoch the next incremental request must carry
	parts []sessionPart
	index map[partKey]int
}

// sessionPart is one partition of a session: what the client last asked for, and what the last
// response told it.
type sessionPart struct {
	topic             string
	req               kmsg.FetchRequestTopicPartition
	hw, lso, logStart int64
	errorCode         int16
	told              bool
}

// beginFetchSession handles the request's session fields. It returns the session the request
// belongs to (nil for a sessionless fetch), whether the request is incremental, and an error
// code for the whole response. An incremental request's partitions are replaced by the session's
// whole list, so the fetch proper needs to know nothing of sessions.
func (cc *conn) beginFetchSession(r *kmsg.FetchRequest) (*fetchSession, bool, int16) {
	if r.Version < 7 {
		return nil, false, 0
	}
	id, epoch := r.SessionID, r.SessionEpoch
	switch {
	case epoch == -1: // sessionless; a session id with it closes that session
		if id != 0 {
			delete(cc.sessions, id)
		}
		return nil, false, 0
	case epoch == 0: // a full request that opens a session (closing the one it names)
		if id != 0 {
			delete(cc.sessions, id)
		}
		if cc.sessions == nil {
			cc.sessions = map[int32]*fetchSession{}
		}
		if len(cc.sessions) >= maxSessionsPerConn {
			return nil, false, 0
		}
		s := &fetchSession{id: cc.newSessionID(), index: map[partKey]int{}} // respond moves it to epoch 1
		s.update(r)
		cc.sessions[s.id] = s
		return s, false, 0
	case epoch < -1:
		return nil, false, kerr.InvalidFetchSessionEpoch.Code
	}
	s := cc.sessions[id]
	if s == nil {
		return nil, false, kerr.FetchSessionIDNotFound.Code
	}
	if epoch != s.epoch {
		return nil, false, kerr.InvalidFetchSessionEpoch.Code
	}
	s.update(r)
	for _, ft := range r.ForgottenTopics {
		for _, p := range ft.Partitions {
			s.forget(partKey{ft.Topic, p})
		}
	}
	// The whole session, grouped by topic in the order partitions joined it.
	r.Topics = r.Topics[:0]
	at := map[string]int{}
	for _, sp := range s.parts {
		i, ok := at[sp.topic]
		if !ok {
			i = len(r.Topics)
			at[sp.topic] = i
			t := kmsg.NewFetchRequestTopic()
			t.Topic = sp.topic
			r.Topics = append(r.Topics, t)
		}
		r.Topics[i].Partitions = append(r.Topics[i].Partitions, sp.req)
	}
	return s, true, 0
}

func (cc *conn) newSessionID() int32 {
	for {
		id := rand.Int32()
		if _, taken := cc.sessions[id]; id != 0 && !taken {
			return id
		}
	}
}

// update adds the request's partitions to the session or refreshes their fetch state.
func (s *fetchSession) update(r *kmsg.FetchRequest) {
	for _, t := range r.Topics {
		for _, p := range t.Partitions {
			k := partKey{t.Topic, p.Partition}
			if i, ok := s.index[k]; ok {
				s.parts[i].req = p
				continue
			}
			s.index[k] = len(s.parts)
			s.parts = append(s.parts, sessionPart{topic: t.Topic, req: p})
		}
	}
}

func (s *fetchSession) forget(k partKey) {
	i, ok := s.index[k]
	if !ok {
		return
	}
	s.parts = append(s.parts[:i], s.parts[i+1:]...)
	delete(s.index, k)
	for j := i; j < len(s.parts); j++ {
		s.index[partKey{s.parts[j].topic, s.parts[j].req.Partition}] = j
	}
}

// respond notes what resp tells the client, drops from an incremental response the partitions
// with nothing new, and moves the session to its next epoch.
func (s *fetchSession) respond(resp *kmsg.FetchResponse, incremental bool) {
	resp.SessionID = s.id
	topics := resp.Topics[:0]
	for _, t := range resp.Topics {
		parts := t.Partitions[:0]
		for _, p := range t.Partitions {
			i, ok := s.index[partKey{t.Topic, p.Partition}]
			if !ok {
				parts = append(parts, p)
				continue
			}
			sp := &s.parts[i]
			news := !sp.told || len(p.RecordBatches) > 0 || p.ErrorCode != 0 || p.ErrorCode != sp.errorCode ||
				p.HighWatermark != sp.hw || p.LastStableOffset != sp.lso || p.LogStartOffset != sp.logStart
			sp.hw, sp.lso, sp.logStart, sp.errorCode, sp.told = p.HighWatermark, p.LastStableOffset, p.LogStartOffset, p.ErrorCode, true
			if news || !incremental {
				parts = append(parts, p)
			}
		}
		if t.Partitions = parts; len(parts) > 0 || !incremental {
			topics = append(topics, t)
		}
	}
	resp.Topics = topics
	if s.epoch == math.MaxInt32 {
		s.epoch = 1
	} else {
		s.epoch++
	}
}
