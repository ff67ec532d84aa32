package devices

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/crypto/bcrypt"
)

// TestRepairRegistry: a registry bbolt cannot open, or with one record that does not decode, is
// reported as ErrRegistryDamaged; RepairRegistry moves it to quarantine and keeps every device
// still readable, with its password.
func TestRepairRegistry(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string)
		kept   []string
	}{
		{"meta pages overwritten", func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt([]byte(strings.Repeat("\xab", 8192)), 0); err != nil {
				t.Fatal(err)
			}
		}, nil},
		{"one record garbled", func(t *testing.T, path string) {
			db, err := bolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if err := db.Update(func(tx *bolt.Tx) error {
				return tx.Bucket(bucketDevices).Put([]byte("b"), []byte(`{"v":1,"id":"b","password_ha`))
			}); err != nil {
				t.Fatal(err)
			}
		}, []string{"a", "c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "devices.db")
			reg := NewRegistry(path, &RegistryOptions{BcryptCost: bcrypt.MinCost})
			for _, id := range []string{"a", "b", "c"} {
				if err := reg.Add(Device{ID: id}, "pw-"+id); err != nil {
					t.Fatal(err)
				}
			}
			tc.damage(t, path)
			_, err := NewCache(path, nil)
			if !errors.Is(err, ErrRegistryDamaged) {
				t.Fatalf("NewCache on a damaged registry: %v, want ErrRegistryDamaged", err)
			}
			rep, err := RepairRegistry(path, err)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(rep.Quarantined); err != nil {
				t.Fatalf("quarantined file: %v", err)
			}
			if strings.Join(rep.Kept, ",") != strings.Join(tc.kept, ",") || rep.Lost == "" {
				t.Fatalf("repair %+v, want kept %v and what was lost", rep, tc.kept)
			}
			c, err := NewCache(path, nil)
			if err != nil {
				t.Fatalf("NewCache after repair: %v", err)
			}
			if c.Len() != len(tc.kept) {
				t.Fatalf("%d devices after repair, want %d", c.Len(), len(tc.kept))
			}
			for _, id := range tc.kept {
				if err := c.Authenticate(id, "pw-"+id); err != nil {
					t.Errorf("kept device %s: %v", id, err)
				}
			}
		})
	}
}

// TestNewerRecordVersionIsNotDamage: a record written by a newer build is an error to report,
// not damage to quarantine.
func TestNewerRecordVersionIsNotDamage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "devices.db")
	if err := NewRegistry(path, &RegistryOptions{BcryptCost: bcrypt.MinCost}).Add(Device{ID: "a"}, "pw"); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketDevices).Put([]byte("n"), []byte(`{"v":2,"id":"n"}`)) })
	db.Close()
	if _, err := NewCache(path, nil); err == nil || errors.Is(err, ErrRegistryDamaged) {
		t.Fatalf("newer record: %v, want an error that is not ErrRegistryDamaged", err)
	}
}
