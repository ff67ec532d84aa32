package console

import (
	"encoding/json"
	"github.com/tributary-iot/tributary/sync/internal/httpx"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"time"

	"github.com/tributary-iot/tributary/storage"
	"github.com/tributary-iot/tributary/sync/receive"
)

// Edge states, worst first.
const (
	StateRefused    = "refused"    // central refuses its token (revoked, or a wrong one)
	StateStalled    = "stalled"    // talking to central, behind, and no progress for a while
	StateSilent     = "silent"     // no call for SilentAfter (or never)
	StateBehind     = "behind"     // catching up: at least BehindRecords not yet at central
	StateForwarding = "forwarding" // up to date
)

// EdgeSummary is one edge on the Fleet page (GET /console/api/fleet).
type EdgeSummary struct {
	ID     string `json:"id"`
	State  string `json:"state"`
	Reason string `json:"reason"` // why, in words
	// LastSeen is the edge's last call central accepted.
	LastSeen time.Time `json:"last_seen,omitzero"`
	// Rate is records/s central applied from the edge, over the last seconds.
	Rate        float64 `json:"rate"`
	RateHistory *Series `json:"rate_history,omitempty"`
	Behind      int64   `json:"records_behind"`
	// OldestUnforwardedS bounds the age of the edge's oldest reading central does not have yet
	// (from above); absent when nothing is behind or central has nothing from a lane behind.
	OldestUnforwardedS *float64             `json:"oldest_unforwarded_s,omitempty"`
	GapRecords         int64                `json:"gap_records"`
	Gaps               int                  `json:"gaps"`
	Version            string               `json:"version"`
	Registered         bool                 `json:"registered"`
	Revoked            bool                 `json:"revoked"`
	Lanes              int                  `json:"lanes"`
	Devices            int                  `json:"devices"`
	Refusal            *receive.RefusalInfo `json:"refusal,omitempty"`
}

// FleetView is the answer of GET /console/api/fleet.
type FleetView struct {
	Now   time.Time     `json:"now"`
	Edges []EdgeSummary `json:"edges"`
	// History tells the plot history's size and bound.
	History HistoryInfo `json:"history"`
}

// HistoryInfo is the plot history's shape and its bound in bytes.
type HistoryInfo struct {
	StepS   float64 `json:"step_s"`
	WindowS float64 `json:"window_s"`
	Devices int     `json:"devices"`
	Edges   int     `json:"edges"`
	Evicted int64   `json:"devices_evicted"`
	// Skipped counts records central stored that the history did not count: chunks that came
	// while the console's feed was full (see Feed), so device rates then undercount.
	Skipped     int64 `json:"records_skipped"`
	BoundBytes  int   `json:"bound_bytes"`
	DeviceBytes int   `json:"device_bytes"`
	EdgeBytes   int   `json:"edge_bytes"`
}

// EdgeView is the answer of GET /console/api/edges/{id}.
type EdgeView struct {
	EdgeSummary
	LaneList []LaneView        `json:"lane_list"`
	GapList  []receive.GapInfo `json:"gap_list"`
	// Throughput (records/s applied) and Backlog (records behind) over the history's window.
	Throughput Series `json:"throughput"`
	Backlog    Series `json:"backlog"`
}

// LaneView is a lane with its state in words.
type LaneView struct {
	receive.LaneInfo
	State string `json:"state"`
}

type fleetData struct {
	edges    []receive.EdgeInfo
	lanes    []receive.LaneInfo
	gaps     []receive.GapInfo
	refusals []receive.RefusalInfo
}

func (c *Console) read() (fleetData, error) {
	var d fleetData
	var err error
	if d.edges, err = c.cfg.Fleet.Edges(); err != nil {
		return d, err
	}
	if d.gaps, err = c.cfg.Fleet.Gaps(); err != nil {
		return d, err
	}
	d.lanes, d.refusals = c.cfg.Fleet.Lanes(), c.cfg.Fleet.Refusals()
	return d, nil
}

