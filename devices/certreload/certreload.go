// Package certreload serves a TLS listener's certificate, and the CA pool its client
// certificates are checked against, from PEM files it reads again when they change. Operators
// renew certificates every few weeks (ACME, cert-manager, a site PKI); a running edge or central
// takes the new files without a restart, which would drop every device and edge connection.
//
// Files are checked during handshakes, at most once per [Options.CheckEvery]: one stat of each
// file (modification time, size and identity, so a file renamed over the old one counts, as does
// a Kubernetes secret volume's symlink swap). Nothing runs between handshakes, so there is no
// goroutine to stop. Changed files are read whole and taken only if they make a valid pair: when
// they do not (unreadable, the key does not match the certificate, a file half-written), the
// previous certificate and CA pool stay in use and, if the files are still the same at the next
// look (so a renewal caught between writing the key and the certificate is not reported), one
// error names what is wrong; the files are tried again when they change again. A taken certificate is logged once with its subject,
// serial and expiry. Connections already open keep the certificate they were set up with.
//
// At start ([New]) bad files are an error, so a wrong configuration still fails at once.
//
// It lives in devices/, which owns the credentials devices and edges connect with, because both
// the edge's MQTT TLS listener (edge/) and the HTTPS and Kafka listeners of central and of the
// edge's HTTP endpoint (sync/, through sync/internal/httpx) use it: sync/internal is not
// importable from edge/, edge and sync do not import each other, and the top-level internal/ is
// for test support. It imports only the standard library.
package certreload

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultCheckEvery is how often, at most, handshakes stat the files when Options.CheckEvery is
// zero: three stats a second bound the cost whatever the handshake rate, and a renewed
// certificate is served within a second of its files being in place.
const DefaultCheckEvery = time.Second

// Options name the files of one listener.
type Options struct {
	// CertFile is the PEM certificate (and any intermediates), KeyFile its PEM private key.
	CertFile, KeyFile string
	// ClientCAFile, when set, is a PEM bundle of the CAs client certificates must be signed by.
	ClientCAFile string
	// CertName, KeyName and ClientCAName name the files in errors and log lines as the operator
	// set them (a config key or flag, "mqtt.tls_cert"); empty: "certificate", "key", "client CA".
	CertName, KeyName, ClientCAName string
	// Listener names the listener in log lines ("mqtt", "https").
	Listener string
	// Logger receives the reload lines; nil discards them.
	Logger *slog.Logger
	// CheckEvery is the least time between two looks at the files; zero is DefaultCheckEvery.
	CheckEvery time.Duration
}

// Reloader serves the current key pair and client CA pool of one set of files. Its methods are
// safe for concurrent use by handshakes.
type Reloader struct {
	opts  Options
	log   *slog.Logger
	start time.Time // the monotonic origin of next

	current atomic.Pointer[loaded]
	next    atomic.Int64 // time.Since(start) of the next look at the files

	mu      sync.Mutex // held by the one handshake looking at the files
	seen    fileStates // the files when last read, whether taken or refused
	refused error      // why seen were refused, until logged at the next look
}

// loaded is one key pair and CA pool read together.
type loaded struct {
	cert   *tls.Certificate
	pool   *x509.CertPool // nil without ClientCAFile
	caPEM  []byte
	states fileStates
}

// fileStates are the stats of the certificate, key and client CA files; a nil entry is a file
// that could not be stat'ed (or is not configured).
type fileStates [3]os.FileInfo

func (s fileStates) equal(o fileStates) bool {
	for i := range s {
		a, b := s[i], o[i]
		if (a == nil) != (b == nil) {
			return false
		}
		if a != nil && (!os.SameFile(a, b) || a.Size() != b.Size() || !a.ModTime().Equal(b.ModTime())) {
			return false
		}
	}
	return true
}

