package consume

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tributary-iot/tributary/sync/protocol"
)

// Client reads central's consume API.
type Client struct {
	BaseURL string       // central's URL, e.g. https://central:7443
	HTTP    *http.Client // nil means a client that honours HTTP(S)_PROXY
	Token   string       // central's --api-token, if it has one
}

// Options say where a Consume starts, what it reads and whether it follows.
type Options struct {
	Stream string // default "readings"
	// FromBeginning starts at the oldest record. Without it, and without committed group offsets,
	// a following consumer starts at the end (new records only) and a one-shot consumer at the
	// beginning (print what is there).
	FromBeginning bool
	Since         time.Time // start each partition at its first record this new
	// Offsets start the partitions they name there, and only those partitions are read.
	Offsets   map[int]int64
	Partition *int   // read only this partition
	Key       string // only this key's (device's) records
	Group     string // commit offsets under this consumer group and resume from them
	Follow    bool   // keep going until ctx ends, reconnecting when central goes away
	Count     int    // stop after this many records; 0 means no limit
	// Headers picks the record headers of each line: "" (DefaultHeaders), "all", "none" or
	// names separated by commas.
	Headers string
	// Compress is "auto" (default: zstd unless central is on loopback), "zstd", "gzip" or "none".
	Compress string
	// AfterBatch, when set, runs whenever the records received so far have all been handed to
	// fn, before offsets are committed: flush output there, so a group never commits what was
	// not written.
	AfterBatch func() error
	// OnReconnect, when set, hears why a following consumer lost central and when it retries.
	OnReconnect func(err error, retryIn time.Duration)
}

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment}, Timeout: 2 * time.Minute}
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.BaseURL, "/")+path, rd)
	if err != nil {
		return err
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return statusError(resp)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func statusError(resp *http.Response) *StatusError {
	var e protocol.Error
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(b, &e) != nil || e.Error == "" {
		e.Error = strings.TrimSpace(string(b))
	}
	return &StatusError{Code: resp.StatusCode, Status: resp.Status, Reason: e.Error}
}

// StatusError is a non-200 answer of central.
type StatusError struct {
	Code   int
	Status string
	Reason string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("central answered %s: %s", e.Status, e.Reason)
}

// Streams lists central's streams.
func (c *Client) Streams(ctx context.Context) ([]StreamInfo, error) {
	var out []StreamInfo
	err := c.do(ctx, http.MethodGet, "/v1/streams", nil, &out)
	return out, err
}

// Fetch reads one batch with raw query parameters (see Server).
func (c *Client) Fetch(ctx context.Context, stream string, q url.Values) (*Batch, error) {
	var b Batch
	err := c.do(ctx, http.MethodGet, "/v1/consume/"+url.PathEscape(stream)+"?"+q.Encode(), nil, &b)
	return &b, err
}

// Commit stores a group's offsets.
func (c *Client) Commit(ctx context.Context, group, stream string, offsets map[int]int64) error {
	var out GroupOffsets
	return c.do(ctx, http.MethodPost, "/v1/groups/"+url.PathEscape(group)+"/offsets?stream="+url.QueryEscape(stream),
		GroupOffsets{Offsets: offsets}, &out)
}

// Consume calls fn for every message in order per partition; see [Client.Lines].
func (c *Client) Consume(ctx context.Context, o Options, fn func(Message) error) error {
	_, err := c.Lines(ctx, o, func(line []byte, _ int, _ int64) error {
		var m Message
		if err := json.Unmarshal(line, &m); err != nil {
			return fmt.Errorf("decode consume line: %w", err)
		}
		return fn(m)
	})
	return err
}
