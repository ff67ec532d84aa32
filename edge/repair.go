package edge

import (
	"errors"
	"fmt"
	"strings"

	"github.com/tributary-iot/tributary/devices"
)

// openRegistry loads the device registry. A damaged file does not stop the agent: it goes to
// quarantine, the devices still readable are kept, and the log says which were kept and what the
// operator must do about the rest. An empty registry refuses every device with credentials, which
// is the safe way to start.
func (a *Agent) openRegistry(opts *devices.CacheOptions) (*devices.Cache, error) {
	path := a.cfg.Registry
	cache, err := devices.NewCache(path, opts)
	if !errors.Is(err, devices.ErrRegistryDamaged) {
		return cache, err
	}
	rep, rerr := devices.RepairRegistry(path, err)
	if rerr != nil {
		return nil, fmt.Errorf("%w; moving it aside also failed: %w", err, rerr)
	}
	kept := strings.Join(rep.Kept, ",")
	if len(kept) > 2000 {
		kept = kept[:2000] + "..."
	}
	a.logger.Error("device registry was damaged: moved to quarantine; starting with the devices still readable",
		"cause", rep.Cause, "quarantined", rep.Quarantined, "kept", len(rep.Kept), "kept_ids", kept,
		"unreadable_records", rep.Unreadable, "lost", rep.Lost)
	cache, err = devices.NewCache(path, opts)
	if err != nil {
		return nil, fmt.Errorf("load repaired device registry: %w", err)
	}
	return cache, nil
}
