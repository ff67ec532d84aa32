package devices

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// ErrRegistryDamaged reports a registry file bbolt cannot read, or one holding a record that
// does not decode; [RepairRegistry] quarantines it and keeps what is readable.
var ErrRegistryDamaged = errors.New("device registry file is damaged")

// damaged marks err as damage when it is bbolt's way of saying the file is broken (rather than
// locked, missing or not permitted).
func damaged(err error) error {
	if errors.Is(err, berrors.ErrInvalid) || errors.Is(err, berrors.ErrChecksum) ||
		errors.Is(err, berrors.ErrVersionMismatch) || errors.Is(err, berrors.ErrInvalidMapping) ||
		strings.Contains(err.Error(), "file size too small") {
		return fmt.Errorf("%w: %w", ErrRegistryDamaged, err)
	}
	return err
}

// RegistryRepair is what [RepairRegistry] did.
type RegistryRepair struct {
	Cause       string   // why the file was judged damaged
	Quarantined string   // where the damaged file is now
	Kept        []string // device ids read from it and written to the new registry
	Unreadable  int      // records found but not decodable
	// Lost says what the operator must do: devices not in Kept must be added again.
	Lost string
}

// RepairRegistry moves a damaged registry file to a quarantine folder beside it, writes a new
// registry holding every device that can still be read from it, and says what was lost. Nothing
// is rebuilt from elsewhere: passwords exist only as these hashes, so a device not kept needs
// "tributary devices add" (and its new password) again. cause is the error that showed the damage.
func RepairRegistry(path string, cause error) (*RegistryRepair, error) {
	qdir := filepath.Join(filepath.Dir(path), "quarantine")
	if err := os.MkdirAll(qdir, 0o700); err != nil {
		return nil, fmt.Errorf("quarantine damaged registry: %w", err)
	}
	dst := filepath.Join(qdir, filepath.Base(path)+"."+time.Now().UTC().Format("20060102T150405.000Z"))
	if err := os.Rename(path, dst); err != nil {
		return nil, fmt.Errorf("quarantine damaged registry: %w", err)
	}
	rep := &RegistryRepair{Quarantined: dst}
	if cause != nil {
		rep.Cause = cause.Error()
	}
	kept, unreadable := salvageDevices(dst)
	rep.Unreadable = unreadable
	if len(kept) > 0 {
		db, err := openDB(path, false, 5*time.Second)
		if err != nil {
			return nil, fmt.Errorf("write repaired registry: %w", err)
		}
		err = db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists(bucketDevices)
			if err != nil {
				return err
			}
			for id, v := range kept {
				if err := b.Put([]byte(id), v); err != nil {
					return err
				}
				rep.Kept = append(rep.Kept, id)
			}
			return nil
		})
		if cerr := db.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("write repaired registry: %w", err)
		}
	}
	sort.Strings(rep.Kept)
	rep.Lost = fmt.Sprintf("%d devices kept; any other device must be added again with 'tributary devices add' (its old password hash was in the damaged file)", len(rep.Kept))
	return rep, nil
}

// salvageDevices reads every record that decodes from the damaged file at path; bbolt panics on
// some damaged pages, and a panic ends the salvage with what was read so far.
func salvageDevices(path string) (kept map[string][]byte, unreadable int) {
	kept = map[string][]byte{}
	defer func() {
		if r := recover(); r != nil {
			unreadable++
		}
	}()
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return kept, 0
	}
	defer db.Close()
	_ = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDevices)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			d, err := decodeDevice(v)
			if err != nil || d.ID != string(k) || CheckDeviceID(d.ID) != nil {
				unreadable++
				return nil
			}
			kept[d.ID] = append([]byte(nil), v...)
			return nil
		})
	})
	return kept, unreadable
}
