package devices

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

var (
	// ErrBadPassword reports a password that does not match the device's hash.
	ErrBadPassword = errors.New("wrong password")
	// ErrDeviceDisabled reports a registered device that an operator disabled.
	ErrDeviceDisabled = errors.New("device is disabled")
	// ErrNoPassword reports a password login for a certificate-only device.
	ErrNoPassword = errors.New("device has no password; it authenticates with a certificate")
	// ErrNoCertIdentity reports a certificate login for a device not registered with --cert-identity.
	ErrNoCertIdentity = errors.New("device does not accept certificate identity")
)

// forcedReloadEvery bounds how long a change can go unseen when the file's mtime and size do not
// move, as on file systems with coarse timestamps when a rewrite keeps the size.
const forcedReloadEvery = time.Minute

// CacheOptions tunes a [Cache]; a nil *CacheOptions means the defaults.
type CacheOptions struct {
	// Mapper routes topics for [Cache.Authorize]; nil means [DefaultMapper].
	Mapper *Mapper
	// LockTimeout is how long a reload waits while the CLI holds the write lock; zero means 2 s.
	// A reload that times out keeps the previous devices and is retried on the next tick.
	LockTimeout time.Duration
	// Logger receives reload outcomes; nil discards them.
	Logger *slog.Logger
	// MaxConcurrentChecks bounds bcrypt comparisons running at once; zero means half the cores
	// (at least one). A login waits up to CheckWait (zero: 5 s) for a slot, then fails with
	// [ErrChecksBusy].
	MaxConcurrentChecks int
	CheckWait           time.Duration
}

// Cache is an in-memory snapshot of the registry for the edge agent, which must never hold the bbolt
// file open: the operator's CLI needs the exclusive write lock while the agent runs for months. A
// reload opens the file read-only, reads every device, and closes it; [Cache.Watch] reloads when the
// file changes, so a device added with the CLI is accepted within one interval, without a restart.
//
// Lookups read an immutable snapshot through an atomic pointer, so the per-message path takes no
// lock. A Cache is safe for concurrent use.
type Cache struct {
	path        string
	mapper      *Mapper
	lockTimeout time.Duration
	log         *slog.Logger

	snap     atomic.Pointer[snapshot]
	reloadMu sync.Mutex // one reload at a time, so snapshots are installed in file order

	// verified remembers the last password each device authenticated with, so reconnect storms
	// cost one HMAC each instead of one bcrypt (tens of milliseconds) each. It stores a keyed hash,
	// not the password, under a per-process key so a memory dump gives no precomputable digest.
	verifiedMu sync.Mutex
	verified   map[string]verifiedPassword
	hmacKey    [32]byte

	checks         chan struct{} // one token per bcrypt comparison running
	checkWait      time.Duration
	passwordChecks atomic.Int64
	dummyMu        sync.Mutex
	dummy          map[int][]byte // by bcrypt cost
}

type snapshot struct {
	devices map[string]*Device
	cost    int // bcrypt cost of most hashes, for dummy comparisons
	file    fileState
	loaded  time.Time
}

// fileState is what a cheap stat says about the registry file; a change means reload.
type fileState struct {
	exists bool
	size   int64
	mtime  time.Time
}

type verifiedPassword struct {
	hash string // the bcrypt hash it was verified against: a changed hash invalidates the entry
	mac  [sha256.Size]byte
}

