package status

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tributary-iot/tributary/edge"
	"github.com/tributary-iot/tributary/storage"
)

// Snapshot is what GET /status/api answers; README.md documents its fields.
type Snapshot struct {
	EdgeID        string          `json:"edge_id"`
	LoginRequired bool            `json:"login_required"` // a token guards the page
	Version       string          `json:"version,omitempty"`
	Time          time.Time       `json:"time"`
	UptimeSeconds float64         `json:"uptime_seconds"`
	Devices       DevicesStatus   `json:"devices"`
	Readings      ReadingsStatus  `json:"readings"`
	Disk          DiskStatus      `json:"disk"`
	Forwarding    ForwardStatus   `json:"forwarding"`
	DeadLetters   DeadLetterList  `json:"dead_letters"`
	History       *HistoryPayload `json:"history,omitempty"`
}

type DevicesStatus struct {
	Connected int                    `json:"connected"`
	Clients   []edge.ConnectedClient `json:"clients"` // sorted by device, at most MaxClients
}

type ReadingsStatus struct {
	PerSecond float64 `json:"per_second"` // records appended, over the last 5 s
	Total     int64   `json:"total"`      // records appended since the edge started
}

type DiskStatus struct {
	UsedBytes      int64    `json:"used_bytes"`
	QuotaBytes     int64    `json:"quota_bytes"`          // 0: no quota
	UsedRatio      *float64 `json:"used_ratio,omitempty"` // of the quota
	Policy         string   `json:"policy"`
	DroppedRecords int64    `json:"dropped_records"`
}

type ForwardStatus struct {
	Enabled bool   `json:"enabled"`
	Central string `json:"central,omitempty"`
	// State is off (no central), connecting, forwarding, behind, stalled, refused (central
	// refuses the token) or disconnected.
	State                      string  `json:"state"`
	Behind                     int64   `json:"behind"`
	OldestUnforwardedAgeSecond float64 `json:"oldest_unforwarded_age_seconds"`
	PerSecond                  float64 `json:"per_second"`
	LastError                  string  `json:"last_error,omitempty"`
	Lanes                      []Lane  `json:"lanes"`
}

type DeadLetterList struct {
	Total  int64        `json:"total"` // dead letters in the edge log
	Recent []DeadLetter `json:"recent"`
}

// DeadLetter is one reading stored in the deadletter stream, newest first in the list.
type DeadLetter struct {
	Offset int64     `json:"offset"`
	Time   time.Time `json:"time"`
	Device string    `json:"device"`
	Topic  string    `json:"topic"`
	Reason string    `json:"reason"`
	Bytes  int       `json:"bytes"`
}

type HistoryPayload struct {
	ResolutionSeconds float64  `json:"resolution_seconds"`
	Capacity          int      `json:"capacity"`
	Bytes             int      `json:"bytes"`
	Samples           []Sample `json:"samples"`
}

// behindThreshold is how far a connected edge may run behind and still be "forwarding": live
// lanes of a busy gateway are a few thousand records behind at any moment.
const behindThreshold = 1000

// Snapshot reads the edge now.
func (p *Page) Snapshot(withHistory bool) Snapshot {
	now := time.Now()
	stats := p.cfg.Log.Stats()
	s := Snapshot{EdgeID: p.cfg.EdgeID, LoginRequired: p.guard.token != nil, Version: p.cfg.Version, Time: now, UptimeSeconds: now.Sub(p.started).Seconds()}

	clients := p.cfg.Clients.ConnectedClients()
	sortClients(clients)
	s.Devices.Connected = len(clients)
	s.Devices.Clients = clients[:min(len(clients), p.cfg.MaxClients)]

	appended, forwarded := p.currentRates()
	s.Readings = ReadingsStatus{PerSecond: appended, Total: stats.RecordsAppended}

	s.Disk = DiskStatus{UsedBytes: stats.DiskBytes, QuotaBytes: p.cfg.QuotaBytes, Policy: p.cfg.QuotaPolicy, DroppedRecords: stats.DroppedRecords}
	if p.cfg.QuotaBytes > 0 {
		r := float64(stats.DiskBytes) / float64(p.cfg.QuotaBytes)
		s.Disk.UsedRatio = &r
	}

	s.Forwarding = p.forwarding(now, forwarded)
	s.DeadLetters = p.deadLetters()
	if withHistory {
		s.History = &HistoryPayload{ResolutionSeconds: p.cfg.Resolution.Seconds(), Capacity: p.history.Capacity(),
			Bytes: p.history.Bytes(), Samples: p.history.Samples(nil)}
	}
	return s
}

