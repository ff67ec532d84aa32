package kafkaserve

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	// kbin reads the request header; kmsg encodes and decodes every request and response body.
	// kmsg must be v1.15.1 or later: v1.15.0 looped over a tag count as large as a request
	// declared, so a 20-byte request held a connection's goroutine for tens of seconds
	// (testdata/fuzz/FuzzRequest/393a07251d42ecaf is that request).
	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/tributary-iot/tributary/storage"
)

// Config is what a Server needs.
type Config struct {
	Log *storage.Log
	// Users, when set, makes every connection authenticate with SASL (PLAIN or SCRAM-SHA-256)
	// before anything but ApiVersions. Without it the listener must be on loopback.
	Users Users
	// TLS, when set, wraps every connection.
	TLS *tls.Config
	// Advertise is the host:port clients are told to connect to in Metadata. Empty means the
	// address each client reached this listener on.
	Advertise string
	// Compression of served batches: "none" (default) or "zstd" (for clients on Fetch v10+).
	Compression string
	// MaxRequestBytes bounds a request's declared size; default 8 MiB. A read-only broker's
	// requests are small: a larger declared size closes the connection before any allocation.
	MaxRequestBytes int
	// IdleTimeout closes a connection that sends nothing for this long; default 10 minutes.
	IdleTimeout time.Duration
	// MaxConnections bounds open client connections; one more is closed at once. Default 1024.
	MaxConnections int
	Logger         *slog.Logger
}

// Users authenticates SASL logins. Password returns the user's password (for SCRAM the server
// needs it to derive the salted keys), or false when the user does not exist.
type Users interface {
	Password(user string) (password string, ok bool)
}

// Server is central's Kafka protocol listener: read-only, one broker, streams as topics.
type Server struct {
	cfg    Config
	logger *slog.Logger
	groups *coordinator

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

const (
	brokerID  = 1
	clusterID = "tributary-central"
	// maxUnauthenticatedRequest bounds what a client may make us buffer before it logged in:
	// ApiVersions and SASL messages are a few hundred bytes.
	maxUnauthenticatedRequest = 64 << 10
)

// New checks cfg and returns a Server; Serve runs it.
func New(cfg Config) (*Server, error) {
	if cfg.Log == nil {
		return nil, errors.New("kafka listener needs central's log")
	}
	switch cfg.Compression {
	case "", "none", "zstd":
	default:
		return nil, fmt.Errorf("kafka compression %q: use none or zstd", cfg.Compression)
	}
	if cfg.MaxRequestBytes <= 0 {
		cfg.MaxRequestBytes = 8 << 20
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 10 * time.Minute
	}
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = 1024
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, logger: logger, conns: map[net.Conn]struct{}{}}
	s.groups = newCoordinator(cfg.Log, logger)
	return s, nil
}

