package central_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tributary-iot/tributary/sync/central"
	"github.com/tributary-iot/tributary/sync/protocol"
)

// TestAPIRefusedWithoutCredentialsOffLoopback: the shipped config once served the merged stream
// and consumer groups to anyone on 0.0.0.0. Off loopback central now needs an API token (or
// client certificates) before it opens its log.
func TestAPIRefusedWithoutCredentialsOffLoopback(t *testing.T) {
	dir := t.TempDir()
	// 192.0.2.1 (TEST-NET-1) is on no interface: a config that passes the checks fails at the bind.
	err := central.Run(context.Background(), central.Config{DataDir: dir, Listen: "192.0.2.1:0", Insecure: true})
	if err == nil || !strings.Contains(err.Error(), "without credentials") || !strings.Contains(err.Error(), "api_token_file") {
		t.Fatalf("no token off loopback: %v, want a refusal naming api_token_file", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("the refusal left %d entries in the data dir", len(entries))
	}
	tokenFile := filepath.Join(t.TempDir(), "api.token")
	os.WriteFile(tokenFile, []byte("\n"), 0o600)
	if err := central.Run(context.Background(), central.Config{DataDir: t.TempDir(), Listen: "192.0.2.1:0", Insecure: true, APITokenFile: tokenFile}); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Fatalf("empty token file: %v", err)
	}
	os.WriteFile(tokenFile, []byte("s3cret-token\n"), 0o600)
	err = central.Run(context.Background(), central.Config{DataDir: t.TempDir(), Listen: "192.0.2.1:0", Insecure: true, APITokenFile: tokenFile})
	if err == nil || !strings.Contains(err.Error(), "listen on 192.0.2.1:0") {
		t.Fatalf("token file given: %v, want the bind error past the checks", err)
	}
}

func get(t *testing.T, url, token string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestAPITokenGuardsEveryAPI runs central with an API token read from a file: consume, streams,
// groups and edges answer 401 (and close the connection) without it or with a wrong one, and a
// group cannot be moved past a partition's end.
func TestAPITokenGuardsEveryAPI(t *testing.T) {
	cdir := t.TempDir()
	edgeToken := addEdge(t, cdir, "gw-1")
	tokenFile := filepath.Join(t.TempDir(), "api.token")
	os.WriteFile(tokenFile, []byte("the-api-token\n"), 0o600)
	addr, stop := runCentral(t, central.Config{DataDir: cdir, APITokenFile: tokenFile})
	defer stop()
	url := "http://" + addr

	// One record at central through the sync API, so a stream and a group exist.
	edge, st := openEdge(t, 1)
	defer edge.Close()
	appendAll(t, st, newFleet(1, 1), 1)
	ch, err := st.Partition(0).ReadChunk(0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if code, msg := hostilePost(t, url, "gw-1", edgeToken, chunkHeaderMap(ch.Base, ch.Next, ch.Records, ch.RawBytes, ch.Data), ch.Data); code != 200 {
		t.Fatalf("sync: %d %s", code, msg)
	}
	for _, path := range []string{"/v1/streams", "/v1/consume/readings", "/v1/groups/g/offsets?stream=readings", "/v1/edges", "/subjects", "/v1/tail/readings"} {
		for _, tok := range []string{"", "wrong", "the-api-token-but-longer"} {
			resp, body := get(t, url+path, tok)
			if resp.StatusCode != http.StatusUnauthorized || !resp.Close || !strings.Contains(body, "token") {
				t.Fatalf("GET %s with token %q: %d close=%v %s, want 401 and the connection closed", path, tok, resp.StatusCode, resp.Close, body)
			}
		}
		if path == "/v1/tail/readings" {
			continue // a follower: the 401s are what matters here
		}
		if resp, body := get(t, url+path, "the-api-token"); resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s with the token: %d %s", path, resp.StatusCode, body)
		}
	}
	// The schema registry's routes also take the token as an HTTP Basic password, the way Schema
	// Registry clients send it; a wrong password is refused like a wrong token.
	for _, c := range []struct {
		user, password string
		want           int
	}{{"reader", "the-api-token", http.StatusOK}, {"", "the-api-token", http.StatusOK}, {"reader", "wrong", http.StatusUnauthorized}, {"the-api-token", "", http.StatusUnauthorized}} {
		req, _ := http.NewRequest(http.MethodGet, url+"/subjects", nil)
		req.SetBasicAuth(c.user, c.password)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("GET /subjects with Basic %q:%q: %d, want %d", c.user, c.password, resp.StatusCode, c.want)
		}
	}
	if resp, _ := get(t, url+"/metrics", ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics on loopback: %d, want 200 without a token", resp.StatusCode)
	}
	commit := func(off int64) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, url+"/v1/groups/g/offsets?stream=readings",
			strings.NewReader(fmt.Sprintf(`{"offsets":{"0":%d}}`, off)))
		req.Header.Set("Authorization", "Bearer the-api-token")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// The record went to one of 8 central partitions; partition 0's end is 0 or 1.
	if code, body := commit(1 << 40); code != http.StatusBadRequest || !strings.Contains(body, "past its end") {
		t.Fatalf("commit past the end: %d %s, want 400", code, body)
	}
	if code, body := commit(0); code != http.StatusOK {
		t.Fatalf("commit at 0: %d %s", code, body)
	}
}

