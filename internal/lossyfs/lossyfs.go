//go:build linux

package lossyfs

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/internal/testprog"

	// go-fuse is the FUSE server library: its loopback node is the passthrough this file system
	// extends with durable-state bookkeeping.
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Options tune a mount; nil means the defaults.
type Options struct {
	// TearWrites makes a cut keep a prefix, ending at a 512-byte boundary, of each file's last
	// pending write instead of dropping it whole.
	TearWrites bool
	// Seed drives the choice of torn prefixes, so a failing round can be replayed.
	Seed uint64
	// Watch, if set, is called after every mutating operation, before its caller is answered.
	// Returning true freezes the mount: that operation and every later one wait for [FS.Cut].
	// It runs on the file system's request goroutines and must not touch the mount.
	Watch func(Event) bool
}

// Op names a mutating operation seen by [Options.Watch].
type Op string

// The operations a watcher sees.
const (
	OpCreate   Op = "create" // a file, folder, node or symlink
	OpWrite    Op = "write"
	OpTruncate Op = "truncate"
	OpRename   Op = "rename"
	OpRemove   Op = "remove" // unlink or rmdir
	OpLink     Op = "link"
	OpFsync    Op = "fsync" // of a file
	OpSyncDir  Op = "syncdir"
)

// Event is one operation, with paths relative to the mount.
type Event struct {
	Op   Op
	Path string
	// To is the new name of a rename or link.
	To string
}

// Stats count what the mount has seen since it was made.
type Stats struct {
	Writes, FileSyncs, DirSyncs int64
	Cuts                        int
}

// CutReport says what a power cut threw away.
type CutReport struct {
	// Killed counts the processes that were still alive and got SIGKILL.
	Killed int
	// FilesReverted counts files with writes, truncations or allocations lost.
	FilesReverted int
	// DirsReverted counts folders whose entries differed from their durable ones.
	DirsReverted int
	// TornWrites counts pending writes of which a non-empty prefix was kept.
	TornWrites int
}

const rootID = 1

// FS is a lossy mount. Its methods are safe for concurrent use.
type FS struct {
	opts                 Options
	backing, shadow, mnt string
	server               *fuse.Server
	rng                  *rand.Rand
	gate                 sync.RWMutex // held shared by operations, exclusively by Cut
	cutMu                sync.Mutex   // one Cut at a time
	mu                   sync.Mutex   // guards everything below
	frozen               bool
	thaw                 chan struct{} // closed to answer frozen operations
	thawed               bool          // thaw is closed
	nextID               uint64
	byIno                map[uint64]uint64           // backing inode -> identity, for live inodes
	pending              map[uint64]*pendingFile     // identity -> changes since its last sync
	durable              map[uint64]map[string]entry // folder identity -> durable entries
	syncLocks            map[uint64]*sync.Mutex      // identity -> serialises its syncs
	stats                Stats
}

// entry is a durable folder entry.
type entry struct {
	id     uint64
	mode   uint32 // syscall.S_IF* | permissions
	target string // of a symlink
}

// pendingFile is what was done to a file since its last sync.
type pendingFile struct {
	dirty []extent
	whole bool // truncated or allocated: copy it all at the next sync
	last  *lastWrite
}

type extent struct{ off, end int64 }

type lastWrite struct {
	off  int64
	data []byte
}

// maxExtents bounds the list of dirty ranges of one file; past it they merge into one range.
const maxExtents = 64

// maxTornBytes bounds how much of a write is remembered for tearing.
const maxTornBytes = 1 << 20

