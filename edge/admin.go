package edge

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// AdminSocket is where a running agent serves its admin API on a Unix socket in its data
// directory: GET /inspect answers the log's [storage.Report] (?verify=1 reads every byte), so
// `tributary inspect DIR` works while the agent holds the log. Only the directory's owner can
// reach the socket: file permission is the authority, as for opening the log directly.
func AdminSocket(dataDir string) string { return filepath.Join(dataDir, "edge.sock") }

// serveAdmin starts the admin socket; it returns nil, after a warning, when the socket cannot be
// made (a path longer than a socket address allows, a file system without sockets): the agent
// runs on without it.
func (a *Agent) serveAdmin() *http.Server {
	path := AdminSocket(a.cfg.DataDir)
	os.Remove(path) // a stale socket of a killed agent; the log's lock proves the directory is ours
	ln, err := net.Listen("unix", path)
	if err != nil {
		a.logger.Warn("no admin socket: tributary inspect cannot read this running agent's log", "path", path, "err", err)
		return nil
	}
	os.Chmod(path, 0o600)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /inspect", func(w http.ResponseWriter, r *http.Request) {
		rep, err := a.log.Report(r.URL.Query().Get("verify") == "1")
		w.Header().Set("Content-Type", "application/json")
		if err != nil {
			w.WriteHeader(http.StatusInternalServerError)
			json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
			return
		}
		json.NewEncoder(w).Encode(rep)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.logger.Error("admin socket stopped", "err", err)
		}
	}()
	return srv
}
