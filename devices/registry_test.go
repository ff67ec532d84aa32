package devices

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/crypto/bcrypt"
)

// newTestRegistry uses bcrypt's minimum cost so the package's tests stay fast; production uses
// bcrypt.DefaultCost.
func newTestRegistry(t *testing.T) *Registry {
	t.Helper()
	return NewRegistry(filepath.Join(t.TempDir(), "data", "devices.db"), &RegistryOptions{
		BcryptCost:  bcrypt.MinCost,
		LockTimeout: 200 * time.Millisecond,
	})
}

func TestRegistryRoundTrip(t *testing.T) {
	reg := newTestRegistry(t)
	if list, err := reg.List(); err != nil || len(list) != 0 {
		t.Fatalf("List on absent file = %v, %v; want empty", list, err)
	}
	created := time.Date(2024, 6, 10, 6, 13, 20, 0, time.UTC)
	if err := reg.Add(Device{ID: "boiler-7", Created: created, ExtraTopics: []string{"bridge/+/x"}}, "s3cret-pw"); err != nil {
		t.Fatal(err)
	}
	if err := reg.Add(Device{ID: "cam-1", CertIdentity: true}, ""); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(reg.Path())
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("registry file mode %v, want 0600: it holds password hashes", perm)
	}
	raw, err := os.ReadFile(reg.Path())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), "s3cret-pw") {
		t.Fatal("registry file contains the plaintext password")
	}

	d, err := reg.Get("boiler-7")
	if err != nil {
		t.Fatal(err)
	}
	if d.ID != "boiler-7" || !d.Created.Equal(created) || !d.HasPassword() || d.CertIdentity || d.Disabled ||
		len(d.ExtraTopics) != 1 || d.ExtraTopics[0] != "bridge/+/x" {
		t.Fatalf("Get = %+v", d)
	}
	if !strings.HasPrefix(string(d.passwordHash), "$2") {
		t.Fatalf("stored hash %q is not bcrypt", d.passwordHash)
	}
	list, err := reg.List()
	if err != nil || len(list) != 2 || list[0].ID != "boiler-7" || list[1].ID != "cam-1" {
		t.Fatalf("List = %+v, %v", list, err)
	}
	if list[1].HasPassword() || !list[1].CertIdentity || list[1].Created.IsZero() {
		t.Fatalf("cert-only device = %+v", list[1])
	}

	if err := reg.Add(Device{ID: "boiler-7"}, "other"); !errors.Is(err, ErrDeviceExists) {
		t.Fatalf("duplicate Add error = %v", err)
	}
	if err := reg.Remove("boiler-7"); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Get("boiler-7"); !errors.Is(err, ErrUnknownDevice) {
		t.Fatalf("Get after Remove error = %v", err)
	}
	if err := reg.Remove("boiler-7"); !errors.Is(err, ErrUnknownDevice) {
		t.Fatalf("second Remove error = %v", err)
	}
}

func TestRegistryRefusesBadInput(t *testing.T) {
	reg := newTestRegistry(t)
	for _, tt := range []struct {
		d        Device
		password string
		want     error
	}{
		{Device{ID: "bad id"}, "pw", ErrInvalidDeviceID},
		{Device{ID: ""}, "pw", ErrInvalidDeviceID},
		{Device{ID: "ok"}, "", ErrNoCredentials},
		{Device{ID: "ok"}, strings.Repeat("p", 73), ErrPasswordTooLong},
		{Device{ID: "ok", ExtraTopics: []string{"a/#/b"}}, "pw", ErrInvalidTopic},
	} {
		if err := reg.Add(tt.d, tt.password); !errors.Is(err, tt.want) {
			t.Errorf("Add(%+v) error = %v, want %v", tt.d, err, tt.want)
		}
	}
	if _, err := os.Stat(reg.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("refused Adds created the registry file (stat: %v)", err)
	}
	for name, err := range map[string]error{
		"Remove":      reg.Remove("ghost"),
		"SetPassword": reg.SetPassword("ghost", "pw"),
		"SetDisabled": reg.SetDisabled("ghost", true),
	} {
		if !errors.Is(err, ErrUnknownDevice) {
			t.Errorf("%s on absent registry error = %v, want ErrUnknownDevice", name, err)
		}
	}
	if _, err := os.Stat(reg.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("operations on unknown devices created the registry file (stat: %v)", err)
	}
}