func (p *Page) forwarding(now time.Time, perSecond float64) ForwardStatus {
	if p.cfg.Forwarding == nil {
		return ForwardStatus{State: "off", Lanes: []Lane{}}
	}
	f := p.cfg.Forwarding()
	fs := ForwardStatus{Enabled: true, Central: p.cfg.Central, PerSecond: perSecond, Lanes: f.Lanes}
	if fs.Lanes == nil {
		fs.Lanes = []Lane{}
	}
	connected, stalled := 0, false
	for _, ln := range f.Lanes {
		behind := max(ln.End-ln.Acked, 0)
		fs.Behind += behind
		if ln.Connected {
			connected++
		}
		stalled = stalled || ln.Stalled
		if ln.LastError != "" && fs.LastError == "" {
			fs.LastError = ln.LastError
		}
		if behind > 0 {
			fs.OldestUnforwardedAgeSecond = max(fs.OldestUnforwardedAgeSecond, p.oldestAge(ln, now))
		}
	}
	switch {
	case f.TokenRefused:
		fs.State = "refused"
	case stalled:
		fs.State = "stalled"
	case len(f.Lanes) > 0 && fs.Behind == 0 && connected == 0 && fs.LastError == "":
		// Idle lanes stop calling central; nothing is behind, so nothing waits.
		fs.State = "forwarding"
	case len(f.Lanes) > 0 && connected == 0 && fs.LastError != "":
		fs.State = "disconnected"
	case connected == 0:
		fs.State = "connecting"
	case fs.Behind > behindThreshold:
		fs.State = "behind"
	default:
		fs.State = "forwarding"
	}
	return fs
}

// oldestAge reads the timestamp of the lane's first record central has not acknowledged.
func (p *Page) oldestAge(ln Lane, now time.Time) float64 {
	st, err := p.cfg.Log.Stream(ln.Stream)
	if err != nil || ln.Partition < 0 || ln.Partition >= st.Partitions() {
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	e, err := st.Partition(ln.Partition).NewReader(ln.Acked, &storage.ReaderOptions{ReadBytes: 64 << 10}).Next(ctx)
	if err != nil || e.Gap != nil || e.Timestamp.IsZero() {
		return 0
	}
	return max(now.Sub(e.Timestamp).Seconds(), 0)
}

// deadLetterCache keeps the recent dead letters read at one end offset of the deadletter
// stream, so a page polling every second reads the log only when a dead letter arrived.
type deadLetterCache struct {
	mu     sync.Mutex
	end    int64
	recent []DeadLetter
}

func (p *Page) deadLetters() DeadLetterList {
	st, err := p.cfg.Log.Stream(deadLetterStream)
	if err != nil || st.Partitions() == 0 {
		return DeadLetterList{Recent: []DeadLetter{}}
	}
	part := st.Partition(0)
	end := part.EndOffset()
	total := end - part.StartOffset()
	c := &p.dead
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.recent != nil && c.end == end {
		return DeadLetterList{Total: total, Recent: c.recent}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	from := max(end-int64(p.cfg.DeadLetters), part.StartOffset())
	r := part.NewReader(from, &storage.ReaderOptions{ReadBytes: 256 << 10})
	recent := []DeadLetter{}
	for r.Offset() < end {
		e, err := r.Next(ctx)
		if err != nil {
			break
		}
		if e.Gap != nil {
			continue
		}
		recent = append(recent, DeadLetter{Offset: e.Offset, Time: e.Timestamp, Device: string(e.HeaderValue(edge.HeaderDevice)),
			Topic: string(e.HeaderValue(edge.HeaderTopic)), Reason: string(e.HeaderValue(edge.HeaderReason)), Bytes: payloadBytes(e.Record)})
	}
	for i, j := 0, len(recent)-1; i < j; i, j = i+1, j-1 {
		recent[i], recent[j] = recent[j], recent[i]
	}
	c.end, c.recent = end, recent
	return DeadLetterList{Total: total, Recent: recent}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeJSONError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": strings.TrimSpace(msg)})
}

// payloadBytes is the size the device sent: a dead letter keeps only the head of an oversized
// payload and its original size in a header.
func payloadBytes(r storage.Record) int {
	if n, err := strconv.Atoi(string(r.HeaderValue(edge.HeaderPayloadSize))); err == nil {
		return n
	}
	return len(r.Value)
}