// New reads the files now and fails if they are not a usable certificate, key and client CA.
func New(opts Options) (*Reloader, error) {
	if opts.CertName == "" {
		opts.CertName = "certificate"
	}
	if opts.KeyName == "" {
		opts.KeyName = "key"
	}
	if opts.ClientCAName == "" {
		opts.ClientCAName = "client CA"
	}
	if opts.CheckEvery <= 0 {
		opts.CheckEvery = DefaultCheckEvery
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Reloader{opts: opts, log: log, start: time.Now()}
	l, err := r.load(r.stat())
	if err != nil {
		return nil, err
	}
	r.current.Store(l)
	r.seen = l.states
	r.next.Store(int64(opts.CheckEvery))
	return r, nil
}

func (r *Reloader) stat() fileStates {
	var s fileStates
	for i, f := range []string{r.opts.CertFile, r.opts.KeyFile, r.opts.ClientCAFile} {
		if f == "" {
			continue
		}
		if fi, err := os.Stat(f); err == nil {
			s[i] = fi
		}
	}
	return s
}

// load reads all files. states were taken before the reads, so a file replaced in between is
// read again at the next look.
func (r *Reloader) load(states fileStates) (*loaded, error) {
	o := r.opts
	certPEM, err := os.ReadFile(o.CertFile)
	if err != nil {
		return nil, fmt.Errorf("read TLS %s: %w", o.CertName, err)
	}
	keyPEM, err := os.ReadFile(o.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("read TLS %s: %w", o.KeyName, err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load TLS certificate (%s %s, %s %s): %w", o.CertName, o.CertFile, o.KeyName, o.KeyFile, err)
	}
	l := &loaded{cert: &cert, states: states}
	if o.ClientCAFile == "" {
		return l, nil
	}
	if l.caPEM, err = os.ReadFile(o.ClientCAFile); err != nil {
		return nil, fmt.Errorf("read %s: %w", o.ClientCAName, err)
	}
	l.pool = x509.NewCertPool()
	if !l.pool.AppendCertsFromPEM(l.caPEM) {
		return nil, fmt.Errorf("%s %s holds no PEM certificate", o.ClientCAName, o.ClientCAFile)
	}
	return l, nil
}

// check looks at the files when CheckEvery has passed since the last look and no other
// handshake is looking; others serve the current pair meanwhile rather than wait for the disk.
func (r *Reloader) check() {
	now := int64(time.Since(r.start))
	if now < r.next.Load() || !r.mu.TryLock() {
		return
	}
	defer r.mu.Unlock()
	if now < r.next.Load() {
		return
	}
	r.next.Store(now + int64(r.opts.CheckEvery))
	states := r.stat()
	cur := r.current.Load()
	if states.equal(r.seen) {
		if r.refused != nil {
			r.logRefused(cur, r.refused)
			r.refused = nil
		}
		return
	}
	r.seen = states
	l, err := r.load(states)
	if err != nil {
		// Said at the next look, if the files have not changed by then: a renewal that writes
		// the key and then the certificate is not reported for the moment between the two.
		r.refused = err
		return
	}
	r.refused = nil
	if sameContent(cur, l) {
		// Touched or rewritten with the same content: nothing to say.
		r.current.Store(l)
		return
	}
	r.current.Store(l)
	leaf := l.cert.Leaf
	r.log.Info("TLS certificate reloaded", "listener", r.opts.Listener, "cert", r.opts.CertFile,
		"subject", leaf.Subject.String(), "serial", serial(l.cert), "not_after", notAfter(l.cert),
		"client_ca_changed", !bytes.Equal(cur.caPEM, l.caPEM))
	if time.Now().After(leaf.NotAfter) {
		r.log.Warn("the reloaded TLS certificate has expired: clients will refuse it; renew it",
			"listener", r.opts.Listener, "cert", r.opts.CertFile, "not_after", notAfter(l.cert))
	}
}

// logRefused says why the files in place are not served, and what to do.
func (r *Reloader) logRefused(cur *loaded, err error) {
	r.log.Error("TLS files changed but cannot be used: still serving the previous certificate. "+
		"Put a complete PEM certificate and its matching private key in place (write each to a temporary file and rename it over the old one); "+
		"they are read again when they change",
		"listener", r.opts.Listener, "err", err, "serving_serial", serial(cur.cert), "serving_not_after", notAfter(cur.cert))
}

func sameContent(a, b *loaded) bool {
	if len(a.cert.Certificate) != len(b.cert.Certificate) || !bytes.Equal(a.caPEM, b.caPEM) {
		return false
	}
	for i := range a.cert.Certificate {
		if !bytes.Equal(a.cert.Certificate[i], b.cert.Certificate[i]) {
			return false
		}
	}
	return true
}

func serial(c *tls.Certificate) string {
	if c.Leaf == nil {
		return ""
	}
	return c.Leaf.SerialNumber.Text(16)
}

func notAfter(c *tls.Certificate) string {
	if c.Leaf == nil {
		return ""
	}
	return c.Leaf.NotAfter.UTC().Format(time.RFC3339)
}

// GetCertificate is a [tls.Config.GetCertificate] serving the current key pair.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.check()
	return r.current.Load().cert, nil
}

// GetClientCertificate is a [tls.Config.GetClientCertificate] offering the current key pair, for
// a client that connects out with a certificate (the edge's forwarder, central's Kafka sink): a
// renewed client certificate is used from the next connection on.
func (r *Reloader) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	r.check()
	return r.current.Load().cert, nil
}

// Certificate is the key pair served now.
func (r *Reloader) Certificate() *tls.Certificate { return r.current.Load().cert }

// ClientCAs is the client CA pool in use now; nil without Options.ClientCAFile.
func (r *Reloader) ClientCAs() *x509.CertPool { return r.current.Load().pool }

// ServerConfig returns a copy of base (nil: an empty one) that serves the current key pair and,
// with a client CA file, checks client certificates against the current pool with base's
// ClientAuth. base's Certificates are dropped. A copy that must not check client certificates
// (a listener whose clients log in otherwise) sets GetConfigForClient and ClientCAs to nil.
func (r *Reloader) ServerConfig(base *tls.Config) *tls.Config {
	if base == nil {
		base = &tls.Config{}
	}
	c := base.Clone()
	c.Certificates, c.GetCertificate = nil, r.GetCertificate
	if r.opts.ClientCAFile == "" {
		return c
	}
	c.ClientCAs = r.ClientCAs()
	if c.ClientAuth == tls.NoClientCert {
		return c
	}
	// The pool is part of the handshake's config, not of a callback, so a changed pool needs a
	// config of its own; one is made per pool, not per handshake. Session ticket keys stay the
	// listener's (crypto/tls uses the original Config's unless the returned one sets its own).
	template := c.Clone()
	var perPool atomic.Pointer[poolConfig]
	c.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		r.check()
		pool := r.ClientCAs()
		if p := perPool.Load(); p != nil && p.pool == pool {
			return p.config, nil
		}
		d := template.Clone()
		d.ClientCAs = pool
		perPool.Store(&poolConfig{pool: pool, config: d})
		return d, nil
	}
	return c
}

type poolConfig struct {
	pool   *x509.CertPool
	config *tls.Config
}