// Mount makes a lossy mount over an empty backing folder, all in t's temporary folders, and
// unmounts it when the test ends (after cleanups registered later, such as stopping processes).
// Where FUSE is unavailable the test is skipped, or fails under CI=true.
func Mount(t testing.TB, opts *Options) *FS {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testprog.Missing(t, "lossyfs needs FUSE: /dev/fuse is missing (%v); load the fuse module or run in a container with --device /dev/fuse", err)
	}
	base := t.TempDir()
	f, err := New(filepath.Join(base, "backing"), filepath.Join(base, "shadow"), filepath.Join(base, "mnt"), opts)
	if err != nil {
		if errors.Is(err, syscall.EPERM) || errors.Is(err, os.ErrPermission) {
			testprog.Missing(t, "lossyfs cannot mount FUSE here (%v): run as root or with CAP_SYS_ADMIN", err)
		}
		t.Fatalf("mount lossy file system: %v", err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Errorf("unmount lossy file system: %v", err)
		}
	})
	return f
}

// New mounts a lossy file system at mnt over backing, keeping durable copies in shadow. The three
// folders are created as needed; what backing already holds is taken as durable.
func New(backing, shadow, mnt string, opts *Options) (*FS, error) {
	if opts == nil {
		opts = &Options{}
	}
	for _, d := range []string{backing, shadow, mnt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("create lossyfs folder: %w", err)
		}
	}
	f := &FS{
		opts: *opts, backing: backing, shadow: shadow, mnt: mnt,
		rng:       rand.New(rand.NewPCG(opts.Seed, 0x10557)),
		thaw:      make(chan struct{}),
		nextID:    rootID + 1,
		byIno:     make(map[uint64]uint64),
		pending:   make(map[uint64]*pendingFile),
		durable:   make(map[uint64]map[string]entry),
		syncLocks: make(map[uint64]*sync.Mutex),
	}
	if err := f.adopt(); err != nil {
		return nil, err
	}
	if err := f.mount(); err != nil {
		return nil, err
	}
	return f, nil
}

// Dir is the mount point: give it to the processes under test.
func (f *FS) Dir() string { return f.mnt }

// Stats returns counts of what the mount has seen.
func (f *FS) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats
}

// Frozen reports whether a watcher has frozen the mount, waiting for a cut.
func (f *FS) Frozen() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.frozen
}

func (f *FS) mount() error {
	root, err := fs.NewLoopbackRoot(f.backing)
	if err != nil {
		return fmt.Errorf("open backing folder: %w", err)
	}
	lb := root.(*fs.LoopbackNode)
	top := &node{LoopbackNode: lb, lfs: f}
	lb.RootData.RootNode = top
	server, err := fs.Mount(f.mnt, top, &fs.Options{MountOptions: fuse.MountOptions{
		// mount(2) directly as root, so no fusermount helper process is involved.
		DirectMount: true,
		FsName:      "lossyfs",
		Name:        "lossyfs",
	}})
	if err != nil {
		return fmt.Errorf("mount %s: %w", filepath.Base(f.mnt), err)
	}
	f.server = server
	return nil
}

