package receive

import (
	"sort"
	"sync/atomic"
	"time"
)

// edgeCalls is what central remembers about one registered edge's calls, so an edge whose token
// is refused shows in `tributary edges` and the metrics instead of only in its own log. It
// exists for registered ids only (created with the registry entry): an unknown id cannot grow it.
type edgeCalls struct {
	lastAccepted atomic.Int64 // unix nanos
	lastRefused  atomic.Int64 // unix nanos
	refused      atomic.Int64
	reason       atomic.Pointer[string]
	version      atomic.Pointer[string] // the build version the edge last sent
}

// Reasons a call is refused with 401, as the metrics label them.
const (
	refusedUnknownEdge = "unknown_edge"
	refusedRevoked     = "revoked"
	refusedWrongToken  = "wrong_token"
	unknownEdgeLabel   = "(unknown)" // not a valid edge id, so it cannot name a real edge
)

// refused counts a call that failed authentication (c is nil for an unknown edge id) and logs
// it, once a minute per edge at most.
func (r *Receiver) refused(id string, c *edgeCalls, revoked bool, remote string) {
	reason, label := refusedUnknownEdge, unknownEdgeLabel
	switch {
	case c != nil && revoked:
		reason, label = refusedRevoked, id
	case c != nil:
		reason, label = refusedWrongToken, id
	}
	r.m.refusedEdges.WithLabelValues(label, reason).Inc()
	now := time.Now().UnixNano()
	last := &r.lastUnknown
	if c != nil {
		c.refused.Add(1)
		c.reason.Store(&reason)
		last = &c.lastRefused
	}
	if now-last.Swap(now) >= int64(time.Minute) {
		r.logger.Warn("edge call refused (401): the edge must use its current token", "edge", id, "reason", reason,
			"remote", remote, "hint", "put the edge's current token in its token file; if lost, `tributary central edges add ID --rotate`")
	}
}

// RefusalInfo is a registered edge whose calls central refused.
type RefusalInfo struct {
	Edge         string    `json:"edge"`
	Refused      int64     `json:"refused_calls"`
	Reason       string    `json:"reason"` // of the last refusal: wrong_token or revoked
	LastRefused  time.Time `json:"last_refused"`
	LastAccepted time.Time `json:"last_accepted,omitzero"`
	// Refusing is true while the edge's last call was refused: it cannot forward.
	Refusing bool `json:"refusing"`
}

// Refusals lists the registered edges central has refused calls from since it started.
func (r *Receiver) Refusals() []RefusalInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []RefusalInfo
	for id, c := range r.calls {
		n := c.refused.Load()
		if n == 0 {
			continue
		}
		ri := RefusalInfo{Edge: id, Refused: n, LastRefused: time.Unix(0, c.lastRefused.Load()).UTC()}
		if p := c.reason.Load(); p != nil {
			ri.Reason = *p
		}
		if t := c.lastAccepted.Load(); t > 0 {
			ri.LastAccepted = time.Unix(0, t).UTC()
		}
		ri.Refusing = c.lastRefused.Load() > c.lastAccepted.Load()
		out = append(out, ri)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Edge < out[j].Edge })
	return out
}

// EdgeVersions returns the build version each registered edge sent with its last accepted call.
func (r *Receiver) EdgeVersions() map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]string{}
	for id, c := range r.calls {
		if v := c.version.Load(); v != nil {
			out[id] = *v
		}
	}
	return out
}

// noteVersion keeps an accepted call's version header: printable ASCII, at most 64 bytes.
func (c *edgeCalls) noteVersion(v string) {
	if v == "" || len(v) > 64 {
		return
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] > 0x7e {
			return
		}
	}
	if old := c.version.Load(); old == nil || *old != v {
		c.version.Store(&v)
	}
}

// refusing tells, for every registered edge, whether its last call was refused.
func (r *Receiver) refusing() map[string]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]bool, len(r.calls))
	for id, c := range r.calls {
		out[id] = c.lastRefused.Load() > c.lastAccepted.Load()
	}
	return out
}
