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
	Revoked   bool      `json:"revoked"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
}

var edgeID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ErrUnknownEdge is returned when revoking an edge that was never added.
var ErrUnknownEdge = errors.New("unknown edge")

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

// AddEdge registers an edge, or issues a new token for an existing one (the old token stops
// working), and returns the token. It is shown once; central keeps only its hash.
func AddEdge(log *storage.Log, id string) (string, EdgeInfo, error) {
	if !edgeID.MatchString(id) {
		return "", EdgeInfo{}, fmt.Errorf("add edge %q: an id is 1-64 of A-Z a-z 0-9 . _ - starting with a letter or digit", id)
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", EdgeInfo{}, fmt.Errorf("add edge %q: read random token: %w", id, err)
	}
	token := "trb_" + base64.RawURLEncoding.EncodeToString(raw[:])
	info := EdgeInfo{ID: id, TokenHash: hashToken(token), Created: time.Now().UTC()}
	v, _ := json.Marshal(info)
	if err := log.SetMeta(edgeNamespace, id, v); err != nil {
		return "", EdgeInfo{}, fmt.Errorf("add edge %q: %w", id, err)
	}
	return token, info, nil
}

// RevokeEdge marks an edge revoked: its token is refused from then on. The entry stays so that
// `edges list` still shows who it was.
func RevokeEdge(log *storage.Log, id string) (EdgeInfo, error) {
	v, err := log.Meta(edgeNamespace, id)
	if err != nil {
		return EdgeInfo{}, fmt.Errorf("revoke edge %q: %w", id, err)
	}
	if v == nil {
		return EdgeInfo{}, fmt.Errorf("revoke edge %q: %w; see `tributary central edges list`", id, ErrUnknownEdge)
	}
	var info EdgeInfo
	if err := json.Unmarshal(v, &info); err != nil {
		return EdgeInfo{}, fmt.Errorf("revoke edge %q: read entry: %w", id, err)
	}
	info.Revoked, info.RevokedAt = true, time.Now().UTC()
	v, _ = json.Marshal(info)
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