func (f *FS) unmount() error {
	if f.server == nil {
		return nil
	}
	err := f.server.Unmount()
	// The kernel may still be releasing the files of processes that just died.
	for try := 0; err != nil && try < 20; try++ {
		time.Sleep(100 * time.Millisecond)
		err = f.server.Unmount()
	}
	if err != nil && f.closeOwnFiles() > 0 {
		// This process itself held files on the mount (a test that failed before closing
		// them). At exit their close would wait for a server that is gone, so close them now.
		err = f.server.Unmount()
	}
	if err != nil {
		// Something still holds the mount (a process the caller did not name): detach it so
		// the test can go on, and say so.
		if derr := syscall.Unmount(f.mnt, syscall.MNT_DETACH); derr != nil {
			return fmt.Errorf("unmount: %w (detach: %v)", err, derr)
		}
		// A detached mount lives on while files on it are open; its server ends with them, or
		// with this process.
		done := make(chan struct{})
		go func() { f.server.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
		err = fmt.Errorf("unmount %s: busy, detached instead: %w", filepath.Base(f.mnt), err)
	}
	f.server = nil
	return err
}

// Close unmounts. Pending changes stay in the backing folder: Close is not a cut.
func (f *FS) Close() error {
	f.cutMu.Lock()
	defer f.cutMu.Unlock()
	f.release()
	return f.unmount()
}

// enter admits a mutating operation; it returns false (the caller answers EIO) when the mount is
// frozen for a cut. Every true must be paired with leave.
func (f *FS) enter() bool {
	f.gate.RLock()
	f.mu.Lock()
	frozen, thaw := f.frozen, f.thaw
	f.mu.Unlock()
	if frozen {
		f.gate.RUnlock()
		<-thaw
		return false
	}
	return true
}

// leave ends an operation admitted by enter, first showing it to the watcher; it returns false
// when the watcher froze the mount, after the cut released it.
func (f *FS) leave(ev Event) bool {
	if f.opts.Watch == nil || !f.opts.Watch(ev) {
		f.gate.RUnlock()
		return true
	}
	f.mu.Lock()
	f.frozen = true
	thaw := f.thaw
	f.mu.Unlock()
	f.gate.RUnlock()
	<-thaw
	return false
}

// Cut is a power cut: it sends SIGKILL to each process in pids, waits until they are gone,
// unmounts, throws away everything not synced and mounts again at the same place.
func (f *FS) Cut(pids ...int) (CutReport, error) {
	f.cutMu.Lock()
	defer f.cutMu.Unlock()
	var rep CutReport
	// From here on no operation changes anything (the power is off); those already past enter
	// finish, which a disk may or may not have done too, and none of them was answered yet.
	f.mu.Lock()
	f.frozen = true
	f.mu.Unlock()
	for _, pid := range pids {
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			rep.Killed++
		}
	}
	// Answer the frozen operations (EIO, nothing more applied): a killed process cannot exit
	// while the kernel waits for the answer to a request it already handed to this server.
	// frozen stays set, so later requests fail at once.
	f.release()
	for _, pid := range pids {
		if err := waitGone(pid, 20*time.Second); err != nil {
			return rep, err
		}
	}
	f.gate.Lock()
	defer f.gate.Unlock()
	if err := f.unmount(); err != nil {
		return rep, err
	}
	f.mu.Lock()
	err := f.rebuild(&rep)
	f.frozen, f.thawed = false, false
	f.thaw = make(chan struct{})
	f.stats.Cuts++
	f.mu.Unlock()
	if err != nil {
		return rep, err
	}
	return rep, f.mount()
}

// release answers every frozen operation and every later one with EIO until the mount is
// thawed by the end of a cut.
func (f *FS) release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.thawed {
		close(f.thaw)
		f.thawed = true
	}
}

// waitGone waits until pid has exited: reaped, or a zombie with no thread left (a zombie leader
// may still have threads exiting, and they hold the process's files).
func waitGone(pid int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	proc := "/proc/" + strconv.Itoa(pid)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(proc + "/stat")
		if err != nil {
			return nil
		}
		// The state follows the parenthesised command name.
		if i := strings.LastIndexByte(string(b), ')'); i > 0 && i+2 < len(b) && (b[i+2] == 'Z' || b[i+2] == 'X') {
			if tasks, err := os.ReadDir(proc + "/task"); err != nil || len(tasks) <= 1 {
				return nil
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	return fmt.Errorf("process %d still alive %v after SIGKILL", pid, limit)
}

// rel turns a backing path into one relative to the mount, for events.
func (f *FS) rel(p string) string {
	r, err := filepath.Rel(f.backing, p)
	if err != nil {
		return p
	}
	return r
}

func readlinkFd(fd int) (string, error) {
	return os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
}

// closeOwnFiles closes this process's descriptors of files on the mount and returns how many.
func (f *FS) closeOwnFiles() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, err := readlinkFd(fd); err == nil && (p == f.mnt || strings.HasPrefix(p, f.mnt+"/")) {
			syscall.Close(fd)
			n++
		}
	}
	return n
}

// Backing is the backing folder. Right after a [FS.Cut] it holds exactly the durable state, so a
// test may copy it to check what survived without going through the mount (a process must not
// read the mount it serves through mmap, see the package doc).
func (f *FS) Backing() string { return f.backing }
