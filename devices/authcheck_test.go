package devices

import (
	"errors"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

func registryAtCost(t *testing.T, cost int, add func(r *Registry)) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "devices.db")
	add(NewRegistry(path, &RegistryOptions{BcryptCost: cost}))
	return path
}

// TestRefusalsCostACheck: an unknown, disabled or certificate-only device, and a password longer
// than bcrypt reads, are refused only after the same bcrypt work as a wrong password, so the time
// to the CONNACK does not tell which device ids exist.
func TestRefusalsCostACheck(t *testing.T) {
	long := strings.Repeat("p", 72)
	path := registryAtCost(t, bcrypt.MinCost, func(r *Registry) {
		for _, d := range []struct {
			dev Device
			pw  string
		}{{Device{ID: "known"}, "right"}, {Device{ID: "off", Disabled: true}, "right"},
			{Device{ID: "cam", CertIdentity: true}, ""}, {Device{ID: "long"}, long}} {
			if err := r.Add(d.dev, d.pw); err != nil {
				t.Fatal(err)
			}
		}
	})
	c, err := NewCache(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id, pw string
		want   error
	}{
		{"known", "wrong", ErrBadPassword},
		{"nobody", "wrong", ErrUnknownDevice},
		{"off", "right", ErrDeviceDisabled},
		{"cam", "wrong", ErrNoPassword},
		// bcrypt ignores bytes past 72: without the length check this login would pass.
		{"long", long + "-and-more", ErrBadPassword},
	} {
		before := c.PasswordChecks()
		err := c.Authenticate(tc.id, tc.pw)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.id, err, tc.want)
		}
		if n := c.PasswordChecks() - before; n != 1 {
			t.Errorf("%s: %d bcrypt comparisons, want 1", tc.id, n)
		}
	}
	if err := c.Authenticate("long", long); err != nil {
		t.Errorf("72-byte password: %v", err)
	}
}

// TestUnknownDeviceTakesAsLongAsKnown compares the refusal times at the default cost: the dummy
// hash has the registry's cost, so an unknown id is not refused at once.
func TestUnknownDeviceTakesAsLongAsKnown(t *testing.T) {
	path := registryAtCost(t, bcrypt.DefaultCost, func(r *Registry) {
		if err := r.Add(Device{ID: "known"}, "right"); err != nil {
			t.Fatal(err)
		}
	})
	c, err := NewCache(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Authenticate("warm-up", "x") // makes the dummy hash
	median := func(id string) time.Duration {
		var d []time.Duration
		for range 5 {
			start := time.Now()
			_ = c.Authenticate(id, "wrong")
			d = append(d, time.Since(start))
		}
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return d[2]
	}
	known, unknown := median("known"), median("nobody")
	t.Logf("median refusal: known id %v, unknown id %v", known, unknown)
	if unknown < known/3 {
		t.Errorf("unknown id refused in %v, known in %v: timing tells them apart", unknown, known)
	}
}

// TestConcurrentChecksBounded: with one check slot, logins that cannot get it within CheckWait
// fail with ErrChecksBusy instead of all running bcrypt at once.
func TestConcurrentChecksBounded(t *testing.T) {
	path := registryAtCost(t, 12, func(r *Registry) { // about a quarter second per check
		if err := r.Add(Device{ID: "known"}, "right"); err != nil {
			t.Fatal(err)
		}
	})
	c, err := NewCache(path, &CacheOptions{MaxConcurrentChecks: 1, CheckWait: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = c.Authenticate("known", "wrong") })
	}
	wg.Wait()
	var busy, bad int
	for _, err := range errs {
		switch {
		case errors.Is(err, ErrChecksBusy):
			busy++
		case errors.Is(err, ErrBadPassword):
			bad++
		default:
			t.Errorf("unexpected %v", err)
		}
	}
	if bad < 1 || busy < 2 || c.PasswordChecks() != int64(bad) {
		t.Errorf("%d checked, %d busy, %d comparisons: want one slot at a time", bad, busy, c.PasswordChecks())
	}
}