func chunkHeaderMap(base, next int64, records, raw int, data []byte) map[string]string {
	return map[string]string{protocol.HeaderBase: fmt.Sprint(base), protocol.HeaderNext: fmt.Sprint(next),
		protocol.HeaderRecords: fmt.Sprint(records), protocol.HeaderRawBytes: fmt.Sprint(raw),
		protocol.HeaderCRC: fmt.Sprint(protocol.ChunkCRC(data))}
}

// TestBodylessPostsDoNotHoldCentral: POSTs that announce a body and never send it were held
// open for good (net/http drained the body before writing the 401; an accepted one waited in
// io.ReadAll). Refused ones are now answered and closed at once, accepted ones get 408 after
// the body timeout, and the listener caps its connections.
func TestBodylessPostsDoNotHoldCentral(t *testing.T) {
	c, _, token := startChildCentral(t, childCentral{maxConns: 16, bodyTimeout: 500 * time.Millisecond})
	dial := func() net.Conn {
		conn, err := net.DialTimeout("tcp", c.listen, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return conn
	}
	// answer reads one response and reports its status line and whether the server then closed.
	answer := func(conn net.Conn, within time.Duration) (string, bool) {
		conn.SetReadDeadline(time.Now().Add(within))
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return "no answer: " + err.Error(), false
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		_, err = br.ReadByte()
		if err != io.EOF {
			t.Logf("after %s: %v", resp.Status, err)
		}
		return resp.Status, err == io.EOF
	}
	post := "POST " + protocol.SyncPath("readings", 0) + " HTTP/1.1\r\nHost: central\r\nContent-Length: 1000\r\n%s\r\n"
	for i := 0; i < 10; i++ {
		conn := dial()
		fmt.Fprintf(conn, post, "")
		status, closed := answer(conn, 5*time.Second)
		conn.Close()
		if !strings.HasPrefix(status, "401") || !closed {
			t.Fatalf("unauthenticated POST without its body: %q closed=%v, want 401 and a close", status, closed)
		}
	}
	conn := dial()
	start := time.Now()
	fmt.Fprintf(conn, post, fmt.Sprintf("Authorization: Bearer %s\r\n%s: gw-1\r\n", token, protocol.HeaderEdge))
	status, closed := answer(conn, 10*time.Second)
	conn.Close()
	if !strings.HasPrefix(status, "408") || !closed {
		t.Fatalf("authenticated POST without its body: %q closed=%v, want 408 and a close", status, closed)
	}
	t.Logf("a body that never came was given up after %v", time.Since(start).Round(10*time.Millisecond))

	// 64 idle connections against a cap of 16: central keeps no more than 16 open.
	before := openFiles(t, c.cmd.Process.Pid)
	var idle []net.Conn
	for i := 0; i < 64; i++ {
		idle = append(idle, dial()) // the kernel completes the handshake; central accepts 16
	}
	time.Sleep(300 * time.Millisecond)
	during := openFiles(t, c.cmd.Process.Pid)
	t.Logf("open files: %d before, %d with 64 idle connections (cap 16)", before, during)
	if during > before+16+4 {
		t.Fatalf("central holds %d more files with 64 idle connections, cap 16", during-before)
	}
	for _, conn := range idle {
		conn.Close()
	}
	// Once they are gone, central serves again.
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := (&http.Client{Timeout: 2 * time.Second}).Get("http://" + c.listen + "/healthz")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if bytes.Equal(b, []byte("ok\n")) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("central does not serve after the idle connections closed: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