// Serve accepts connections on ln until ctx ends, then closes them all and returns nil.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.cfg.TLS != nil {
		ln = tls.NewListener(ln, s.cfg.TLS)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.groups.run(ctx)
	}()
	go func() {
		<-ctx.Done()
		ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
	}()
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			return fmt.Errorf("accept kafka connection: %w", err)
		}
		s.mu.Lock()
		full := len(s.conns) >= s.cfg.MaxConnections
		if !full {
			s.conns[c] = struct{}{}
		}
		s.mu.Unlock()
		if full {
			s.logger.Warn("kafka connection refused: too many open", "client", c.RemoteAddr().String(), "limit", s.cfg.MaxConnections)
			c.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveConn(ctx, c)
			c.Close()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// conn is one client connection. Requests are handled one at a time, in order, as a Kafka broker
// does: clients that need to heartbeat while a fetch long-polls use a separate connection.
type conn struct {
	s        *Server
	c        net.Conn
	clientID string
	authed   bool
	sasl     saslState
	readers  map[partKey]*partReader
	sessions map[int32]*fetchSession // KIP-227 fetch sessions this connection opened
	ahead    sync.WaitGroup          // read-aheads running (readahead.go)
	// aheadJobs is the read-ahead the last fetch asked for, started once its response is out.
	aheadJobs []aheadJob
	out       []byte
	// closeAfter closes the connection once the current response is written.
	closeAfter bool
}

type partKey struct {
	topic     string
	partition int32
}

// errClose makes serveConn drop the connection, as Kafka does for requests it cannot parse or
// that come before authentication.
type errClose struct{ reason string }

func (e errClose) Error() string { return e.reason }

func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	cc := &conn{s: s, c: c, authed: s.cfg.Users == nil, readers: map[partKey]*partReader{}}
	defer cc.ahead.Wait()
	log := s.logger.With("client", c.RemoteAddr().String())
	var size [4]byte
	for {
		c.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		if _, err := io.ReadFull(c, size[:]); err != nil {
			if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				log.Debug("kafka connection ended", "err", err)
			}
			return
		}
		n := int64(int32(binary.BigEndian.Uint32(size[:])))
		limit := int64(s.cfg.MaxRequestBytes)
		if !cc.authed {
			limit = min(limit, maxUnauthenticatedRequest)
		}
		unframed := cc.sasl.unframed
		if (n < 8 && !unframed) || n < 0 || n > limit {
			log.Warn("kafka request with an impossible size; closing the connection", "declared_bytes", n, "limit", limit)
			return
		}
		body := make([]byte, n)
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.ReadFull(c, body); err != nil {
			log.Debug("kafka request cut short", "err", err)
			return
		}
		var resp net.Buffers
		var err error
		if unframed {
			resp, err = cc.saslToken(body)
		} else {
			resp, err = cc.handle(ctx, body)
		}
		if err != nil {
			log.Warn("kafka request refused; closing the connection", "reason", err.Error(), "client_id", cc.clientID)
			return
		}
		c.SetWriteDeadline(time.Now().Add(30 * time.Second))
		if _, err := resp.WriteTo(c); err != nil {
			log.Debug("write kafka response", "err", err)
			return
		}
		cc.startAhead()
		if cc.closeAfter {
			return
		}
		if cap(cc.out) > 16<<20 {
			cc.out = nil // one huge fetch should not pin its buffer for the connection's life
		}
	}
}

// header is a parsed request header.
type header struct {
	key, version int16
	correlation  int32
	clientID     string
}

// parseRequest decodes a request's header and body. Unknown keys, versions outside what this
// server advertises and undecodable bodies are errors: the caller closes the connection.
func parseRequest(body []byte) (header, kmsg.Request, error) {
	r := kbin.Reader{Src: body}
	h := header{key: r.Int16(), version: r.Int16(), correlation: r.Int32()}
	if cid := r.NullableString(); cid != nil {
		h.clientID = *cid
	}
	if err := r.Complete(); err != nil {
		return h, nil, errClose{"request header cut short"}
	}
	v, ok := versions[h.key]
	if !ok {
		return h, nil, errClose{"unknown API key " + strconv.Itoa(int(h.key))}
	}
	req := kmsg.RequestForKey(h.key)
	if h.key == apiVersionsKey && h.version > v.max {
		// KIP-511: answer an ApiVersions newer than ours with UNSUPPORTED_VERSION at v0.
		return h, req, nil
	}
	if h.version < v.min || h.version > v.max {
		return h, nil, errClose{fmt.Sprintf("API key %d version %d: this server supports %d to %d", h.key, h.version, v.min, v.max)}
	}
	req.SetVersion(h.version)
	if req.IsFlexible() {
		kmsg.SkipTags(&r)
		if err := r.Complete(); err != nil {
			return h, nil, errClose{"request header tags cut short"}
		}
	}
	if err := req.ReadFrom(r.Src); err != nil {
		return h, nil, errClose{fmt.Sprintf("decode API key %d version %d: %v", h.key, h.version, err)}
	}
	return h, req, nil
}

