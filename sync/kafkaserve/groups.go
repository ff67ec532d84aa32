package kafkaserve

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tributary-iot/tributary/storage"
)

// The classic consumer group protocol (KIP-62/KIP-394 era), as a Kafka group coordinator runs it:
//
//	Empty ──join──▶ PreparingRebalance ──every member joined, or rebalance timeout──▶
//	CompletingRebalance ──leader's SyncGroup──▶ Stable ──join/leave/session expiry──▶ PreparingRebalance
//
// The coordinator only relays: members propose protocols (assignors), the coordinator picks one
// every member supports, the leader computes the assignment and the coordinator hands each member
// its part. Membership lives in memory, like the state Kafka rebuilds after a coordinator moves;
// committed offsets live in central's metadata (the same cursors as the HTTP consume API), so
// they survive restarts and members simply rejoin.

type groupState int

const (
	stateEmpty groupState = iota
	statePreparing
	stateCompleting
	stateStable
)

func (s groupState) String() string {
	return [...]string{"Empty", "PreparingRebalance", "CompletingRebalance", "Stable"}[s]
}

type member struct {
	id, instanceID, clientID, host string
	protocols                      []kmsg.JoinGroupRequestProtocol
	session, rebalance             time.Duration
	lastSeen                       time.Time
	joining                        chan *kmsg.JoinGroupResponse // set while a JoinGroup waits
	syncing                        chan *kmsg.SyncGroupResponse // set while a SyncGroup waits
	assignment                     []byte
}

type group struct {
	name         string
	state        groupState
	protocolType string
	protocol     string
	generation   int32
	leader       string
	members      map[string]*member
	pending      map[string]time.Time // member ids handed out by MEMBER_ID_REQUIRED, not yet joined
	deadline     time.Time            // of the rebalance in progress
}

type coordinator struct {
	log    *storage.Log
	logger *slog.Logger
	mu     sync.Mutex
	groups map[string]*group
}

func newCoordinator(log *storage.Log, logger *slog.Logger) *coordinator {
	return &coordinator{log: log, logger: logger, groups: map[string]*group{}}
}

// run expires members whose session lapsed and completes rebalances whose timeout passed.
func (c *coordinator) run(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			c.mu.Lock()
			for _, g := range c.groups {
				for _, m := range g.members {
					c.answerWaiters(g, m, kerr.CoordinatorNotAvailable.Code)
				}
			}
			c.mu.Unlock()
			return
		case now := <-t.C:
			c.mu.Lock()
			for _, g := range c.groups {
				c.expire(g, now)
			}
			c.mu.Unlock()
		}
	}
}

func (c *coordinator) expire(g *group, now time.Time) {
	for id, at := range g.pending {
		if now.Sub(at) > 5*time.Minute {
			delete(g.pending, id)
		}
	}
	for _, m := range g.members {
		if m.joining == nil && now.Sub(m.lastSeen) > m.session {
			c.logger.Info("kafka group member's session expired", "group", g.name, "member", m.id, "client_id", m.clientID)
			c.remove(g, m)
		}
	}
	if g.state == statePreparing && !now.Before(g.deadline) {
		c.completeJoin(g)
	}
}

// validGroup applies the HTTP consume API's rule for group names, so every group is reachable
// through both.
func validGroup(name string) bool {
	return name != "" && len(name) <= 128 && !strings.ContainsAny(name, "/\x00")
}

func (c *coordinator) get(name string) *group {
	g := c.groups[name]
	if g == nil {
		g = &group{name: name, members: map[string]*member{}, pending: map[string]time.Time{}}
		c.groups[name] = g
	}
	return g
}

func newMemberID(clientID string) string {
	var b [16]byte
	rand.Read(b[:])
	if clientID == "" {
		clientID = "member"
	}
	return clientID + "-" + hex.EncodeToString(b[:])
}

