package forward

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tributary-iot/tributary/devices/certreload"
	"github.com/tributary-iot/tributary/sync/internal/httpx"
)

// Config configures a Forwarder. Zero fields mean the defaults.
type Config struct {
	CentralURL string // e.g. https://central.example:7443
	EdgeID     string
	// Version is the edge's build version, sent with each call so central's console can show it.
	Version string
	Token   string // from `tributary central edges add ID`
	// TokenFile, when set, holds the token instead of Token. The forwarder reads it again when it
	// changes (it looks every second, and at once when central refuses the token), so a token
	// rotated at central applies without a restart.
	TokenFile string

	// TLS, when set, is used as is. Otherwise CAFile (a PEM bundle to trust instead of the system
	// roots) and CertFile/KeyFile (a client certificate for mTLS) build one.
	TLS                       *tls.Config
	CAFile, CertFile, KeyFile string
	// HTTPClient, when set, is used as is (its proxy and TLS settings win). The default client
	// honours HTTP_PROXY, HTTPS_PROXY and NO_PROXY.
	HTTPClient *http.Client

	// InFlight is how many chunks one partition may have unanswered; default 4. With 300 ms round
	// trips a single chunk in flight would cap a lane at one chunk per 300 ms.
	InFlight int
	// MaxChunkBytes is the raw batch bytes per chunk read from the active segment; default 1 MiB.
	// Sealed segments travel as their stored frames, whatever their size.
	MaxChunkBytes int
	// BandwidthBytesPerSec caps the bytes sent on the wire, all lanes together; 0 is no cap.
	// Lanes that are live (their chunk reaches the end of the partition) go before lanes that
	// catch up a backlog, so live readings do not queue behind an outage's worth of data.
	BandwidthBytesPerSec int64
	// BackoffMin and BackoffMax bound the exponential backoff (with full jitter) between retries;
	// defaults DefaultBackoffMin and DefaultBackoffMax. BackoffMax is the longest a lane waits
	// before it notices central is back.
	BackoffMin, BackoffMax time.Duration
	// RequestTimeout bounds one request; default 60s.
	RequestTimeout time.Duration
	// CursorInterval is how often central's committed offsets are stored as the edge log's
	// required "forwarder" cursor, which lets retention free forwarded segments; default 1s.
	CursorInterval time.Duration
	// Streams limits forwarding to these streams; nil forwards every stream, including streams
	// created later.
	Streams []string
	// ProgressInterval is how often a catch-up of a backlog logs its progress (records behind,
	// rate, time left); default 10s.
	ProgressInterval time.Duration
	// StallAfter is how long a lane may be behind without progress while central answers before
	// the stalled gauge reports it; default 1m.
	StallAfter time.Duration

	Logger *slog.Logger
	// Registerer receives the forwarder's metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

// The default backoff bounds. With full jitter a lane retries on average every
// DefaultBackoffMax/2 during a long outage, so 1,000 edges of 8 partitions each cost an
// unreachable central about 5,000 refused connections a second at most, and a lane resumes at
// most DefaultBackoffMax (plus DefaultBackoffMin/2) after central returns. A cap of 30 s, as
// before, made an edge take up to half a minute to notice central was back.
const (
	DefaultBackoffMin = 200 * time.Millisecond
	DefaultBackoffMax = 3 * time.Second
)

// CursorName is the required cursor the forwarder keeps in the edge log.
const CursorName = "forwarder"

func (c Config) withDefaults() Config {
	if c.InFlight <= 0 {
		c.InFlight = 4
	}
	if c.MaxChunkBytes <= 0 {
		c.MaxChunkBytes = 1 << 20
	}
	if c.ProgressInterval <= 0 {
		c.ProgressInterval = 10 * time.Second
	}
	if c.BackoffMin <= 0 {
		c.BackoffMin = DefaultBackoffMin
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = DefaultBackoffMax
	}
	if c.BackoffMax < c.BackoffMin {
		c.BackoffMax = c.BackoffMin
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = time.Minute
	}
	if c.CursorInterval <= 0 {
		c.CursorInterval = time.Second
	}
	if c.StallAfter <= 0 {
		c.StallAfter = time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.CentralURL = strings.TrimRight(c.CentralURL, "/")
	return c
}

func (c Config) check() error {
	if c.CentralURL == "" || !(strings.HasPrefix(c.CentralURL, "http://") || strings.HasPrefix(c.CentralURL, "https://")) {
		return fmt.Errorf("central URL %q: give http://HOST:PORT or https://HOST:PORT", c.CentralURL)
	}
	if c.EdgeID == "" || (c.Token == "" && c.TokenFile == "") {
		return errors.New("no edge id or token: register the edge on central with `tributary central edges add ID` and pass its id and token")
	}
	return nil
}

func (c Config) client() (*http.Client, error) {
	if c.HTTPClient != nil {
		return c.HTTPClient, nil
	}
	tlsCfg := c.TLS
	if tlsCfg == nil && (c.CAFile != "" || c.CertFile != "" || c.KeyFile != "") {
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
		if c.CAFile != "" {
			pool, err := httpx.CertPool(c.CAFile, "CA file")
			if err != nil {
				return nil, err
			}
			tlsCfg.RootCAs = pool
		}
		if c.CertFile != "" || c.KeyFile != "" {
			// Read again when the files change: a renewed certificate is offered from the next
			// connection to central on, without a restart.
			cert, err := certreload.New(certreload.Options{CertFile: c.CertFile, KeyFile: c.KeyFile,
				CertName: "forward.cert_file", KeyName: "forward.key_file", Listener: "forward", Logger: c.Logger})
			if err != nil {
				return nil, fmt.Errorf("load client certificate: %w", err)
			}
			tlsCfg.GetClientCertificate = cert.GetClientCertificate
		}
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsCfg,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   256, // one per lane and in-flight chunk, over plain HTTP/1.1
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: c.RequestTimeout,
	}
	return &http.Client{Transport: tr, Timeout: c.RequestTimeout}, nil
}
