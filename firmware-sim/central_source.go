package firmwaresim

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// CentralSource reads a stream of central's consume API from the beginning up to the end offsets
// central reports at the first fetch, as JSON lines. It speaks plain HTTP, so the simulator stays
// independent of the project's sync packages, like any other consumer would be.
type CentralSource struct {
	URL    string       // central's base URL, e.g. http://127.0.0.1:7443
	Stream string       // default "readings"
	Token  string       // central's API token, if it has one
	HTTP   *http.Client // nil: http.DefaultClient
}

type centralBatch struct {
	Messages []json.RawMessage `json:"messages"`
	Offsets  map[string]int64  `json:"offsets"`
	Ends     map[string]int64  `json:"ends"`
}

// Open starts reading in the background and returns the JSON lines as they arrive.
func (c CentralSource) Open(ctx context.Context) (io.ReadCloser, error) {
	stream := c.Stream
	if stream == "" {
		stream = "readings"
	}
	client := c.HTTP
	if client == nil {
		client = http.DefaultClient
	}
	base := strings.TrimSuffix(c.URL, "/") + "/v1/consume/" + url.PathEscape(stream)
	fetch := func(q url.Values) (*centralBatch, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"?"+q.Encode(), nil)
		if err != nil {
			return nil, err
		}
		if c.Token != "" {
			req.Header.Set("Authorization", "Bearer "+c.Token)
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("read central %s: %w", c.URL, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound {
			return &centralBatch{}, nil // the stream does not exist yet: nothing arrived
		}
		if resp.StatusCode != http.StatusOK {
			msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			return nil, fmt.Errorf("read central %s: %s: %s", c.URL, resp.Status, strings.TrimSpace(string(msg)))
		}
		var b centralBatch
		if err := json.NewDecoder(resp.Body).Decode(&b); err != nil {
			return nil, fmt.Errorf("read central %s: decode batch: %w", c.URL, err)
		}
		return &b, nil
	}
	// The first fetch fails fast, so a wrong URL is an error of Open, not a half-read stream.
	first, err := fetch(url.Values{"from": {"beginning"}, "max": {"10000"}})
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() {
		w := bufio.NewWriter(pw)
		stopAt := first.Ends
		b := first
		deadline := time.Now().Add(time.Hour) // bounded even if central keeps growing
		for {
			for _, m := range b.Messages {
				w.Write(m)
				w.WriteByte('\n')
			}
			if len(b.Messages) == 0 || done(b.Offsets, stopAt) || time.Now().After(deadline) {
				break
			}
			var err error
			if b, err = fetch(url.Values{"offsets": {formatOffsets(b.Offsets)}, "max": {"10000"}}); err != nil {
				w.Flush()
				pw.CloseWithError(err)
				return
			}
		}
		pw.CloseWithError(w.Flush())
	}()
	return pr, nil
}

func done(offsets, ends map[string]int64) bool {
	for p, end := range ends {
		if offsets[p] < end {
			return false
		}
	}
	return true
}

func formatOffsets(m map[string]int64) string {
	parts := make([]string, 0, len(m))
	for p, o := range m {
		parts = append(parts, p+":"+strconv.FormatInt(o, 10))
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}
