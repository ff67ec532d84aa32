package forward

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/tributary-iot/tributary/storage"
)

// The edge log's identity lives in its own metadata, so it is created with the log and goes
// away with it: a wiped or replaced data dir comes back with a new one.
const (
	metaNamespace   = "sync.forward"
	metaIncarnation = "incarnation"
	// laneNamespace holds the lanes that moved to an incarnation of their own because their
	// partition went back below what central holds (key = stream, NUL, partition).
	laneNamespace = "sync.forward.lanes"
)

// laneIdentity is what a lane tells central about the log its offsets come from.
type laneIdentity struct {
	Incarnation string `json:"incarnation"`
	// Base: offsets below it are the previous incarnation's records, unchanged.
	Base int64 `json:"base"`
}

func newIncarnationID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("read random incarnation id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// logIncarnation returns the edge log's incarnation, creating it (durably) on first use.
func logIncarnation(log *storage.Log) (string, error) {
	v, err := log.Meta(metaNamespace, metaIncarnation)
	if err != nil {
		return "", fmt.Errorf("read log incarnation: %w", err)
	}
	if len(v) > 0 {
		return string(v), nil
	}
	id, err := newIncarnationID()
	if err != nil {
		return "", err
	}
	if err := log.SetMeta(metaNamespace, metaIncarnation, []byte(id)); err != nil {
		return "", fmt.Errorf("store log incarnation: %w", err)
	}
	return id, nil
}

func laneMetaKey(k laneKey) string { return k.stream + "\x00" + strconv.Itoa(k.partition) }

// laneIdentities reads the lanes that have an incarnation of their own.
func laneIdentities(log *storage.Log) (map[string]laneIdentity, error) {
	out := map[string]laneIdentity{}
	err := log.ScanMeta(laneNamespace, func(k string, v []byte) error {
		var id laneIdentity
		if err := json.Unmarshal(v, &id); err != nil {
			return fmt.Errorf("read lane incarnation %q: %w", k, err)
		}
		out[k] = id
		return nil
	})
	return out, err
}

// fork gives a lane a new incarnation that keeps the offsets below base (what the partition held
// when the log was opened) as the previous incarnation's, and stores it before it is used.
func (f *Forwarder) fork(ln *lane, base int64) (laneIdentity, error) {
	id, err := newIncarnationID()
	if err != nil {
		return laneIdentity{}, err
	}
	li := laneIdentity{Incarnation: id, Base: base}
	v, _ := json.Marshal(li)
	if err := f.log.SetMeta(laneNamespace, laneMetaKey(ln.key), v); err != nil {
		return laneIdentity{}, fmt.Errorf("store lane incarnation: %w", err)
	}
	return li, nil
}