func (c *coordinator) join(ctx context.Context, r *kmsg.JoinGroupRequest, host, clientID string) *kmsg.JoinGroupResponse {
	resp := r.ResponseKind().(*kmsg.JoinGroupResponse)
	resp.Generation = -1
	fail := func(e *kerr.Error) *kmsg.JoinGroupResponse { resp.ErrorCode = e.Code; return resp }
	if !validGroup(r.Group) {
		return fail(kerr.InvalidGroupID)
	}
	session := time.Duration(r.SessionTimeoutMillis) * time.Millisecond
	if session < time.Second || session > 30*time.Minute {
		return fail(kerr.InvalidSessionTimeout)
	}
	rebalance := session
	if r.Version >= 1 {
		rebalance = time.Duration(r.RebalanceTimeoutMillis) * time.Millisecond
	}
	if len(r.Protocols) == 0 || r.ProtocolType == "" {
		return fail(kerr.InconsistentGroupProtocol)
	}
	c.mu.Lock()
	g := c.get(r.Group)
	if len(g.members) > 0 && (g.protocolType != r.ProtocolType || !c.supported(g, r.Protocols)) {
		c.mu.Unlock()
		return fail(kerr.InconsistentGroupProtocol)
	}
	id := r.MemberID
	m := g.members[id]
	if id == "" {
		id = newMemberID(clientID)
		if r.Version >= 4 {
			// KIP-394: hand out the id first, so a client that times out and retries is not
			// counted twice.
			g.pending[id] = time.Now()
			c.mu.Unlock()
			resp.MemberID = id
			return fail(kerr.MemberIDRequired)
		}
	} else if m == nil {
		if _, ok := g.pending[id]; !ok {
			c.mu.Unlock()
			return fail(kerr.UnknownMemberID)
		}
		delete(g.pending, id)
	}
	if m == nil {
		m = &member{id: id, clientID: clientID}
		g.members[id] = m
	} else if m.joining != nil {
		m.joining <- &kmsg.JoinGroupResponse{Version: r.Version, ErrorCode: kerr.RebalanceInProgress.Code, Generation: -1, MemberID: id}
		m.joining = nil
	}
	if r.InstanceID != nil {
		m.instanceID = *r.InstanceID
		// A static member (KIP-345) that restarts comes back under a new member id: the old
		// one is the same consumer, so it goes instead of holding partitions until it expires.
		for _, o := range g.members {
			if o != m && o.instanceID == m.instanceID {
				c.answerWaiters(g, o, kerr.FencedInstanceID.Code)
				delete(g.members, o.id)
				if g.leader == o.id {
					g.leader = m.id
				}
			}
		}
	}
	m.host = host
	changed := !sameProtocols(m.protocols, r.Protocols)
	m.protocols = r.Protocols
	m.session, m.rebalance, m.lastSeen = session, rebalance, time.Now()
	g.protocolType = r.ProtocolType
	if g.state == stateStable && !changed && m.id != g.leader {
		// A follower rejoining with nothing new: answer with the current generation (Kafka's
		// shortcut), no rebalance for everyone.
		out := c.joinResponse(g, m, r.Version)
		c.mu.Unlock()
		return out
	}
	ch := make(chan *kmsg.JoinGroupResponse, 1)
	m.joining = ch
	c.prepare(g)
	if c.allJoined(g) {
		c.completeJoin(g)
	}
	c.mu.Unlock()
	select {
	case out := <-ch:
		out.Version = r.Version
		return out
	case <-ctx.Done():
		return fail(kerr.CoordinatorNotAvailable)
	}
}

func sameProtocols(a, b []kmsg.JoinGroupRequestProtocol) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name || string(a[i].Metadata) != string(b[i].Metadata) {
			return false
		}
	}
	return true
}