// NewCache loads the registry at path. An absent file is an empty registry, since the agent may
// start before the first device is added; a locked or unreadable file is an error.
func NewCache(path string, opts *CacheOptions) (*Cache, error) {
	c := &Cache{path: path, lockTimeout: 2 * time.Second, verified: make(map[string]verifiedPassword),
		checkWait: defaultCheckWait, dummy: map[int][]byte{}}
	concurrent := defaultConcurrentChecks()
	if opts != nil {
		c.mapper = opts.Mapper
		if opts.LockTimeout > 0 {
			c.lockTimeout = opts.LockTimeout
		}
		c.log = opts.Logger
		if opts.MaxConcurrentChecks > 0 {
			concurrent = opts.MaxConcurrentChecks
		}
		if opts.CheckWait > 0 {
			c.checkWait = opts.CheckWait
		}
	}
	c.checks = make(chan struct{}, concurrent)
	if c.mapper == nil {
		c.mapper = DefaultMapper()
	}
	if c.log == nil {
		c.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if _, err := rand.Read(c.hmacKey[:]); err != nil {
		return nil, fmt.Errorf("create password cache key: %w", err)
	}
	if err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// Reload reads the registry file now and installs it. On error the previous devices stay in use.
func (c *Cache) Reload() error {
	c.reloadMu.Lock()
	defer c.reloadMu.Unlock()
	return c.reloadLocked()
}

func (c *Cache) reloadLocked() error {
	// Stat before reading: a write landing between the two makes the next check reload again,
	// never miss the write.
	state, err := statFile(c.path)
	if err != nil {
		return fmt.Errorf("reload registry: %w", err)
	}
	devices, err := loadDevices(c.path, c.lockTimeout)
	if err != nil {
		return fmt.Errorf("reload registry: %w", err)
	}
	c.snap.Store(&snapshot{devices: devices, cost: registryCost(devices), file: state, loaded: time.Now()})

	c.verifiedMu.Lock()
	for id, v := range c.verified {
		if d, ok := devices[id]; !ok || string(d.passwordHash) != v.hash {
			delete(c.verified, id)
		}
	}
	c.verifiedMu.Unlock()
	return nil
}

// Watch checks the registry file every interval and reloads it when its size or modification time
// changed, and at least once a minute regardless. It returns nil when ctx is done. Reload errors are
// logged (once per distinct error) and retried; the previous devices stay in use meanwhile.
func (c *Cache) Watch(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		interval = time.Second
	}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
		reloaded, err := c.reloadIfChanged()
		switch {
		case err != nil && err.Error() != lastErr:
			lastErr = err.Error()
			c.log.Warn("device registry reload failed; keeping previous devices", "path", c.path, "err", err)
		case err == nil && lastErr != "":
			lastErr = ""
			c.log.Info("device registry readable again", "path", c.path, "devices", c.Len())
		case reloaded:
			c.log.Info("device registry reloaded", "path", c.path, "devices", c.Len())
		}
	}
}

func (c *Cache) reloadIfChanged() (bool, error) {
	c.reloadMu.Lock()
	defer c.reloadMu.Unlock()
	state, err := statFile(c.path)
	if err != nil {
		return false, fmt.Errorf("check registry: %w", err)
	}
	cur := c.snap.Load()
	if state == cur.file && time.Since(cur.loaded) < forcedReloadEvery {
		return false, nil
	}
	if err := c.reloadLocked(); err != nil {
		return false, err
	}
	return true, nil
}

func statFile(path string) (fileState, error) {
	info, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fileState{}, nil
	}
	if err != nil {
		return fileState{}, err
	}
	return fileState{exists: true, size: info.Size(), mtime: info.ModTime()}, nil
}

// Len returns the number of devices in the current snapshot.
func (c *Cache) Len() int { return len(c.snap.Load().devices) }

// Get returns a device from the current snapshot.
func (c *Cache) Get(id string) (Device, bool) {
	d, ok := c.snap.Load().devices[id]
	if !ok {
		return Device{}, false
	}
	return *d, true
}