func TestAuthenticate(t *testing.T) {
	reg := newTestRegistry(t)
	must(t, reg.Add(Device{ID: "boiler-7"}, "right-pw"))
	must(t, reg.Add(Device{ID: "cam-1", CertIdentity: true}, ""))
	must(t, reg.Add(Device{ID: "both", CertIdentity: true}, "pw2"))
	must(t, reg.Add(Device{ID: "off"}, "pw3"))
	must(t, reg.SetDisabled("off", true))

	c, err := NewCache(reg.Path(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Len() != 4 {
		t.Fatalf("Len = %d", c.Len())
	}
	for _, tt := range []struct {
		id, password string
		want         error
	}{
		{"boiler-7", "right-pw", nil},
		{"boiler-7", "right-pw", nil}, // from the verified cache
		{"boiler-7", "wrong-pw", ErrBadPassword},
		{"boiler-7", "", ErrBadPassword},
		{"boiler-7", "right-pw ", ErrBadPassword},
		{"ghost", "right-pw", ErrUnknownDevice},
		{"cam-1", "", ErrNoPassword},
		{"both", "pw2", nil},
		{"off", "pw3", ErrDeviceDisabled},
	} {
		if err := c.Authenticate(tt.id, tt.password); !errors.Is(err, tt.want) {
			t.Errorf("Authenticate(%q, %q) = %v, want %v", tt.id, tt.password, err, tt.want)
		}
	}
	for cn, want := range map[string]error{
		"cam-1":    nil,
		"both":     nil,
		"boiler-7": ErrNoCertIdentity,
		"ghost":    ErrUnknownDevice,
		"off":      ErrDeviceDisabled,
	} {
		if err := c.AuthenticateCert(cn); !errors.Is(err, want) {
			t.Errorf("AuthenticateCert(%q) = %v, want %v", cn, err, want)
		}
	}

	// A changed password invalidates the remembered verification on reload.
	must(t, reg.SetPassword("boiler-7", "new-pw"))
	if err := c.Authenticate("boiler-7", "right-pw"); err != nil {
		t.Fatalf("before reload the old snapshot still applies: %v", err)
	}
	must(t, c.Reload())
	if err := c.Authenticate("boiler-7", "right-pw"); !errors.Is(err, ErrBadPassword) {
		t.Fatalf("old password after change and reload: %v, want ErrBadPassword", err)
	}
	if err := c.Authenticate("boiler-7", "new-pw"); err != nil {
		t.Fatalf("new password: %v", err)
	}
	// Re-enabling takes effect on reload too.
	must(t, reg.SetDisabled("off", false))
	must(t, c.Reload())
	if err := c.Authenticate("off", "pw3"); err != nil {
		t.Fatalf("re-enabled device: %v", err)
	}
}

func TestAuthenticateStormUsesVerifiedCache(t *testing.T) {
	// At the default cost, 200 bcrypt checks would take seconds; the verified cache makes the
	// storm cost one check. Use the default cost here so the test can tell the difference.
	path := filepath.Join(t.TempDir(), "devices.db")
	reg := NewRegistry(path, nil)
	must(t, reg.Add(Device{ID: "boiler-7"}, "pw"))
	c, err := NewCache(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	must(t, c.Authenticate("boiler-7", "pw"))
	first := time.Since(start)
	start = time.Now()
	var wg sync.WaitGroup
	for range 200 {
		wg.Go(func() {
			if err := c.Authenticate("boiler-7", "pw"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	storm := time.Since(start)
	if storm > first*5 {
		t.Fatalf("200 cached logins took %v, one bcrypt check took %v: cache not used", storm, first)
	}
}

func TestCacheAuthorize(t *testing.T) {
	reg := newTestRegistry(t)
	must(t, reg.Add(Device{ID: "boiler-7"}, "pw"))
	must(t, reg.Add(Device{ID: "boiler-8"}, "pw"))
	must(t, reg.Add(Device{ID: "bridge-1", ExtraTopics: []string{"devices/+/temperature"}}, "pw"))
	must(t, reg.Add(Device{ID: "off"}, "pw"))
	must(t, reg.SetDisabled("off", true))
	c, err := NewCache(reg.Path(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		id, topic string
		want      error
		route     Route
	}{
		{"boiler-7", "devices/boiler-7/temperature", nil, Route{"temperature", "boiler-7"}},
		{"boiler-7", "devices/boiler-8/temperature", ErrNotAuthorized, Route{}},
		{"boiler-8", "devices/boiler-7/humidity/x", ErrNotAuthorized, Route{}},
		{"boiler-7", "devices/boiler-7/deadletter", ErrReservedStream, Route{}},
		{"boiler-7", "elsewhere/boiler-7/t", ErrNoRoute, Route{}},
		{"ghost", "devices/ghost/temperature", ErrUnknownDevice, Route{}},
		{"off", "devices/off/temperature", ErrDeviceDisabled, Route{}},
		// The bridge publishes for sensors through its extra filter; the key stays the sensor's.
		{"bridge-1", "devices/sensor-9/temperature", nil, Route{"temperature", "sensor-9"}},
		{"bridge-1", "devices/sensor-9/humidity", ErrNotAuthorized, Route{}},
	} {
		route, err := c.Authorize(tt.id, tt.topic)
		if !errors.Is(err, tt.want) || route != tt.route {
			t.Errorf("Authorize(%q, %q) = %+v, %v; want %+v, %v", tt.id, tt.topic, route, err, tt.route, tt.want)
		}
	}
}

func TestRegistryLocked(t *testing.T) {
	reg := newTestRegistry(t)
	must(t, reg.Add(Device{ID: "boiler-7"}, "pw"))
	c, err := NewCache(reg.Path(), &CacheOptions{LockTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// Another writer (an older CLI still running, say) holds the exclusive lock.
	db, err := bolt.Open(reg.Path(), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = reg.Add(Device{ID: "boiler-8"}, "pw")
	if !errors.Is(err, ErrRegistryLocked) {
		t.Fatalf("Add under lock error = %v, want ErrRegistryLocked", err)
	}
	if !strings.Contains(err.Error(), reg.Path()) {
		t.Errorf("lock error %q does not name the file", err)
	}
	if err := c.Reload(); !errors.Is(err, ErrRegistryLocked) {
		t.Fatalf("Reload under lock error = %v, want ErrRegistryLocked", err)
	}
	if err := c.Authenticate("boiler-7", "pw"); err != nil {
		t.Fatalf("a failed reload must keep the previous devices: %v", err)
	}
	must(t, db.Close())
	must(t, reg.Add(Device{ID: "boiler-8"}, "pw"))
	must(t, c.Reload())
	if c.Len() != 2 {
		t.Fatalf("Len after lock released = %d", c.Len())
	}
}

func TestWatchPicksUpChanges(t *testing.T) {
	dir := t.TempDir()
	reg := NewRegistry(filepath.Join(dir, "devices.db"), &RegistryOptions{BcryptCost: bcrypt.MinCost})
	// The agent starts before the registry exists.
	c, err := NewCache(reg.Path(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Len() != 0 {
		t.Fatalf("Len = %d on absent file", c.Len())
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Watch(ctx, 20*time.Millisecond) }()

	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second) // the watch polls every 20ms; this only bounds a failure
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("watch did not pick up: %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	must(t, reg.Add(Device{ID: "boiler-7"}, "pw1"))
	// Polled with Get, not Authenticate: before the device is known each login would cost a
	// dummy bcrypt at the default cost, which on a loaded machine eats the whole wait.
	waitFor("first device", func() bool { _, ok := c.Get("boiler-7"); return ok })
	if err := c.Authenticate("boiler-7", "pw1"); err != nil {
		t.Fatalf("first device's password: %v", err)
	}
	must(t, reg.SetPassword("boiler-7", "pw2"))
	waitFor("password change", func() bool { return c.Authenticate("boiler-7", "pw2") == nil })
	if err := c.Authenticate("boiler-7", "pw1"); !errors.Is(err, ErrBadPassword) {
		t.Fatalf("old password after change: %v", err)
	}
	must(t, reg.Add(Device{ID: "boiler-8"}, "pw"))
	waitFor("second device", func() bool { _, ok := c.Get("boiler-8"); return ok })
	must(t, reg.Remove("boiler-7"))
	waitFor("removal", func() bool { return errors.Is(c.Authenticate("boiler-7", "pw2"), ErrUnknownDevice) })

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Watch returned %v, want nil on cancel", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Watch did not return after cancel")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
