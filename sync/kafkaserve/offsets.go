package kafkaserve

import (
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tributary-iot/tributary/sync/consume"
)

// Committed offsets are central's group cursors (consume.GroupCursor), the ones the HTTP consume
// API reads and writes: one group, whichever protocol a consumer speaks. Kafka's commit metadata
// string is not kept.

func (c *coordinator) offsetCommit(r *kmsg.OffsetCommitRequest) *kmsg.OffsetCommitResponse {
	resp := r.ResponseKind().(*kmsg.OffsetCommitResponse)
	code := int16(0)
	switch {
	case !validGroup(r.Group):
		code = kerr.InvalidGroupID.Code
	case r.Generation >= 0 || r.MemberID != "":
		// A member's commit counts only in its generation; a commit without one (generation -1)
		// is a standalone consumer's, as the HTTP API makes.
		c.mu.Lock()
		g, m, kerrv := c.member(r.Group, r.MemberID, r.Generation)
		switch {
		case kerrv != nil:
			code = kerrv.Code
		case g.state == stateCompleting:
			// Between JoinGroup and SyncGroup the member holds no assignment of its new generation.
			code = kerr.RebalanceInProgress.Code
		default:
			// Stable, or PreparingRebalance: as Kafka's coordinator, take the commit, which counts
			// as a heartbeat. A member learns of a rebalance from its next heartbeat and commits
			// what it processed before it rejoins; refusing that would re-deliver it all.
			m.lastSeen = time.Now()
		}
		c.mu.Unlock()
	}
	for _, rt := range r.Topics {
		t := kmsg.NewOffsetCommitResponseTopic()
		t.Topic = rt.Topic
		offsets := map[int]int64{}
		st, err := c.log.Stream(rt.Topic)
		for _, rp := range rt.Partitions {
			p := kmsg.NewOffsetCommitResponseTopicPartition()
			p.Partition = rp.Partition
			switch {
			case code != 0:
				p.ErrorCode = code
			case err != nil || rp.Partition < 0 || int(rp.Partition) >= st.Partitions():
				p.ErrorCode = kerr.UnknownTopicOrPartition.Code
			case rp.Offset < 0:
				p.ErrorCode = kerr.InvalidCommitOffsetSize.Code
			default:
				offsets[int(rp.Partition)] = rp.Offset
			}
			t.Partitions = append(t.Partitions, p)
		}
		if len(offsets) > 0 {
			if err := c.log.SetCursors(consume.GroupCursor(r.Group), rt.Topic, offsets); err != nil {
				c.logger.Error("kafka offset commit failed", "group", r.Group, "topic", rt.Topic, "err", err)
				for i := range t.Partitions {
					if _, ok := offsets[int(t.Partitions[i].Partition)]; ok {
						t.Partitions[i].ErrorCode = kerr.KafkaStorageError.Code
					}
				}
			}
		}
		resp.Topics = append(resp.Topics, t)
	}
	return resp
}

// committed lists a group's stored offsets: topic → partition → offset.
func (c *coordinator) committed(group string) map[string]map[int32]int64 {
	name := consume.GroupCursor(group)
	out := map[string]map[int32]int64{}
	for _, ci := range c.log.Cursors() {
		if ci.Name != name {
			continue
		}
		if out[ci.Stream] == nil {
			out[ci.Stream] = map[int32]int64{}
		}
		out[ci.Stream][int32(ci.Partition)] = ci.Offset
	}
	return out
}

type fetchTopic struct {
	name       string
	partitions []int32
}

// fetchGroup answers one group's OffsetFetch: the named topics, or every committed one.
func (c *coordinator) fetchGroup(group string, topics []fetchTopic, all bool) (map[string]map[int32]int64, []fetchTopic) {
	stored := c.committed(group)
	if all {
		topics = nil
		for name, parts := range stored {
			ft := fetchTopic{name: name}
			for p := range parts {
				ft.partitions = append(ft.partitions, p)
			}
			sort.Slice(ft.partitions, func(i, j int) bool { return ft.partitions[i] < ft.partitions[j] })
			topics = append(topics, ft)
		}
		sort.Slice(topics, func(i, j int) bool { return topics[i].name < topics[j].name })
	}
	return stored, topics
}

