package edge

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tributary-iot/tributary/devices"
)

// AuthConfig bounds what failed password logins may cost. Each password check is a bcrypt
// comparison (tens of milliseconds of a core at the default cost), so without bounds a flood of
// wrong passwords takes the cores that acknowledge every other device's readings.
type AuthConfig struct {
	// MaxConcurrentChecks bounds bcrypt comparisons running at once; default half the cores, at
	// least one. A login waits up to CheckWait (default 5s) for one, then is refused.
	MaxConcurrentChecks int           `yaml:"max_concurrent_checks"`
	CheckWait           time.Duration `yaml:"check_wait"`
	// FailuresBeforeBackoff is how many failed password logins in a row one source address may
	// make before its further logins are refused without a check; default 5. The refusal lasts
	// BackoffBase (default 1s), doubling with each further failure up to BackoffMax (default 1m),
	// and a successful login from the address clears it. Backoff is per source, not per device:
	// per device, anyone knowing a device id could lock that device out.
	FailuresBeforeBackoff int           `yaml:"failures_before_backoff"`
	BackoffBase           time.Duration `yaml:"backoff_base"`
	BackoffMax            time.Duration `yaml:"backoff_max"`
}

func (c AuthConfig) withDefaults() AuthConfig {
	if c.FailuresBeforeBackoff <= 0 {
		c.FailuresBeforeBackoff = 5
	}
	if c.BackoffBase <= 0 {
		c.BackoffBase = time.Second
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = time.Minute
	}
	c.BackoffMax = max(c.BackoffMax, c.BackoffBase)
	return c
}

// maxLoginSources bounds the failure table: past it, entries whose backoff ended are dropped
// first, then the oldest.
const maxLoginSources = 10000

// loginLimiter counts failed password logins per source address.
type loginLimiter struct {
	cfg AuthConfig
	now func() time.Time

	mu      sync.Mutex
	sources map[string]*loginFailures
}

type loginFailures struct {
	failures int
	until    time.Time // refused without a check before this
	last     time.Time
}

func newLoginLimiter(cfg AuthConfig) *loginLimiter {
	return &loginLimiter{cfg: cfg.withDefaults(), now: time.Now, sources: map[string]*loginFailures{}}
}

// sourceOf is the address part of a remote "host:port".
func sourceOf(remote string) string {
	if host, _, err := net.SplitHostPort(remote); err == nil {
		return host
	}
	return remote
}

// blocked returns how long the source must still wait, or 0.
func (l *loginLimiter) blocked(src string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	f := l.sources[src]
	if f == nil {
		return 0
	}
	if wait := f.until.Sub(l.now()); wait > 0 {
		return wait
	}
	return 0
}

// failed counts a failed login and starts or lengthens the source's backoff.
func (l *loginLimiter) failed(src string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	f := l.sources[src]
	if f == nil {
		if len(l.sources) >= maxLoginSources {
			l.evictLocked(now)
		}
		f = &loginFailures{}
		l.sources[src] = f
	}
	f.failures++
	f.last = now
	if over := f.failures - l.cfg.FailuresBeforeBackoff; over >= 0 {
		wait := l.cfg.BackoffMax
		if over < 30 {
			wait = min(l.cfg.BackoffBase<<over, l.cfg.BackoffMax)
		}
		f.until = now.Add(wait)
	}
}

// succeeded forgets the source's failures.
func (l *loginLimiter) succeeded(src string) {
	l.mu.Lock()
	delete(l.sources, src)
	l.mu.Unlock()
}

func (l *loginLimiter) evictLocked(now time.Time) {
	var oldest string
	var oldestAt time.Time
	for src, f := range l.sources {
		if !f.until.After(now) && now.Sub(f.last) > l.cfg.BackoffMax {
			delete(l.sources, src)
			continue
		}
		if oldest == "" || f.last.Before(oldestAt) {
			oldest, oldestAt = src, f.last
		}
	}
	if len(l.sources) >= maxLoginSources {
		delete(l.sources, oldest)
	}
}

// checkPassword runs a password login through the source's backoff and the registry's bounded
// checks. The reason is the refusal's metric label.
func (h *hook) checkPassword(remote, user, password string) (string, error) {
	a := h.agent
	src := sourceOf(remote)
	if wait := a.logins.blocked(src); wait > 0 {
		return "throttled", fmt.Errorf("login refused without a check: too many failed logins from %s; next attempt accepted in %v", src, wait.Round(time.Millisecond))
	}
	err := a.cache.Authenticate(user, password)
	switch {
	case err == nil:
		a.logins.succeeded(src)
		return "", nil
	case errors.Is(err, devices.ErrChecksBusy):
		return "busy", err // says nothing about the password: no backoff for it
	}
	a.logins.failed(src)
	return authReason(err), err
}

// registerAuth exports the registry's count of password checks.
func (m *metrics) registerAuth(c *devices.Cache) {
	m.registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "tributary_edge_password_checks_total",
		Help: "bcrypt comparisons run for password logins (refusals included; remembered passwords cost none).",
	}, func() float64 { return float64(c.PasswordChecks()) }))
}
