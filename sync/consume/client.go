package consume

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
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

// Options say where a Consume starts and whether it follows.
type Options struct {
	Stream string // default "readings"
	// FromBeginning starts at the oldest record. Without it, and without committed group offsets,
	// a following consumer starts at the end (new records only) and a one-shot consumer at the
	// beginning (print what is there).
	FromBeginning bool
	Since         time.Time     // skip older records at the start
	Offsets       map[int]int64 // explicit start per partition
	Group         string        // commit offsets under this consumer group and resume from them
	Follow        bool          // keep going until ctx ends
	Max           int           // per fetch; default 1000
	Wait          time.Duration // long-poll per fetch when following; default 20s
	// AfterBatch, when set, runs after each batch's messages and before its offsets are
	// committed: flush output there, so a group never commits what was not written.
	AfterBatch func() error
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
		var e protocol.Error
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		return &StatusError{Code: resp.StatusCode, Status: resp.Status, Reason: e.Error}
	}
	return json.NewDecoder(resp.Body).Decode(out)
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

// Consume calls fn for every message in order per partition. Without Follow it stops once it
// has read up to the end offsets seen by its first fetch. With Group it commits after each batch
// that fn accepted, so a restarted consumer resumes after the last committed batch.
func (c *Client) Consume(ctx context.Context, o Options, fn func(Message) error) error {
	if o.Stream == "" {
		o.Stream = "readings"
	}
	if o.Max <= 0 {
		o.Max = 1000
	}
	if o.Wait <= 0 {
		o.Wait = 20 * time.Second
	}
	q := url.Values{"max": {strconv.Itoa(o.Max)}}
	switch {
	case len(o.Offsets) > 0:
		q.Set("offsets", FormatOffsets(o.Offsets))
	case o.FromBeginning:
		q.Set("from", "beginning")
	case o.Follow:
		q.Set("from", "end")
	default:
		q.Set("from", "beginning")
	}
	if o.Group != "" && len(o.Offsets) == 0 && !o.FromBeginning {
		q.Set("group", o.Group)
	}
	if !o.Since.IsZero() {
		q.Set("since", strconv.FormatInt(o.Since.UnixMilli(), 10))
	}
	var stopAt map[int]int64
	for {
		if o.Follow {
			q.Set("wait", o.Wait.String())
		}
		b, err := c.Fetch(ctx, o.Stream, q)
		var se *StatusError
		if errors.As(err, &se) && se.Code == http.StatusNotFound && stopAt == nil {
			// The stream does not exist yet: nothing to print, or wait for it when following.
			if !o.Follow {
				return nil
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(250 * time.Millisecond):
				continue
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if stopAt == nil {
			stopAt = b.Ends
		}
		for _, m := range b.Messages {
			if err := fn(m); err != nil {
				return err
			}
		}
		if o.AfterBatch != nil && len(b.Messages) > 0 {
			if err := o.AfterBatch(); err != nil {
				return err
			}
		}
		if o.Group != "" && len(b.Messages) > 0 {
			if err := c.Commit(ctx, o.Group, o.Stream, b.Offsets); err != nil {
				return fmt.Errorf("commit group %q: %w", o.Group, err)
			}
		}
		q = url.Values{"max": {strconv.Itoa(o.Max)}, "offsets": {FormatOffsets(b.Offsets)}}
		if !o.Follow {
			done := true
			for p, end := range stopAt {
				if b.Offsets[p] < end {
					done = false
				}
			}
			if done || len(b.Messages) == 0 {
				return nil
			}
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}
