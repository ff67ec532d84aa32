package devices

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// ErrChecksBusy reports a password login refused because every password check slot stayed taken
// for the whole wait (see [CacheOptions.MaxConcurrentChecks]): a flood of logins is under way.
var ErrChecksBusy = errors.New("too many password checks at once; try again later")

// maxPasswordBytes is what bcrypt reads of a password; it ignores the rest, so a longer login
// password would match a stored one it merely starts with.
const maxPasswordBytes = 72

// defaultCheckWait bounds how long a login waits for a check slot: long enough to ride out a
// burst of reconnects after a power cut, short enough that a device retries instead of hanging.
const defaultCheckWait = 5 * time.Second

// defaultConcurrentChecks leaves at least half the cores to ingest: a bcrypt check at the default
// cost takes tens of milliseconds of one core, and a flood of wrong passwords would otherwise
// occupy every core and delay every device's acks.
func defaultConcurrentChecks() int { return max(1, runtime.GOMAXPROCS(0)/2) }

// compare runs one bcrypt comparison in a check slot. hash nil means "no such password": the
// comparison runs against a dummy hash of the registry's cost and fails, so an unknown, disabled
// or certificate-only device costs a login the same time as a known one with a wrong password,
// and CONNACK timing does not tell which device ids exist.
func (c *Cache) compare(hash []byte, password string, cost int) error {
	timer := time.NewTimer(c.checkWait)
	defer timer.Stop()
	select {
	case c.checks <- struct{}{}:
	case <-timer.C:
		return ErrChecksBusy
	}
	defer func() { <-c.checks }()
	c.passwordChecks.Add(1)
	if hash == nil {
		dummy, err := c.dummyHash(cost)
		if err != nil {
			return err
		}
		_ = bcrypt.CompareHashAndPassword(dummy, []byte(password))
		return ErrBadPassword
	}
	if len(password) > maxPasswordBytes {
		// Same work as a real check, then refuse: bcrypt would ignore the bytes past 72.
		_ = bcrypt.CompareHashAndPassword(hash, []byte(password[:maxPasswordBytes]))
		return ErrBadPassword
	}
	err := bcrypt.CompareHashAndPassword(hash, []byte(password))
	switch {
	case errors.Is(err, bcrypt.ErrMismatchedHashAndPassword):
		return ErrBadPassword
	case err != nil:
		return fmt.Errorf("check password: %w", err)
	}
	return nil
}

// dummyHash returns a bcrypt hash of a random secret at cost, made once per cost.
func (c *Cache) dummyHash(cost int) ([]byte, error) {
	c.dummyMu.Lock()
	defer c.dummyMu.Unlock()
	if h, ok := c.dummy[cost]; ok {
		return h, nil
	}
	secret := make([]byte, 18)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("make dummy password hash: %w", err)
	}
	h, err := bcrypt.GenerateFromPassword([]byte(base64.RawURLEncoding.EncodeToString(secret)), cost)
	if err != nil {
		return nil, fmt.Errorf("make dummy password hash: %w", err)
	}
	c.dummy[cost] = h
	return h, nil
}

// registryCost is the bcrypt cost most of the registry's hashes use, for the dummy comparison.
func registryCost(devices map[string]*Device) int {
	counts := map[int]int{}
	best, bestN := bcrypt.DefaultCost, 0
	for _, d := range devices {
		if len(d.passwordHash) == 0 {
			continue
		}
		cost, err := bcrypt.Cost(d.passwordHash)
		if err != nil {
			continue
		}
		counts[cost]++
		if n := counts[cost]; n > bestN || n == bestN && cost > best {
			best, bestN = cost, n
		}
	}
	return best
}

// PasswordChecks is the number of bcrypt comparisons run since the cache was made, dummy ones
// included; logins that matched a remembered password cost none.
func (c *Cache) PasswordChecks() int64 { return c.passwordChecks.Load() }