// Authenticate checks a password login. Errors wrap [ErrUnknownDevice], [ErrDeviceDisabled],
// [ErrNoPassword], [ErrBadPassword] or [ErrChecksBusy]; they are for logs and metrics, while the
// client should only learn "bad username or password", so it cannot probe which devices exist.
// Every refusal costs the same bcrypt work, and at most MaxConcurrentChecks comparisons run at once.
func (c *Cache) Authenticate(id, password string) error {
	snap := c.snap.Load()
	d, err := c.enabledDevice(id)
	if err == nil && len(d.passwordHash) == 0 {
		err = ErrNoPassword
	}
	if err != nil {
		if cerr := c.compare(nil, password, snap.cost); errors.Is(cerr, ErrChecksBusy) {
			err = cerr
		}
		return fmt.Errorf("authenticate device %q: %w", id, err)
	}
	mac := hmac.New(sha256.New, c.hmacKey[:])
	mac.Write([]byte(password))
	var sum [sha256.Size]byte
	mac.Sum(sum[:0])

	c.verifiedMu.Lock()
	v, ok := c.verified[id]
	c.verifiedMu.Unlock()
	if ok && v.hash == string(d.passwordHash) && hmac.Equal(v.mac[:], sum[:]) {
		return nil
	}
	if err := c.compare(d.passwordHash, password, snap.cost); err != nil {
		return fmt.Errorf("authenticate device %q: %w", id, err)
	}
	c.verifiedMu.Lock()
	c.verified[id] = verifiedPassword{hash: string(d.passwordHash), mac: sum}
	c.verifiedMu.Unlock()
	return nil
}

// AuthenticateCert accepts a client certificate whose subject CN is cn, for a device registered with
// a certificate identity. The caller must already have verified the certificate chain against the
// configured CA (crypto/tls does, with ClientAuth RequireAndVerifyClientCert); this only maps the
// verified name to a device. Errors wrap [ErrUnknownDevice], [ErrDeviceDisabled] or [ErrNoCertIdentity].
func (c *Cache) AuthenticateCert(cn string) error {
	d, err := c.enabledDevice(cn)
	if err != nil {
		return fmt.Errorf("authenticate certificate %q: %w", cn, err)
	}
	if !d.CertIdentity {
		return fmt.Errorf("authenticate certificate %q: %w", cn, ErrNoCertIdentity)
	}
	return nil
}

// Authorize allows a publish when topic routes to the device's own key, or matches one of the
// device's extra topic filters. It returns the route, so the caller maps each message once. Errors
// wrap [ErrUnknownDevice], [ErrDeviceDisabled], [ErrNotAuthorized] or those of [Mapper.Map].
func (c *Cache) Authorize(deviceID, topic string) (Route, error) {
	d, err := c.enabledDevice(deviceID)
	if err != nil {
		return Route{}, fmt.Errorf("authorize device %q: %w", deviceID, err)
	}
	route, err := c.mapper.Map(topic)
	if err != nil {
		return Route{}, err
	}
	if route.Key == deviceID {
		return route, nil
	}
	for _, f := range d.ExtraTopics {
		if matchFilter(f, topic) {
			return route, nil
		}
	}
	return Route{}, fmt.Errorf("authorize device %q for topic %q: %w: the topic belongs to device %q", deviceID, topic, ErrNotAuthorized, route.Key)
}

// AuthorizeOwned allows a publish to a topic outside the mapping rules (Sparkplug B's
// namespace) whose owner, the device id the topic belongs to, is the device itself, or that matches
// one of the device's extra topic filters. Errors wrap [ErrUnknownDevice], [ErrDeviceDisabled] or
// [ErrNotAuthorized].
func (c *Cache) AuthorizeOwned(deviceID, owner, topic string) error {
	d, err := c.enabledDevice(deviceID)
	if err != nil {
		return fmt.Errorf("authorize device %q: %w", deviceID, err)
	}
	if owner == deviceID {
		return nil
	}
	for _, f := range d.ExtraTopics {
		if matchFilter(f, topic) {
			return nil
		}
	}
	return fmt.Errorf("authorize device %q for topic %q: %w: the topic belongs to device %q", deviceID, topic, ErrNotAuthorized, owner)
}

func (c *Cache) enabledDevice(id string) (*Device, error) {
	d, ok := c.snap.Load().devices[id]
	switch {
	case !ok:
		return nil, ErrUnknownDevice
	case d.Disabled:
		return nil, ErrDeviceDisabled
	}
	return d, nil
}
