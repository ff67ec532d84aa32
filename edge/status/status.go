package status

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/tributary-iot/tributary/devices"
	"github.com/tributary-iot/tributary/edge"
	"github.com/tributary-iot/tributary/storage"
)

// Clients lists the MQTT clients connected now; [*edge.Agent] is one.
type Clients interface {
	ConnectedClients() []edge.ConnectedClient
}

// Log is what the page reads of the edge log; [*storage.Log] is one.
type Log interface {
	Stats() storage.Stats
	Stream(name string) (*storage.Stream, error)
}

// Forwarding is the forwarder's state as the wiring hands it over: the edge package knows nothing
// of sync, so the page takes plain values.
type Forwarding struct {
	Lanes []Lane
	// TokenRefused is true while central refuses this edge's token.
	TokenRefused bool
}

// Lane is one forwarded partition of the edge log.
type Lane struct {
	Stream    string `json:"stream"`
	Partition int    `json:"partition"`
	End       int64  `json:"end"`   // the edge log's end offset
	Acked     int64  `json:"acked"` // the next offset central expects
	Connected bool   `json:"connected"`
	Stalled   bool   `json:"stalled"`
	LastError string `json:"last_error,omitempty"`
}

// Defaults of Config.
const (
	DefaultResolution  = 10 * time.Second
	DefaultWindow      = time.Hour
	DefaultDeadLetters = 20
	// DefaultMaxClients caps the connected clients listed (the count is always whole).
	DefaultMaxClients = 200
)

// Config says what the page shows and who may see it.
type Config struct {
	EdgeID  string
	Version string
	Clients Clients // required
	Log     Log     // required

	QuotaBytes  int64  // 0: no quota
	QuotaPolicy string // backpressure (default) or drop-oldest

	// Central is the URL the edge forwards to; Forwarding reports the forwarder's lanes. Both
	// empty: the edge stores and forwards nowhere.
	Central    string
	Forwarding func() Forwarding

	// Token guards the page and its data (see LoadToken); "" serves loopback clients only.
	Token string

	// Resolution is the history's interval and Window its length: Window/Resolution samples of
	// SampleBytes each (one hour at 10 s: 360 samples, 9,528 bytes with the allocator's rounding).
	Resolution  time.Duration
	Window      time.Duration
	DeadLetters int // recent dead letters shown
	MaxClients  int
	Logger      *slog.Logger // nil: discard
}

func (c Config) withDefaults() Config {
	if c.Resolution <= 0 {
		c.Resolution = DefaultResolution
	}
	if c.Window <= 0 {
		c.Window = DefaultWindow
	}
	if c.Window < c.Resolution {
		c.Window = c.Resolution
	}
	if c.DeadLetters <= 0 {
		c.DeadLetters = DefaultDeadLetters
	}
	if c.MaxClients <= 0 {
		c.MaxClients = DefaultMaxClients
	}
	if c.QuotaPolicy == "" {
		c.QuotaPolicy = "backpressure"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c
}

// Page is the edge's status page: an [http.Handler] for the page, its data endpoint and its
// login form, and a sampler ([Page.Run]) that keeps the plotted history.
type Page struct {
	cfg     Config
	guard   guard
	history *History
	started time.Time
	handler http.Handler

	mu       sync.Mutex
	recent   []counters // the last few ticks, for the current rates
	interval counters   // counters at the start of the history interval under way
	dead     deadLetterCache
}

// counters are the cumulative figures the rates come from.
type counters struct {
	at        time.Time
	appended  int64
	forwarded int64 // sum of the lanes' acked offsets
	behind    int64
}

// rateTicks is how many one-second ticks the current rates average over.
const rateTicks = 5

// New checks cfg and returns the page; call [Page.Run] to keep its history.
func New(cfg Config) (*Page, error) {
	cfg = cfg.withDefaults()
	if cfg.Clients == nil || cfg.Log == nil {
		return nil, errors.New("status page: Clients and Log are required")
	}
	if _, err := storage.ParseQuotaPolicy(cfg.QuotaPolicy); err != nil {
		return nil, fmt.Errorf("status page: %w", err)
	}
	p := &Page{cfg: cfg, guard: newGuard(cfg.Token), started: time.Now(),
		history: NewHistory(int(cfg.Window / cfg.Resolution))}
	p.handler = p.routes()
	return p, nil
}

// History is the page's plotted history.
func (p *Page) History() *History { return p.history }

func (p *Page) ServeHTTP(w http.ResponseWriter, r *http.Request) { p.handler.ServeHTTP(w, r) }

// Run samples the edge once a second and adds a history sample every Resolution, until ctx ends.
func (p *Page) Run(ctx context.Context) error {
	tick := time.NewTicker(min(time.Second, p.cfg.Resolution))
	defer tick.Stop()
	p.sample(time.Now())
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-tick.C:
			p.sample(now)
		}
	}
}

func (p *Page) read(now time.Time) (counters, Forwarding) {
	c := counters{at: now, appended: p.cfg.Log.Stats().RecordsAppended}
	var f Forwarding
	if p.cfg.Forwarding != nil {
		f = p.cfg.Forwarding()
	}
	for _, ln := range f.Lanes {
		c.forwarded += ln.Acked
		c.behind += max(ln.End-ln.Acked, 0)
	}
	return c, f
}

func (p *Page) sample(now time.Time) {
	c, _ := p.read(now)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.recent = append(p.recent, c)
	if len(p.recent) > rateTicks+1 {
		p.recent = append(p.recent[:0], p.recent[len(p.recent)-rateTicks-1:]...)
	}
	if p.interval.at.IsZero() {
		p.interval = c
		return
	}
	if now.Sub(p.interval.at) < p.cfg.Resolution-p.cfg.Resolution/20 {
		return
	}
	r, f := rates(p.interval, c)
	p.history.Add(Sample{Time: now.Unix(), Readings: float32(r), Forwarded: float32(f), Behind: float32(c.behind)})
	p.interval = c
}

// rates are the records/s appended and forwarded between two readings of the counters; a
// counter that went down (central resumed a lane lower after its restart) counts as zero.
func rates(from, to counters) (appended, forwarded float64) {
	dt := to.at.Sub(from.at).Seconds()
	if dt <= 0 {
		return 0, 0
	}
	return float64(max(to.appended-from.appended, 0)) / dt, float64(max(to.forwarded-from.forwarded, 0)) / dt
}

// currentRates average over the last rateTicks seconds of ticks.
func (p *Page) currentRates() (appended, forwarded float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.recent) < 2 {
		return 0, 0
	}
	return rates(p.recent[0], p.recent[len(p.recent)-1])
}

func sortClients(cs []edge.ConnectedClient) {
	sort.Slice(cs, func(i, j int) bool {
		if cs[i].Device != cs[j].Device {
			return cs[i].Device < cs[j].Device
		}
		return cs[i].ClientID < cs[j].ClientID
	})
}

// deadLetterStream is where the edge keeps readings it could not store in their own stream.
const deadLetterStream = devices.DeadLetterStream