func (c *coordinator) offsetFetch(r *kmsg.OffsetFetchRequest) *kmsg.OffsetFetchResponse {
	resp := r.ResponseKind().(*kmsg.OffsetFetchResponse)
	if r.Version < 8 {
		var topics []fetchTopic
		for _, t := range r.Topics {
			topics = append(topics, fetchTopic{t.Topic, t.Partitions})
		}
		if !validGroup(r.Group) {
			resp.ErrorCode = kerr.InvalidGroupID.Code
			return resp
		}
		stored, topics := c.fetchGroup(r.Group, topics, r.Topics == nil)
		for _, ft := range topics {
			t := kmsg.NewOffsetFetchResponseTopic()
			t.Topic = ft.name
			for _, p := range ft.partitions {
				rp := kmsg.NewOffsetFetchResponseTopicPartition()
				rp.Partition, rp.Offset, rp.LeaderEpoch = p, -1, -1
				if o, ok := stored[ft.name][p]; ok {
					rp.Offset = o
				}
				t.Partitions = append(t.Partitions, rp)
			}
			resp.Topics = append(resp.Topics, t)
		}
		return resp
	}
	for _, rg := range r.Groups {
		g := kmsg.NewOffsetFetchResponseGroup()
		g.Group = rg.Group
		if !validGroup(rg.Group) {
			g.ErrorCode = kerr.InvalidGroupID.Code
			resp.Groups = append(resp.Groups, g)
			continue
		}
		var topics []fetchTopic
		for _, t := range rg.Topics {
			topics = append(topics, fetchTopic{t.Topic, t.Partitions})
		}
		stored, topics := c.fetchGroup(rg.Group, topics, rg.Topics == nil)
		for _, ft := range topics {
			t := kmsg.NewOffsetFetchResponseGroupTopic()
			t.Topic = ft.name
			for _, p := range ft.partitions {
				rp := kmsg.NewOffsetFetchResponseGroupTopicPartition()
				rp.Partition, rp.Offset, rp.LeaderEpoch = p, -1, -1
				if o, ok := stored[ft.name][p]; ok {
					rp.Offset = o
				}
				t.Partitions = append(t.Partitions, rp)
			}
			g.Topics = append(g.Topics, t)
		}
		resp.Groups = append(resp.Groups, g)
	}
	return resp
}

// groupNames are the groups with members or committed offsets, sorted.
func (c *coordinator) groupNames() []string {
	seen := map[string]bool{}
	c.mu.Lock()
	for name, g := range c.groups {
		if len(g.members) > 0 {
			seen[name] = true
		}
	}
	c.mu.Unlock()
	prefix := consume.GroupCursor("")
	for _, ci := range c.log.Cursors() {
		if name, ok := strings.CutPrefix(ci.Name, prefix); ok && validGroup(name) {
			seen[name] = true
		}
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (c *coordinator) listGroups(r *kmsg.ListGroupsRequest) *kmsg.ListGroupsResponse {
	resp := r.ResponseKind().(*kmsg.ListGroupsResponse)
	for _, name := range c.groupNames() {
		c.mu.Lock()
		state, ptype := stateEmpty.String(), "consumer"
		if g := c.groups[name]; g != nil {
			state = g.state.String()
			if g.protocolType != "" {
				ptype = g.protocolType
			}
		}
		c.mu.Unlock()
		if len(r.StatesFilter) > 0 && !containsFold(r.StatesFilter, state) {
			continue
		}
		lg := kmsg.NewListGroupsResponseGroup()
		lg.Group, lg.ProtocolType, lg.GroupState = name, ptype, state
		resp.Groups = append(resp.Groups, lg)
	}
	return resp
}

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}

func (c *coordinator) describeGroups(r *kmsg.DescribeGroupsRequest) *kmsg.DescribeGroupsResponse {
	resp := r.ResponseKind().(*kmsg.DescribeGroupsResponse)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, name := range r.Groups {
		dg := kmsg.NewDescribeGroupsResponseGroup()
		dg.Group = name
		dg.State = stateEmpty.String()
		if !validGroup(name) {
			dg.ErrorCode = kerr.InvalidGroupID.Code
			resp.Groups = append(resp.Groups, dg)
			continue
		}
		g := c.groups[name]
		if g == nil || len(g.members) == 0 {
			// Known only by its offsets (or not at all): Kafka describes such a group as Empty.
			if g != nil {
				dg.ProtocolType = g.protocolType
			}
			resp.Groups = append(resp.Groups, dg)
			continue
		}
		dg.State, dg.ProtocolType = g.state.String(), g.protocolType
		if g.state == stateStable {
			dg.Protocol = g.protocol
		}
		ids := make([]string, 0, len(g.members))
		for id := range g.members {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			m := g.members[id]
			dm := kmsg.NewDescribeGroupsResponseGroupMember()
			dm.MemberID, dm.ClientID, dm.ClientHost = m.id, m.clientID, m.host
			if m.instanceID != "" {
				iid := m.instanceID
				dm.InstanceID = &iid
			}
			if g.state == stateStable {
				for _, p := range m.protocols {
					if p.Name == g.protocol {
						dm.ProtocolMetadata = p.Metadata
					}
				}
				dm.MemberAssignment = m.assignment
			}
			dg.Members = append(dg.Members, dm)
		}
		resp.Groups = append(resp.Groups, dg)
	}
	return resp
}