func (c *Console) summaries(d fleetData, now time.Time, withHistory bool) []EdgeSummary {
	byID := map[string]*EdgeSummary{}
	var order []string
	get := func(id string) *EdgeSummary {
		if s := byID[id]; s != nil {
			return s
		}
		s := &EdgeSummary{ID: id}
		byID[id] = s
		order = append(order, id)
		return s
	}
	for _, e := range d.edges {
		s := get(e.ID)
		s.Registered, s.Revoked = true, e.Revoked
	}
	stalled := map[string]string{}
	for _, l := range d.lanes {
		s := get(l.Edge)
		s.Lanes++
		s.Behind += l.Behind
		s.GapRecords += l.GapsRecords
		s.Gaps += l.GapsCount
		if l.LastSeen.After(s.LastSeen) {
			s.LastSeen = l.LastSeen
		}
		if l.Stalled && stalled[l.Edge] == "" {
			stalled[l.Edge] = l.Stream + "/" + strconv.Itoa(l.Partition)
		}
	}
	for i := range d.refusals {
		r := d.refusals[i]
		s := get(r.Edge)
		s.Refusal = &r
		if r.LastAccepted.After(s.LastSeen) {
			s.LastSeen = r.LastAccepted
		}
	}
	ages := c.coll.oldestUnforwarded(d.lanes, now)
	devices := c.hist.EdgeDevices()
	rates := c.coll.rates()
	versions := c.coll.versions()
	out := make([]EdgeSummary, 0, len(order))
	for _, id := range order {
		s := byID[id]
		s.Rate = rates[id]
		s.Devices = devices[id]
		s.Version = versions[id]
		if age, ok := ages[id]; ok {
			v := age.Seconds()
			s.OldestUnforwardedS = &v
		}
		if withHistory {
			if rate, _, ok := c.hist.EdgeSeries(id, now); ok {
				s.RateHistory = &rate
			}
		}
		switch {
		case s.Refusal != nil && s.Refusal.Refusing:
			s.State = StateRefused
			s.Reason = "central refuses its token (" + s.Refusal.Reason + ") since " + s.Refusal.LastRefused.Format(time.RFC3339) +
				": give the edge its current token, or `tributary central edges add " + id + " --rotate`"
		case s.Revoked:
			s.State = StateRefused
			s.Reason = "its registration is revoked: central refuses its calls"
		case s.LastSeen.IsZero():
			s.State = StateSilent
			s.Reason = "no call from it since central started"
		case now.Sub(s.LastSeen) > c.cfg.SilentAfter:
			s.State = StateSilent
			s.Reason = "no call from it for " + now.Sub(s.LastSeen).Round(time.Second).String()
		case stalled[id] != "":
			s.State = StateStalled
			s.Reason = "lane " + stalled[id] + " is behind and has made no progress although the edge keeps calling"
		case s.Behind >= c.cfg.BehindRecords:
			s.State = StateBehind
			s.Reason = strconv.FormatInt(s.Behind, 10) + " records not yet at central"
		default:
			s.State = StateForwarding
			s.Reason = "up to date"
		}
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (c *Console) historyInfo() HistoryInfo {
	dev, edges, evicted := c.hist.Len()
	return HistoryInfo{StepS: c.cfg.Step.Seconds(), WindowS: c.cfg.Window.Seconds(), Devices: dev, Edges: edges, Evicted: evicted, Skipped: c.cfg.Feed.skipped.Load(),
		BoundBytes: c.hist.Bound(), DeviceBytes: c.hist.DeviceBytes(), EdgeBytes: c.hist.EdgeBytes()}
}

func (c *Console) apiFleet(w http.ResponseWriter, r *http.Request) {
	d, err := c.read()
	if err != nil {
		writeError(w, http.StatusInternalServerError, "read the edge registry: %v", err)
		return
	}
	now := time.Now()
	writeJSON(w, FleetView{Now: now.UTC(), Edges: c.summaries(d, now, true), History: c.historyInfo()})
}

func laneState(l receive.LaneInfo) string {
	switch {
	case l.Stalled:
		return StateStalled
	case l.Behind > 0:
		return StateBehind
	default:
		return StateForwarding
	}
}

func (c *Console) apiEdge(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	d, err := c.read()
	if err != nil {
		writeError(w, http.StatusInternalServerError, "read the edge registry: %v", err)
		return
	}
	now := time.Now()
	var v *EdgeView
	for _, s := range c.summaries(d, now, false) {
		if s.ID == id {
			v = &EdgeView{EdgeSummary: s, LaneList: []LaneView{}, GapList: []receive.GapInfo{}}
		}
	}
	if v == nil {
		writeError(w, http.StatusNotFound, "no edge %q: it is neither registered nor has it sent anything (see `tributary central edges list`)", id)
		return
	}
	for _, l := range d.lanes {
		if l.Edge == id {
			v.LaneList = append(v.LaneList, LaneView{l, laneState(l)})
		}
	}
	for _, g := range d.gaps {
		if g.Edge == id {
			v.GapList = append(v.GapList, g)
		}
	}
	rate, backlog, ok := c.hist.EdgeSeries(id, now)
	if !ok {
		empty := c.hist.series(make([]float64, c.hist.steps), c.hist.stepOf(now))
		rate, backlog = empty, empty
	}
	v.Throughput, v.Backlog = rate, backlog
	writeJSON(w, v)
}

// DevicesView is the answer of GET /console/api/devices.
type DevicesView struct {
	Prefix  string       `json:"prefix"`
	Total   int          `json:"total"`
	Devices []DeviceInfo `json:"devices"`
}

func (c *Console) apiDevices(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, err := intParam(q, "limit", 100, 1, 1000)
	if err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	devs, total := c.hist.Devices(q.Get("prefix"), limit, time.Now())
	writeJSON(w, DevicesView{Prefix: q.Get("prefix"), Total: total, Devices: devs})
}

// DeviceView is the answer of GET /console/api/devices/{id}.
type DeviceView struct {
	DeviceInfo
	// LastValue is the last reading's value when it is JSON; LastValueText holds any other.
	LastValue     json.RawMessage `json:"last_value,omitempty"`
	LastValueText string          `json:"last_value_text,omitempty"`
}

func (c *Console) apiDevice(w http.ResponseWriter, r *http.Request) {
	d, ok := c.hist.Device(r.PathValue("id"), time.Now())
	if !ok {
		writeError(w, http.StatusNotFound, "no device %q among those that sent in the last %v: search by prefix at /console/api/devices?prefix=", r.PathValue("id"), c.cfg.Window)
		return
	}
	v := DeviceView{DeviceInfo: d}
	if !d.LastValueCut && json.Valid(d.LastValue) {
		v.LastValue = d.LastValue
	} else {
		v.LastValueText = string(d.LastValue)
	}
	writeJSON(w, v)
}

// ReadingsView is the answer of GET /console/api/devices/{id}/readings: the device's readings
// from central's log, oldest first. Pass Next back as from= to get the ones after.
type ReadingsView struct {
	Device    string        `json:"device"`
	Stream    string        `json:"stream"`
	Partition int           `json:"partition"`
	Next      int64         `json:"next"`
	Scanned   int           `json:"scanned"`
	Readings  []ReadingView `json:"readings"`
}

// ReadingView is one reading of a device; Value is null when it is not JSON.
type ReadingView struct {
	Offset    int64           `json:"offset"`
	Timestamp time.Time       `json:"timestamp"`
	Value     json.RawMessage `json:"value"`
}

// maxScan bounds the records one readings request reads from the device's partition.
const maxScan = 50_000

func (c *Console) apiReadings(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	d, ok := c.hist.Device(id, time.Now())
	if !ok {
		writeError(w, http.StatusNotFound, "no device %q among those that sent in the last %v", id, c.cfg.Window)
		return
	}
	q := r.URL.Query()
	maxN, err := intParam(q, "max", 500, 1, 5000)
	if err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	window := 10 * time.Minute
	if s := q.Get("window"); s != "" {
		if window, err = time.ParseDuration(s); err != nil || window <= 0 {
			writeError(w, http.StatusBadRequest, "window %q: give a duration such as 10m", s)
			return
		}
	}
	st, err := c.cfg.Log.Stream(d.Stream)
	if err != nil || d.Partition >= st.Partitions() {
		writeError(w, http.StatusNotFound, "stream %q of device %q is gone", d.Stream, id)
		return
	}
	p := st.Partition(d.Partition)
	end := p.EndOffset()
	var from int64
	if s := q.Get("from"); s != "" {
		if from, err = strconv.ParseInt(s, 10, 64); err != nil || from < 0 {
			writeError(w, http.StatusBadRequest, "from %q: give the next offset of an earlier answer", s)
			return
		}
	} else if from, err = p.OffsetForTime(r.Context(), time.Now().Add(-window)); err != nil {
		writeError(w, http.StatusInternalServerError, "find the window's start: %v", err)
		return
	}
	from = max(from, end-maxScan, p.StartOffset())
	v := ReadingsView{Device: id, Stream: d.Stream, Partition: d.Partition, Next: from, Readings: []ReadingView{}}
	rd := p.NewReader(from, &storage.ReaderOptions{ReadBytes: 256 << 10})
	for v.Scanned < maxScan {
		e, err := rd.Next(r.Context())
		if err == io.EOF || err != nil && r.Context().Err() != nil {
			break
		}
		if err != nil {
			writeError(w, http.StatusInternalServerError, "read the device's partition: %v", err)
			return
		}
		if e.Offset >= end {
			break
		}
		v.Next = rd.Offset()
		v.Scanned++
		if e.Gap != nil || string(e.Key) != id {
			continue
		}
		rv := ReadingView{Offset: e.Offset, Timestamp: e.Timestamp.UTC()}
		if json.Valid(e.Value) {
			rv.Value = append(json.RawMessage(nil), e.Value...)
		}
		v.Readings = append(v.Readings, rv)
		if len(v.Readings) > maxN {
			v.Readings = v.Readings[1:]
		}
	}
	writeJSON(w, v)
}

// StreamView is one central stream on the Stream page.
type StreamView struct {
	Name       string `json:"name"`
	Partitions int    `json:"partitions"`
	Records    int64  `json:"records"` // end offsets summed
}

func (c *Console) apiStreams(w http.ResponseWriter, r *http.Request) {
	out := []StreamView{}
	for _, st := range c.cfg.Log.Streams() {
		sv := StreamView{Name: st.Name(), Partitions: st.Partitions()}
		for i := range st.Partitions() {
			sv.Records += st.Partition(i).EndOffset()
		}
		out = append(out, sv)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	writeJSON(w, out)
}

// apiTail is the consume API's tail under the console's login, for the browser's EventSource.
func (c *Console) apiTail(w http.ResponseWriter, r *http.Request) {
	r2 := r.Clone(r.Context())
	r2.URL.Path = "/v1/tail/" + r.PathValue("stream")
	r2.URL.RawPath = ""
	r2.Header.Del("Authorization") // the console checked the caller; the tail is mounted without a guard
	c.cfg.Tail.ServeHTTP(w, r2)
}

func intParam(q url.Values, name string, def, lo, hi int) (int, error) {
	s := q.Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo {
		return 0, &paramError{name, s, lo, hi}
	}
	return min(n, hi), nil
}

type paramError struct {
	name, value string
	lo, hi      int
}

func (e *paramError) Error() string {
	return e.name + " " + strconv.Quote(e.value) + ": give a number from " + strconv.Itoa(e.lo) + " to " + strconv.Itoa(e.hi)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Cache-Control", "no-store")
	httpx.WriteJSON(w, http.StatusOK, v)
}

func writeError(w http.ResponseWriter, code int, format string, args ...any) {
	w.Header().Set("Cache-Control", "no-store")
	httpx.WriteError(w, code, format, args...)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func urlQueryEscape(s string) string { return url.QueryEscape(s) }
