package firmwaresim

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"time"
)

// ManifestVersion is the manifest format written by this package; readers refuse other versions.
const ManifestVersion = 1

// Manifest records what each device published and what the broker acked, so verification can
// tell a reading that was acked and then lost (a broken promise) from one that was never acked
// (QoS 0, a lost connection, or still in flight at stop), which a device must expect to resend.
type Manifest struct {
	Version int                        `json:"version"`
	QoS     byte                       `json:"qos"`
	Started time.Time                  `json:"started"`
	Devices map[string]*DeviceManifest `json:"devices"`
}

// DeviceManifest is one device's entry in a [Manifest].
type DeviceManifest struct {
	// LastSeq is the highest seq published: seqs 1..LastSeq were all sent.
	LastSeq uint64 `json:"last_seq"`
	// AckedThrough is the highest seq with every seq from 1 up to it acked.
	AckedThrough uint64 `json:"acked_through"`
	// Acked lists every acked seq as inclusive [first, last] ranges.
	Acked []SeqRange `json:"acked"`
	// Faults counts the faulty publishes by kind; they are outside the seq range.
	Faults map[string]uint64 `json:"faults,omitempty"`
}

// IsAcked reports whether seq was acked.
func (m *DeviceManifest) IsAcked(seq uint64) bool {
	if seq >= 1 && seq <= m.AckedThrough {
		return true
	}
	// Acked is sorted and disjoint: find the first range ending at or after seq.
	i, _ := slices.BinarySearchFunc(m.Acked, seq, func(r SeqRange, s uint64) int { return cmp.Compare(r.Last, s) })
	return i < len(m.Acked) && m.Acked[i].First <= seq
}

// WriteJSON writes the manifest as compact JSON: a fleet of thousands of devices stays a small
// file, and indenting would put every number of every [first, last] range on its own line.
func (m *Manifest) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	if err := enc.Encode(m); err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	return nil
}

// ReadManifest decodes a manifest written by [Manifest.WriteJSON].
func ReadManifest(r io.Reader) (*Manifest, error) {
	var m Manifest
	if err := json.NewDecoder(r).Decode(&m); err != nil {
		return nil, fmt.Errorf("decode manifest: %w", err)
	}
	if m.Version != ManifestVersion {
		return nil, fmt.Errorf("manifest version %d is not supported (this firmware-sim reads version %d): rerun the simulation with this build", m.Version, ManifestVersion)
	}
	return &m, nil
}
