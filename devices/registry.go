package devices

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	// bbolt holds the registry because the design keeps all edge metadata in bbolt: one file,
	// transactional, fsync'd on commit, readable by a second process in read-only mode.
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	// bcrypt hashes device passwords: salted, deliberately slow, and the format Mosquitto's
	// password files and most MQTT brokers accept, so hashes can be migrated in either direction.
	"golang.org/x/crypto/bcrypt"
)

var (
	// ErrDeviceExists reports an Add for an id already registered.
	ErrDeviceExists = errors.New("device already exists")
	// ErrUnknownDevice reports an id that is not registered.
	ErrUnknownDevice = errors.New("unknown device")
	// ErrRegistryLocked reports that another process held the registry's write lock for the whole
	// lock timeout.
	ErrRegistryLocked = errors.New("registry is locked by another process")
	// ErrPasswordTooLong reports a password bcrypt cannot hash: it reads at most 72 bytes.
	ErrPasswordTooLong = errors.New("password longer than 72 bytes")
	// ErrNoCredentials reports a device that would have neither a password nor a certificate identity,
	// so nothing could ever authenticate as it.
	ErrNoCredentials = errors.New("device needs a password or a certificate identity")
)

// errRecordVersion marks a record written by a build with a newer record format.
var errRecordVersion = errors.New("unknown record version")

// bucketDevices holds one JSON record per device, keyed by device id.
var bucketDevices = []byte("devices")

// recordVersion is written into every record so a later format can be read alongside this one.
const recordVersion = 1

// Device is a registered device. The password hash stays unexported so that no caller can print or
// serialise it by accident; use [Device.HasPassword].
type Device struct {
	ID string
	// CertIdentity lets the device authenticate with a client certificate whose CN is its id.
	CertIdentity bool
	// ExtraTopics are MQTT topic filters the device may publish to besides its own topics, for a
	// gateway-local bridge that publishes for many sensors through one connection.
	ExtraTopics []string
	Created     time.Time
	// Disabled devices are refused at CONNECT and at publish but keep their record and credentials.
	Disabled bool

	passwordHash []byte
}

// HasPassword reports whether the device can authenticate with a password.
func (d Device) HasPassword() bool { return len(d.passwordHash) > 0 }

// deviceRecord is the on-disk form: JSON, so an operator can read it with "bbolt get" and a later
// version can add fields without a migration.
type deviceRecord struct {
	Version      int       `json:"v"`
	ID           string    `json:"id"`
	PasswordHash string    `json:"password_hash,omitempty"`
	CertIdentity bool      `json:"cert_identity,omitempty"`
	ExtraTopics  []string  `json:"extra_topics,omitempty"`
	Created      time.Time `json:"created"`
	Disabled     bool      `json:"disabled,omitempty"`
}

func encodeDevice(d Device) ([]byte, error) {
	return json.Marshal(deviceRecord{
		Version:      recordVersion,
		ID:           d.ID,
		PasswordHash: string(d.passwordHash),
		CertIdentity: d.CertIdentity,
		ExtraTopics:  d.ExtraTopics,
		Created:      d.Created,
		Disabled:     d.Disabled,
	})
}

func decodeDevice(b []byte) (Device, error) {
	var r deviceRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return Device{}, fmt.Errorf("decode device record: %w", err)
	}
	if r.Version != recordVersion {
		return Device{}, fmt.Errorf("decode device record %q: %w: version %d, this build reads version %d", r.ID, errRecordVersion, r.Version, recordVersion)
	}
	d := Device{
		ID:           r.ID,
		CertIdentity: r.CertIdentity,
		ExtraTopics:  r.ExtraTopics,
		Created:      r.Created,
		Disabled:     r.Disabled,
	}
	if r.PasswordHash != "" {
		d.passwordHash = []byte(r.PasswordHash)
	}
	return d, nil
}

// RegistryOptions tunes a [Registry]; a nil *RegistryOptions means the defaults.
type RegistryOptions struct {
	// BcryptCost is the cost of new password hashes; zero means bcrypt.DefaultCost. Verification
	// uses the cost stored in each hash, so changing it affects only passwords set afterwards.
	BcryptCost int
	// LockTimeout is how long a write waits for another writer; zero means 5 s.
	LockTimeout time.Duration
}

