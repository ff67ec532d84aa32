package forward

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
)

// tokenCheckInterval is how often the token file is looked at for a change: a stat, not a read.
const tokenCheckInterval = time.Second

// tokenSource hands out the edge's token. With a file it notices a new token written there
// (after `tributary central edges add ID --rotate`) within tokenCheckInterval, or at once after
// central refuses the current one, so a rotation needs no restart.
type tokenSource struct {
	path   string // empty: the token is fixed
	logger *slog.Logger

	mu      sync.Mutex
	token   string
	modTime time.Time
	size    int64
	checked time.Time
	lastErr string
}

func newTokenSource(token, path string, logger *slog.Logger) *tokenSource {
	return &tokenSource{token: token, path: path, logger: logger}
}

// load reads the file for the first time; an unreadable or empty file is an error then.
func (s *tokenSource) load() error {
	if s.path == "" {
		if s.token == "" {
			return errors.New("no token")
		}
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.readLocked()
	return err
}

// get returns the current token, looking at the file first when force is set or the last look
// is older than tokenCheckInterval. A file that turns unreadable or empty keeps the old token.
func (s *tokenSource) get(force bool) string {
	if s.path == "" {
		return s.token
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if force || time.Since(s.checked) >= tokenCheckInterval {
		if changed, err := s.readLocked(); err != nil {
			if msg := err.Error(); msg != s.lastErr {
				s.lastErr = msg
				s.logger.Error("read edge token file; keeping the token read before", "file", s.path, "err", err)
			}
		} else if changed {
			s.lastErr = ""
			s.logger.Info("edge token file changed; using the new token", "file", s.path)
		}
	}
	return s.token
}

// readLocked reads the file if its size or modification time moved, and reports whether the
// token changed.
func (s *tokenSource) readLocked() (bool, error) {
	s.checked = time.Now()
	fi, err := os.Stat(s.path)
	if err != nil {
		return false, fmt.Errorf("read edge token: %w", err)
	}
	if s.token != "" && fi.ModTime().Equal(s.modTime) && fi.Size() == s.size {
		return false, nil
	}
	b, err := os.ReadFile(s.path)
	if err != nil {
		return false, fmt.Errorf("read edge token: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return false, fmt.Errorf("edge token file %s is empty: put the token from `tributary central edges add ID` in it", s.path)
	}
	s.modTime, s.size = fi.ModTime(), fi.Size()
	changed := t != s.token
	s.token = t
	return changed, nil
}

// refusedHint tells the operator what to do when central refuses the token (401).
func (s *tokenSource) refusedHint(edgeID string) string {
	if s.path == "" {
		return fmt.Sprintf("this edge's token is not edge %s's current one at central (rotated or revoked; `tributary central edges list` at central shows it). "+
			"Give the edge its current token; if it is lost, run `tributary central edges add %s --rotate` at central. "+
			"Pass it with --central-token-file FILE (forward.token_file) and a later rotation needs no restart", edgeID, edgeID)
	}
	return fmt.Sprintf("the token in %s is not edge %s's current one at central (rotated or revoked; `tributary central edges list` at central shows it). "+
		"Write the current token to %s; if it is lost, run `tributary central edges add %s --rotate` at central and write the printed token there. "+
		"This edge reads the file again within seconds, no restart needed", s.path, edgeID, s.path, edgeID)
}