// handle answers one request with the whole framed response, in buffers written with one
// writev: a fetch's large record sets are not copied (fetchwrite.go).
func (cc *conn) handle(ctx context.Context, body []byte) (net.Buffers, error) {
	h, req, err := parseRequest(body)
	if err != nil {
		return nil, err
	}
	cc.clientID = h.clientID
	if !cc.authed && h.key != apiVersionsKey && h.key != saslHandshakeKey && h.key != saslAuthenticateKey {
		return nil, errClose{"request before SASL authentication (this listener needs SASL PLAIN or SCRAM-SHA-256 with central's API token)"}
	}
	var resp kmsg.Response
	switch r := req.(type) {
	case *kmsg.ApiVersionsRequest:
		resp = apiVersions(h, r)
	case *kmsg.MetadataRequest:
		resp = cc.metadata(r)
	case *kmsg.ListOffsetsRequest:
		resp = cc.listOffsets(r)
	case *kmsg.FetchRequest:
		resp = cc.fetch(ctx, r)
	case *kmsg.OffsetForLeaderEpochRequest:
		resp = cc.offsetForLeaderEpoch(r)
	case *kmsg.FindCoordinatorRequest:
		resp = cc.findCoordinator(r)
	case *kmsg.JoinGroupRequest:
		resp = cc.s.groups.join(ctx, r, cc.remoteHost(), cc.clientID)
	case *kmsg.SyncGroupRequest:
		resp = cc.s.groups.sync(ctx, r)
	case *kmsg.HeartbeatRequest:
		resp = cc.s.groups.heartbeat(r)
	case *kmsg.LeaveGroupRequest:
		resp = cc.s.groups.leave(r)
	case *kmsg.OffsetCommitRequest:
		resp = cc.s.groups.offsetCommit(r)
	case *kmsg.OffsetFetchRequest:
		resp = cc.s.groups.offsetFetch(r)
	case *kmsg.ListGroupsRequest:
		resp = cc.s.groups.listGroups(r)
	case *kmsg.DescribeGroupsRequest:
		resp = cc.s.groups.describeGroups(r)
	case *kmsg.SASLHandshakeRequest:
		resp = cc.saslHandshake(r)
	case *kmsg.SASLAuthenticateRequest:
		resp, err = cc.saslAuthenticate(r)
		if err != nil {
			return nil, err
		}
	default:
		resp = refuseWrite(req)
	}
	if resp == nil {
		return nil, errClose{fmt.Sprintf("API key %d has no handler", h.key)}
	}
	resp.SetVersion(req.GetVersion())
	if av, ok := resp.(*kmsg.ApiVersionsResponse); ok && av.ErrorCode != 0 {
		resp.SetVersion(0)
	}
	out := append(cc.out[:0], 0, 0, 0, 0)
	out = binary.BigEndian.AppendUint32(out, uint32(h.correlation))
	if resp.IsFlexible() && h.key != apiVersionsKey {
		out = append(out, 0) // response header v1: no tagged fields
	}
	if fr, ok := resp.(*kmsg.FetchResponse); ok && fetchBuffersFit(fr) {
		bufs := fetchBuffers(out, fr)
		n := 0
		for _, b := range bufs {
			n += len(b)
		}
		binary.BigEndian.PutUint32(bufs[0], uint32(n-4))
		cc.out = bufs[0]
		return bufs, nil
	}
	out = resp.AppendTo(out)
	binary.BigEndian.PutUint32(out, uint32(len(out)-4))
	cc.out = out
	return net.Buffers{out}, nil
}

func (cc *conn) remoteHost() string {
	host, _, err := net.SplitHostPort(cc.c.RemoteAddr().String())
	if err != nil {
		return cc.c.RemoteAddr().String()
	}
	return "/" + host
}