// supported reports whether protos shares a protocol with every member.
func (c *coordinator) supported(g *group, protos []kmsg.JoinGroupRequestProtocol) bool {
	for _, p := range protos {
		ok := true
		for _, m := range g.members {
			if !hasProtocol(m, p.Name) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func hasProtocol(m *member, name string) bool {
	for _, p := range m.protocols {
		if p.Name == name {
			return true
		}
	}
	return false
}

// prepare starts a rebalance, or extends the one in progress.
func (c *coordinator) prepare(g *group) {
	if g.state == statePreparing {
		return
	}
	if g.state == stateCompleting {
		for _, m := range g.members {
			if m.syncing != nil {
				m.syncing <- &kmsg.SyncGroupResponse{ErrorCode: kerr.RebalanceInProgress.Code}
				m.syncing = nil
			}
		}
	}
	g.state = statePreparing
	var longest time.Duration
	for _, m := range g.members {
		longest = max(longest, m.rebalance)
	}
	g.deadline = time.Now().Add(longest)
}

func (c *coordinator) allJoined(g *group) bool {
	for _, m := range g.members {
		if m.joining == nil {
			return false
		}
	}
	return true
}

// completeJoin ends the join phase: members that did not rejoin in time are dropped, a protocol
// is chosen by vote, and every waiting JoinGroup is answered; the leader also gets the members.
func (c *coordinator) completeJoin(g *group) {
	for _, m := range g.members {
		if m.joining == nil {
			c.logger.Info("kafka group member did not rejoin in time", "group", g.name, "member", m.id)
			delete(g.members, m.id)
		}
	}
	g.generation++
	if len(g.members) == 0 {
		g.state, g.leader, g.protocol = stateEmpty, "", ""
		return
	}
	g.protocol = c.vote(g)
	if _, ok := g.members[g.leader]; !ok {
		g.leader = ""
		for id := range g.members {
			if g.leader == "" || id < g.leader {
				g.leader = id
			}
		}
	}
	g.state = stateCompleting
	for _, m := range g.members {
		m.assignment = nil
		m.lastSeen = time.Now()
		out := c.joinResponse(g, m, 0)
		m.joining <- out
		m.joining = nil
	}
}

// vote picks the protocol the most members rank highest among those every member supports.
func (c *coordinator) vote(g *group) string {
	votes := map[string]int{}
	var order []string
	for _, m := range g.members {
		for _, p := range m.protocols {
			every := true
			for _, o := range g.members {
				if !hasProtocol(o, p.Name) {
					every = false
					break
				}
			}
			if every {
				if _, seen := votes[p.Name]; !seen {
					order = append(order, p.Name)
				}
				votes[p.Name]++
				break
			}
		}
	}
	best := ""
	for _, name := range order {
		if best == "" || votes[name] > votes[best] || (votes[name] == votes[best] && name < best) {
			best = name
		}
	}
	return best
}

func (c *coordinator) joinResponse(g *group, m *member, version int16) *kmsg.JoinGroupResponse {
	out := &kmsg.JoinGroupResponse{Version: version, Generation: g.generation, MemberID: m.id, LeaderID: g.leader}
	pt, proto := g.protocolType, g.protocol
	out.ProtocolType, out.Protocol = &pt, &proto
	if m.id == g.leader {
		for _, o := range g.members {
			jm := kmsg.NewJoinGroupResponseMember()
			jm.MemberID = o.id
			if o.instanceID != "" {
				iid := o.instanceID
				jm.InstanceID = &iid
			}
			for _, p := range o.protocols {
				if p.Name == g.protocol {
					jm.ProtocolMetadata = p.Metadata
				}
			}
			out.Members = append(out.Members, jm)
		}
	}
	return out
}

// answerWaiters fails a member's waiting JoinGroup or SyncGroup with code.
func (c *coordinator) answerWaiters(g *group, m *member, code int16) {
	if m.joining != nil {
		m.joining <- &kmsg.JoinGroupResponse{ErrorCode: code, Generation: -1, MemberID: m.id}
		m.joining = nil
	}
	if m.syncing != nil {
		m.syncing <- &kmsg.SyncGroupResponse{ErrorCode: code}
		m.syncing = nil
	}
}

// remove drops a member and rebalances the rest.
func (c *coordinator) remove(g *group, m *member) {
	c.answerWaiters(g, m, kerr.UnknownMemberID.Code)
	delete(g.members, m.id)
	if len(g.members) == 0 {
		g.state, g.leader, g.protocol = stateEmpty, "", ""
		g.generation++
		return
	}
	c.prepare(g)
	if c.allJoined(g) {
		c.completeJoin(g)
	}
}

// member checks a request's member and generation against the group.
func (c *coordinator) member(group, id string, generation int32) (*group, *member, *kerr.Error) {
	g := c.groups[group]
	if g == nil {
		return nil, nil, kerr.UnknownMemberID
	}
	m := g.members[id]
	if m == nil {
		return g, nil, kerr.UnknownMemberID
	}
	if generation != g.generation {
		return g, m, kerr.IllegalGeneration
	}
	return g, m, nil
}

func (c *coordinator) sync(ctx context.Context, r *kmsg.SyncGroupRequest) *kmsg.SyncGroupResponse {
	resp := r.ResponseKind().(*kmsg.SyncGroupResponse)
	c.mu.Lock()
	g, m, kerrv := c.member(r.Group, r.MemberID, r.Generation)
	if kerrv != nil {
		c.mu.Unlock()
		resp.ErrorCode = kerrv.Code
		return resp
	}
	m.lastSeen = time.Now()
	pt, proto := g.protocolType, g.protocol
	resp.ProtocolType, resp.Protocol = &pt, &proto
	switch g.state {
	case statePreparing:
		c.mu.Unlock()
		resp.ErrorCode = kerr.RebalanceInProgress.Code
		return resp
	case stateStable:
		resp.MemberAssignment = m.assignment
		c.mu.Unlock()
		return resp
	}
	if m.id == g.leader {
		for _, a := range r.GroupAssignment {
			if o := g.members[a.MemberID]; o != nil {
				o.assignment = a.MemberAssignment
			}
		}
		g.state = stateStable
		for _, o := range g.members {
			if o.syncing != nil {
				o.syncing <- &kmsg.SyncGroupResponse{MemberAssignment: o.assignment, ProtocolType: &pt, Protocol: &proto}
				o.syncing = nil
			}
		}
		resp.MemberAssignment = m.assignment
		c.mu.Unlock()
		return resp
	}
	ch := make(chan *kmsg.SyncGroupResponse, 1)
	if m.syncing != nil {
		m.syncing <- &kmsg.SyncGroupResponse{ErrorCode: kerr.RebalanceInProgress.Code}
	}
	m.syncing = ch
	c.mu.Unlock()
	select {
	case out := <-ch:
		out.Version = r.Version
		return out
	case <-ctx.Done():
		resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
		return resp
	}
}

func (c *coordinator) heartbeat(r *kmsg.HeartbeatRequest) *kmsg.HeartbeatResponse {
	resp := r.ResponseKind().(*kmsg.HeartbeatResponse)
	c.mu.Lock()
	defer c.mu.Unlock()
	g, m, kerrv := c.member(r.Group, r.MemberID, r.Generation)
	if m != nil {
		m.lastSeen = time.Now()
	}
	if kerrv != nil {
		resp.ErrorCode = kerrv.Code
		return resp
	}
	if g.state == statePreparing {
		resp.ErrorCode = kerr.RebalanceInProgress.Code
	}
	return resp
}

func (c *coordinator) leave(r *kmsg.LeaveGroupRequest) *kmsg.LeaveGroupResponse {
	resp := r.ResponseKind().(*kmsg.LeaveGroupResponse)
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.groups[r.Group]
	leaveOne := func(id string, instance *string) int16 {
		if g == nil {
			return kerr.UnknownMemberID.Code
		}
		m := g.members[id]
		if m == nil && instance != nil {
			for _, o := range g.members {
				if o.instanceID == *instance {
					m = o
				}
			}
		}
		if m == nil {
			return kerr.UnknownMemberID.Code
		}
		c.logger.Info("kafka group member left", "group", g.name, "member", m.id)
		c.remove(g, m)
		return 0
	}
	if r.Version < 3 {
		resp.ErrorCode = leaveOne(r.MemberID, nil)
		return resp
	}
	for _, lm := range r.Members {
		out := kmsg.NewLeaveGroupResponseMember()
		out.MemberID, out.InstanceID = lm.MemberID, lm.InstanceID
		out.ErrorCode = leaveOne(lm.MemberID, lm.InstanceID)
		resp.Members = append(resp.Members, out)
	}
	return resp
}
