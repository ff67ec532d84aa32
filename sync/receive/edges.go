package receive

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"time"

	"github.com/tributary-iot/tributary/storage"
)

// edgeNamespace is the Meta namespace of the edge registry: id → JSON EdgeInfo with a token hash.
const edgeNamespace = "central.edges"

// EdgeInfo is one registered edge. Only a SHA-256 hash of its token is stored: a token is 256
// random bits, so a slow password hash would add nothing but latency on every request.
type EdgeInfo struct {
	ID        string    `json:"id"`
	TokenHash string    `json:"token_hash"`
	Created   time.Time `json:"created"`
	Rotated   time.Time `json:"rotated,omitzero"` // when the current token was issued by RotateEdge
	Revoked   bool      `json:"revoked"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
}

var edgeID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ErrUnknownEdge is returned when revoking or rotating an edge that was never added.
var ErrUnknownEdge = errors.New("unknown edge")

// ErrEdgeExists is returned when adding an id that is already registered: issuing a new token
// would lock the running edge out, so that takes RotateEdge (`edges add ID --rotate`).
var ErrEdgeExists = errors.New("edge already registered")

func hashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

func (e EdgeInfo) accepts(token string) bool {
	if e.Revoked || token == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(hashToken(token)), []byte(e.TokenHash)) == 1
}

// AddEdge registers a new edge and returns its token. It is shown once; central keeps only its
// hash. An id already registered (active or revoked) is refused with ErrEdgeExists.
func AddEdge(log *storage.Log, id string) (string, EdgeInfo, error) {
	if !edgeID.MatchString(id) {
		return "", EdgeInfo{}, fmt.Errorf("add edge %q: an id is 1-64 of A-Z a-z 0-9 . _ - starting with a letter or digit", id)
	}
	old, err := loadEdge(log, id)
	if err != nil {
		return "", EdgeInfo{}, fmt.Errorf("add edge %q: %w", id, err)
	}
	if old != nil {
		state := "active since " + old.Created.Format(time.RFC3339)
		if old.Revoked {
			state = "revoked at " + old.RevokedAt.Format(time.RFC3339)
		}
		return "", EdgeInfo{}, fmt.Errorf("add edge %q: %w (%s), and a new token would lock out the edge using the current one. "+
			"To issue a new token anyway, run `tributary central edges add %s --rotate` and put the printed token in that edge's token file "+
			"(a running edge reads it again within seconds)", id, ErrEdgeExists, state, id)
	}
	return issueToken(log, EdgeInfo{ID: id, Created: time.Now().UTC()}, "add")
}

// RotateEdge issues a new token for a registered edge (a revoked one becomes active again); the
// old token is refused from then on. It returns ErrUnknownEdge for an id never added.
func RotateEdge(log *storage.Log, id string) (string, EdgeInfo, error) {
	old, err := loadEdge(log, id)
	if err != nil {
		return "", EdgeInfo{}, fmt.Errorf("rotate token of edge %q: %w", id, err)
	}
	if old == nil {
		return "", EdgeInfo{}, fmt.Errorf("rotate token of edge %q: %w; add it first with `tributary central edges add %s`", id, ErrUnknownEdge, id)
	}
	return issueToken(log, EdgeInfo{ID: id, Created: old.Created, Rotated: time.Now().UTC()}, "rotate token of")
}

func loadEdge(log *storage.Log, id string) (*EdgeInfo, error) {
	v, err := log.Meta(edgeNamespace, id)
	if err != nil || v == nil {
		return nil, err
	}
	var info EdgeInfo
	if err := json.Unmarshal(v, &info); err != nil {
		return nil, fmt.Errorf("read entry: %w", err)
	}
	return &info, nil
}

// issueToken stores info (active, with a new token's hash) and returns the token.
func issueToken(log *storage.Log, info EdgeInfo, verb string) (string, EdgeInfo, error) {
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", EdgeInfo{}, fmt.Errorf("%s edge %q: read random token: %w", verb, info.ID, err)
	}
	token := "trb_" + base64.RawURLEncoding.EncodeToString(raw[:])
	info.TokenHash = hashToken(token)
	v, _ := json.Marshal(info)
	if err := log.SetMeta(edgeNamespace, info.ID, v); err != nil {
		return "", EdgeInfo{}, fmt.Errorf("%s edge %q: %w", verb, info.ID, err)
	}
	return token, info, nil
}

// RevokeEdge marks an edge revoked: its token is refused from then on. The entry stays so that
// `edges list` still shows who it was.
func RevokeEdge(log *storage.Log, id string) (EdgeInfo, error) {
	old, err := loadEdge(log, id)
	if err != nil {
		return EdgeInfo{}, fmt.Errorf("revoke edge %q: %w", id, err)
	}
	if old == nil {
		return EdgeInfo{}, fmt.Errorf("revoke edge %q: %w; see `tributary central edges list`", id, ErrUnknownEdge)
	}
	info := *old
	info.Revoked, info.RevokedAt = true, time.Now().UTC()
	v, _ := json.Marshal(info)
	if err := log.SetMeta(edgeNamespace, id, v); err != nil {
		return EdgeInfo{}, fmt.Errorf("revoke edge %q: %w", id, err)
	}
	return info, nil
}

// ListEdges returns every registered edge by id.
func ListEdges(log *storage.Log) ([]EdgeInfo, error) {
	var out []EdgeInfo
	err := log.ScanMeta(edgeNamespace, func(_ string, v []byte) error {
		var info EdgeInfo
		if err := json.Unmarshal(v, &info); err != nil {
			return fmt.Errorf("read edge entry: %w", err)
		}
		out = append(out, info)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list edges: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}