// Registry is the writable device registry, a bbolt file. Each method opens the file, runs one
// transaction and closes it again: bbolt locks the file exclusively while it is open read-write, and
// the edge agent must be able to reload it at any time (see [Cache]), so no handle is kept between
// calls. Passwords are hashed before the file is opened, to keep the lock as short as possible.
type Registry struct {
	path        string
	cost        int
	lockTimeout time.Duration
}

// NewRegistry returns a Registry for the bbolt file at path, created on the first [Registry.Add].
func NewRegistry(path string, opts *RegistryOptions) *Registry {
	r := &Registry{path: path, cost: bcrypt.DefaultCost, lockTimeout: 5 * time.Second}
	if opts != nil {
		if opts.BcryptCost != 0 {
			r.cost = opts.BcryptCost
		}
		if opts.LockTimeout > 0 {
			r.lockTimeout = opts.LockTimeout
		}
	}
	return r
}

// Path returns the registry file's path.
func (r *Registry) Path() string { return r.path }

// Add registers a device with password, which may be empty only for a certificate-only device.
// A zero Created is set to now. Errors wrap [ErrInvalidDeviceID], [ErrDeviceExists],
// [ErrNoCredentials], [ErrPasswordTooLong], [ErrInvalidTopic] (bad extra topic filter) or
// [ErrRegistryLocked].
func (r *Registry) Add(d Device, password string) error {
	if err := CheckDeviceID(d.ID); err != nil {
		return fmt.Errorf("add device: %w", err)
	}
	if password == "" && !d.CertIdentity {
		return fmt.Errorf("add device %q: %w", d.ID, ErrNoCredentials)
	}
	for _, f := range d.ExtraTopics {
		if err := CheckFilter(f); err != nil {
			return fmt.Errorf("add device %q: %w", d.ID, err)
		}
	}
	d.passwordHash = nil
	if password != "" {
		hash, err := r.hash(password)
		if err != nil {
			return fmt.Errorf("add device %q: %w", d.ID, err)
		}
		d.passwordHash = hash
	}
	if d.Created.IsZero() {
		d.Created = time.Now().UTC().Truncate(time.Second)
	}
	value, err := encodeDevice(d)
	if err != nil {
		return fmt.Errorf("add device %q: %w", d.ID, err)
	}
	if err := os.MkdirAll(filepath.Dir(r.path), 0o700); err != nil {
		return fmt.Errorf("add device %q: %w", d.ID, err)
	}
	return r.update(func(b *bolt.Bucket) error {
		if b.Get([]byte(d.ID)) != nil {
			return fmt.Errorf("add device %q: %w", d.ID, ErrDeviceExists)
		}
		return b.Put([]byte(d.ID), value)
	})
}

// Remove deletes a device. Errors wrap [ErrUnknownDevice] or [ErrRegistryLocked].
func (r *Registry) Remove(id string) error {
	if !r.exists() {
		return fmt.Errorf("remove device %q: %w", id, ErrUnknownDevice)
	}
	return r.update(func(b *bolt.Bucket) error {
		if b.Get([]byte(id)) == nil {
			return fmt.Errorf("remove device %q: %w", id, ErrUnknownDevice)
		}
		return b.Delete([]byte(id))
	})
}

// SetPassword replaces a device's password. Errors wrap [ErrUnknownDevice], [ErrPasswordTooLong]
// or [ErrRegistryLocked].
func (r *Registry) SetPassword(id, password string) error {
	if password == "" {
		return fmt.Errorf("set password of device %q: empty password", id)
	}
	if !r.exists() {
		return fmt.Errorf("set password of device %q: %w", id, ErrUnknownDevice)
	}
	hash, err := r.hash(password)
	if err != nil {
		return fmt.Errorf("set password of device %q: %w", id, err)
	}
	return r.modify(id, "set password of", func(d *Device) { d.passwordHash = hash })
}

// SetDisabled disables or re-enables a device. Errors wrap [ErrUnknownDevice] or [ErrRegistryLocked].
func (r *Registry) SetDisabled(id string, disabled bool) error {
	if !r.exists() {
		return fmt.Errorf("disable device %q: %w", id, ErrUnknownDevice)
	}
	return r.modify(id, "disable", func(d *Device) { d.Disabled = disabled })
}

// Get returns one device. Errors wrap [ErrUnknownDevice].
func (r *Registry) Get(id string) (Device, error) {
	devices, err := loadDevices(r.path, r.lockTimeout)
	if err != nil {
		return Device{}, err
	}
	d, ok := devices[id]
	if !ok {
		return Device{}, fmt.Errorf("get device %q: %w", id, ErrUnknownDevice)
	}
	return *d, nil
}

// List returns all devices sorted by id; an absent registry file lists as empty.
func (r *Registry) List() ([]Device, error) {
	var list []Device
	err := view(r.path, r.lockTimeout, func(d Device) { list = append(list, d) })
	return list, err
}

func (r *Registry) hash(password string) ([]byte, error) {
	if len(password) > 72 {
		return nil, ErrPasswordTooLong
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), r.cost)
	if err != nil {
		return nil, fmt.Errorf("hash password: %w", err)
	}
	return hash, nil
}

func (r *Registry) exists() bool {
	_, err := os.Stat(r.path)
	return err == nil
}

func (r *Registry) modify(id, verb string, change func(*Device)) error {
	return r.update(func(b *bolt.Bucket) error {
		v := b.Get([]byte(id))
		if v == nil {
			return fmt.Errorf("%s device %q: %w", verb, id, ErrUnknownDevice)
		}
		d, err := decodeDevice(v)
		if err != nil {
			return fmt.Errorf("%s device %q: %w", verb, id, err)
		}
		change(&d)
		value, err := encodeDevice(d)
		if err != nil {
			return fmt.Errorf("%s device %q: %w", verb, id, err)
		}
		return b.Put([]byte(id), value)
	})
}

func (r *Registry) update(fn func(*bolt.Bucket) error) error {
	db, err := openDB(r.path, false, r.lockTimeout)
	if err != nil {
		return err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketDevices)
		if err != nil {
			return fmt.Errorf("create devices bucket: %w", err)
		}
		return fn(b)
	})
	if closeErr := db.Close(); err == nil && closeErr != nil {
		err = fmt.Errorf("close registry %s: %w", r.path, closeErr)
	}
	return err
}

// openDB opens the registry, turning bbolt's lock timeout into ErrRegistryLocked so callers can
// tell the operator to retry rather than suspect corruption.
func openDB(path string, readOnly bool, timeout time.Duration) (*bolt.DB, error) {
	_, statErr := os.Stat(path)
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: readOnly, Timeout: timeout})
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("open registry %s: %w (waited %v)", path, ErrRegistryLocked, timeout)
	case err != nil:
		return nil, fmt.Errorf("open registry %s: %w", path, damaged(err))
	}
	// bbolt syncs the file it creates but not its folder entry: without this a power cut after
	// "devices add" reported success can lose the whole registry.
	if errors.Is(statErr, fs.ErrNotExist) {
		if err := syncDir(filepath.Dir(path)); err != nil {
			db.Close()
			return nil, fmt.Errorf("create registry %s: %w", path, err)
		}
	}
	return db, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// view reads every device from the file at path in one read-only transaction. An absent file is an
// empty registry: the edge may start before the first device is added.
func view(path string, timeout time.Duration, fn func(d Device)) (err error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	defer func() {
		// bbolt panics on some damaged pages instead of returning an error.
		if r := recover(); r != nil {
			err = fmt.Errorf("read registry %s: %w: %v", path, ErrRegistryDamaged, r)
		}
	}()
	db, err := openDB(path, true, timeout)
	if err != nil {
		return err
	}
	defer db.Close() // read-only: nothing to flush, a close error changes nothing
	return db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDevices)
		if b == nil {
			return nil
		}
		return b.ForEach(func(_, v []byte) error {
			d, err := decodeDevice(v)
			if errors.Is(err, errRecordVersion) {
				// Written by a newer build: not damage, and not to be quarantined.
				return fmt.Errorf("read registry %s: %w", path, err)
			}
			if err != nil {
				return fmt.Errorf("read registry %s: %w: %w", path, ErrRegistryDamaged, err)
			}
			fn(d)
			return nil
		})
	})
}

func loadDevices(path string, timeout time.Duration) (map[string]*Device, error) {
	devices := make(map[string]*Device)
	err := view(path, timeout, func(d Device) { devices[d.ID] = &d })
	return devices, err
}

// GeneratePassword returns a random password with 192 bits of entropy, URL-safe so it survives
// shells, YAML and firmware config files unquoted.
func GeneratePassword() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate password: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}
