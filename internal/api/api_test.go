package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fake is a Backend and Inspector over a map.
type fake struct {
	mu     sync.Mutex
	next   int
	fwds   map[int]HostFwd
	failOn string
	block  chan struct{} // when set, ConntrackList waits for it
}

func newFake() *fake { return &fake{fwds: map[int]HostFwd{}} }

func (f *fake) AddHostFwd(h HostFwd) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failOn == CmdAddHostFwd {
		return 0, errors.New("host port 8080/tcp already published")
	}
	if !h.GuestAddr.IsValid() {
		return 0, errors.New("guest_addr is required")
	}
	f.next++
	h.ID = f.next
	f.fwds[h.ID] = h
	return h.ID, nil
}

func (f *fake) ListHostFwd() ([]HostFwd, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []HostFwd
	for id := 1; id <= f.next; id++ {
		if h, ok := f.fwds[id]; ok {
			out = append(out, h)
		}
	}
	return out, nil
}

func (f *fake) RemoveHostFwd(id int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.fwds[id]; !ok {
		return fmt.Errorf("no forward with id %d", id)
	}
	delete(f.fwds, id)
	return nil
}

func (f *fake) ConntrackList(w io.Writer) error {
	if f.block != nil {
		<-f.block
	}
	_, err := io.WriteString(w, "udp      17 29 src=192.168.2.104 dst=192.168.2.116 sport=5353 dport=53 [UNREPLIED] src=172.17.0.4 dst=192.168.2.104 sport=53 dport=5353 mark=0 use=1\n")
	return err
}

func (f *fake) ConntrackFlush() (int, error) { return 3, nil }

func (f *fake) NATList(w io.Writer) error {
	_, err := io.WriteString(w, "Chain PREROUTING (policy ACCEPT)\n")
	return err
}

func (f *fake) FDBList(w io.Writer) error {
	if f.failOn == CmdFDBList {
		return errors.New("bridge closed")
	}
	_, err := io.WriteString(w, "02:42:ac:11:00:04 dev eth0 master br0\n")
	return err
}

func (f *fake) Stats() (map[string]uint64, error) {
	return map[string]uint64{"gateway.forwarded": 7, "conntrack.entries": 1}, nil
}

// slirpOnly hides the Inspector methods.
type slirpOnly struct{ Backend }

func serve(t *testing.T, b Backend, cfg ServerConfig) (*Server, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "api.sock")
	s, err := Listen(path, b, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

// raw sends req as is and returns the response line.
func raw(t *testing.T, path, req string, halfClose bool) string {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	if halfClose {
		c.(*net.UnixConn).CloseWrite()
	}
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestSlirp4netnsWire checks the bytes a slirp4netns client such as
// RootlessKit sends and reads. list_hostfwd's entries are both where
// slirp4netns's manual has them, under "return", and where slirp4netns
// 1.2.0 puts them, at the top level.
func TestSlirp4netnsWire(t *testing.T) {
	_, path := serve(t, newFake(), ServerConfig{})
	steps := []struct{ req, resp string }{
		{`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "0.0.0.0", "host_port": 8080, "guest_addr": "172.17.0.4", "guest_port": 80}}`,
			`{"return":{"id":1}}`},
		{`{"execute": "add_hostfwd", "arguments": {"proto": "udp4", "host_port": 5353, "guest_addr": "172.17.0.5", "guest_port": 53}}`,
			`{"return":{"id":2}}`}, // udp4: slirp4netns's IPv4 alone
		{`{"execute": "list_hostfwd"}`,
			`{"return":{"entries":[{"id":1,"proto":"tcp","host_addr":"0.0.0.0","host_port":8080,"guest_addr":"172.17.0.4","guest_port":80},{"id":2,"proto":"udp","host_addr":"0.0.0.0","host_port":5353,"guest_addr":"172.17.0.5","guest_port":53}]},"entries":[{"id":1,"proto":"tcp","host_addr":"0.0.0.0","host_port":8080,"guest_addr":"172.17.0.4","guest_port":80},{"id":2,"proto":"udp","host_addr":"0.0.0.0","host_port":5353,"guest_addr":"172.17.0.5","guest_port":53}]}`},
		{`{"execute": "remove_hostfwd", "arguments": {"id": 1}}`, `{"return":{}}`},
		{`{"execute": "remove_hostfwd", "arguments": {"id": 1}}`, `{"error":{"desc":"no forward with id 1"}}`},
		{`{"execute": "list_hostfwd", "arguments": {}}`,
			`{"return":{"entries":[{"id":2,"proto":"udp","host_addr":"0.0.0.0","host_port":5353,"guest_addr":"172.17.0.5","guest_port":53}]},"entries":[{"id":2,"proto":"udp","host_addr":"0.0.0.0","host_port":5353,"guest_addr":"172.17.0.5","guest_port":53}]}`},
		{`{"execute": "remove_hostfwd", "arguments": {"id": 2}}`, `{"return":{}}`},
		{`{"execute": "list_hostfwd"}`, `{"return":{"entries":[]},"entries":[]}`},
	}
	for i, st := range steps {
		// Alternate clients that half-close and clients that do not.
		if got := raw(t, path, st.req, i%2 == 0); got != st.resp {
			t.Errorf("%s\n got %s\nwant %s", st.req, got, st.resp)
		}
	}
}

func TestBadRequests(t *testing.T) {
	fk := newFake()
	_, path := serve(t, fk, ServerConfig{MaxRequest: 512})
	tests := []struct{ req, desc string }{
		{`not json`, "bad request: cannot parse JSON"},
		{`{"execute": "frobnicate"}`, `bad request: unknown command "frobnicate"`},
		{`{"execute": "add_hostfwd", "arguments": {"proto": "sctp", "host_port": 1, "guest_addr": "172.17.0.4", "guest_port": 1}}`, `bad request: proto "sctp"`},
		{`{"execute": "add_hostfwd", "arguments": {"proto": "tcp6", "host_port": 1, "guest_addr": "172.17.0.4", "guest_port": 1}}`, `proto "tcp6": IPv6 forwarding is not supported`},
		{`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": 0, "guest_addr": "172.17.0.4", "guest_port": 1}}`, "bad request: host_port 0"},
		{`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": 80, "guest_addr": "172.17.0.4", "guest_port": 70000}}`, "bad request: guest_port 70000"},
		{`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": 80, "host_port_end": 79, "guest_addr": "172.17.0.4", "guest_port": 80}}`, "bad request: host ports 80-79"},
		{`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": 8000, "host_port_end": 8010, "guest_addr": "172.17.0.4", "guest_port": 80, "guest_port_end": 81}}`, "ranges of different lengths"},
		{`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "nope", "host_port": 80, "guest_addr": "172.17.0.4", "guest_port": 80}}`, "bad request: arguments"},
		{`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": 80, "guest_port": 80}}`, "guest_addr is required"},
		{`{"execute": "add_hostfwd", "arguments": "x"}`, "bad request: arguments"},
		{`{"execute": "remove_hostfwd", "arguments": {}}`, "bad request: remove_hostfwd needs an id"},
		{`{"execute": "list_hostfwd", "arguments": {"pad": "` + strings.Repeat("x", 600) + `"}}`, "bad request: larger than 512 bytes"},
	}
	for _, tc := range tests {
		got := raw(t, path, tc.req, true)
		var resp Response
		if err := json.Unmarshal([]byte(got), &resp); err != nil || resp.Return != nil || resp.Error == nil || !strings.Contains(resp.Error.Desc, tc.desc) {
			t.Errorf("%.80s\n got %s\nwant an error with %q", tc.req, got, tc.desc)
		}
	}
	if len(fk.fwds) != 0 {
		t.Errorf("bad requests added forwards: %v", fk.fwds)
	}
}

func TestClient(t *testing.T) {
	fk := newFake()
	_, path := serve(t, fk, ServerConfig{})
	c := &Client{Path: path}
	ctx := context.Background()

	want := HostFwd{Proto: "tcp", HostAddr: netip.MustParseAddr("192.168.2.116"), HostPort: 8000, HostPortEnd: 8009,
		GuestAddr: netip.MustParseAddr("172.17.0.4"), GuestPort: 9000, GuestPortEnd: 9009}
	id, err := c.AddHostFwd(ctx, want)
	if err != nil || id != 1 {
		t.Fatalf("AddHostFwd = %d, %v", id, err)
	}
	want.ID = 1
	list, err := c.ListHostFwd(ctx)
	if err != nil || len(list) != 1 || list[0] != want {
		t.Fatalf("ListHostFwd = %+v, %v; want [%+v]", list, err, want)
	}
	v6, err := c.AddHostFwd(ctx, HostFwd{Proto: "udp", HostPort: 53, GuestAddr: netip.MustParseAddr("2001:db8:17::4"), GuestPort: 53})
	if err != nil {
		t.Fatal(err)
	}
	if list, _ := c.ListHostFwd(ctx); len(list) != 2 || list[1].HostAddr != netip.IPv6Unspecified() {
		t.Errorf("an IPv6 guest without host_addr: %+v", list)
	}
	if err := c.RemoveHostFwd(ctx, v6); err != nil {
		t.Fatal(err)
	}
	var ae *Error
	if err := c.RemoveHostFwd(ctx, 99); !errors.As(err, &ae) || ae.Desc != "no forward with id 99" {
		t.Errorf("RemoveHostFwd(99) = %v, want the server's *Error", err)
	}
	fk.failOn = CmdAddHostFwd
	if _, err := c.AddHostFwd(ctx, want); !errors.As(err, &ae) || !strings.Contains(ae.Desc, "already published") {
		t.Errorf("refused AddHostFwd = %v", err)
	}

	if s, err := c.ConntrackList(ctx); err != nil || !strings.HasPrefix(s, "udp      17 29 src=192.168.2.104") {
		t.Errorf("ConntrackList = %q, %v", s, err)
	}
	if n, err := c.ConntrackFlush(ctx); err != nil || n != 3 {
		t.Errorf("ConntrackFlush = %d, %v", n, err)
	}
	if s, err := c.NATList(ctx); err != nil || s != "Chain PREROUTING (policy ACCEPT)\n" {
		t.Errorf("NATList = %q, %v", s, err)
	}
	if s, err := c.FDBList(ctx); err != nil || !strings.Contains(s, "master br0") {
		t.Errorf("FDBList = %q, %v", s, err)
	}
	fk.failOn = CmdFDBList
	if _, err := c.FDBList(ctx); !errors.As(err, &ae) || ae.Desc != "bridge closed" {
		t.Errorf("failing FDBList = %v", err)
	}
	if st, err := c.Stats(ctx); err != nil || st["gateway.forwarded"] != 7 || st["conntrack.entries"] != 1 {
		t.Errorf("Stats = %v, %v", st, err)
	}

	// A connection failure is not an *Error.
	bad := &Client{Path: filepath.Join(t.TempDir(), "none.sock")}
	if _, err := bad.Stats(ctx); err == nil || errors.As(err, &ae) {
		t.Errorf("Stats on no socket = %v", err)
	}
}

func TestSlirpOnlyBackend(t *testing.T) {
	_, path := serve(t, slirpOnly{newFake()}, ServerConfig{})
	c := &Client{Path: path}
	if _, err := c.ConntrackList(context.Background()); err == nil || !strings.Contains(err.Error(), `unknown command "conntrack_list"`) {
		t.Errorf("conntrack_list on a slirp-only backend: %v", err)
	}
	if _, err := c.ListHostFwd(context.Background()); err != nil {
		t.Error(err)
	}
}

func TestSocketFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "api.sock")
	s, err := Listen(path, newFake(), ServerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket with 0600", fi.Mode())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("directory holds %d files, want the socket alone", len(ents))
	}
	if s.Path() != path {
		t.Errorf("Path() = %q", s.Path())
	}

	// A second server on a live socket is refused.
	if s2, err := Listen(path, newFake(), ServerConfig{}); !errors.Is(err, ErrInUse) {
		if s2 != nil {
			s2.Close()
		}
		t.Errorf("second Listen: %v, want ErrInUse", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file left after Close: %v", err)
	}

	// A stale socket (nothing listening) is replaced.
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	s, err = Listen(path, newFake(), ServerConfig{})
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	s.Close()

	// Any other file is left alone.
	if err := os.WriteFile(path, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if s, err := Listen(path, newFake(), ServerConfig{}); err == nil {
		s.Close()
		t.Error("Listen over a regular file succeeded")
	}
	if b, _ := os.ReadFile(path); string(b) != "keep" {
		t.Error("Listen clobbered a regular file")
	}

	// Close does not remove a file that replaced the socket.
	path2 := filepath.Join(dir, "b.sock")
	s, err = Listen(path2, newFake(), ServerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(path2)
	os.WriteFile(path2, []byte("other"), 0o600)
	s.Close()
	if b, _ := os.ReadFile(path2); string(b) != "other" {
		t.Error("Close removed a file it did not create")
	}

	if _, err := Listen(filepath.Join(dir, "no", "such", "dir.sock"), newFake(), ServerConfig{}); err == nil {
		t.Error("Listen in a missing directory succeeded")
	}
}

func TestReadTimeout(t *testing.T) {
	_, path := serve(t, newFake(), ServerConfig{ReadTimeout: 100 * time.Millisecond})
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, `{"execute": "list_`) // and then nothing
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading the answer to a stalled request: %v", err)
	}
	if !strings.Contains(string(b), `"error"`) {
		t.Errorf("stalled request answered %s", b)
	}
}

// TestCloseCutsConnections checks that Close returns while clients stall
// and while the backend is busy, and that no goroutine outlives it.
func TestCloseCutsConnections(t *testing.T) {
	fk := newFake()
	fk.block = make(chan struct{})
	s, path := serve(t, fk, ServerConfig{ReadTimeout: time.Hour, MaxConns: 2})
	idle, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	errc := make(chan error, 1)
	go func() {
		_, err := (&Client{Path: path}).ConntrackList(context.Background())
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond) // let both connections in
	done := make(chan struct{})
	go func() {
		s.Close()
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("Close returned while the backend was still busy")
	case <-time.After(50 * time.Millisecond):
	}
	close(fk.block)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	<-errc // answered or cut; either way the call ended
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file left: %v", err)
	}
}

func TestConcurrentClients(t *testing.T) {
	_, path := serve(t, newFake(), ServerConfig{MaxConns: 4})
	c := &Client{Path: path}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.AddHostFwd(context.Background(), HostFwd{Proto: "tcp", HostPort: 10000 + i, GuestAddr: netip.MustParseAddr("172.17.0.4"), GuestPort: 80})
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if list, err := c.ListHostFwd(context.Background()); err != nil || len(list) != 64 {
		t.Errorf("%d forwards, %v", len(list), err)
	}
}

func TestClientContext(t *testing.T) {
	// A server that accepts and never answers.
	path := filepath.Join(t.TempDir(), "mute.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = (&Client{Path: path}).Stats(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Errorf("Stats against a mute server: %v after %v, want the context's deadline", err, time.Since(start))
	}
	if _, err := (&Client{Path: path, Timeout: 50 * time.Millisecond}).Stats(context.Background()); err == nil {
		t.Error("Client.Timeout not applied")
	}
}

func TestHostFwdCheck(t *testing.T) {
	any4 := netip.IPv4Unspecified()
	g := netip.MustParseAddr("172.17.0.4")
	tests := []struct {
		f  HostFwd
		ok bool
	}{
		{HostFwd{Proto: "tcp", HostAddr: any4, HostPort: 8080, GuestAddr: g, GuestPort: 80}, true},
		{HostFwd{Proto: "udp", HostAddr: any4, HostPort: 1, GuestAddr: g, GuestPort: 65535}, true},
		{HostFwd{Proto: "tcp", HostAddr: any4, HostPort: 8000, HostPortEnd: 8010, GuestAddr: g, GuestPort: 9000, GuestPortEnd: 9010}, true},
		{HostFwd{Proto: "tcp", HostAddr: any4, HostPort: 8000, HostPortEnd: 8000, GuestAddr: g, GuestPort: 80}, true},
		{HostFwd{Proto: "TCP", HostAddr: any4, HostPort: 8080, GuestAddr: g, GuestPort: 80}, false},
		{HostFwd{Proto: "tcp", HostPort: 8080, GuestAddr: g, GuestPort: 80}, false},
		{HostFwd{Proto: "tcp", HostAddr: any4, HostPort: 65536, GuestAddr: g, GuestPort: 80}, false},
		{HostFwd{Proto: "tcp", HostAddr: any4, HostPort: 8080, GuestAddr: g, GuestPort: -1}, false},
		{HostFwd{Proto: "tcp", HostAddr: any4, HostPort: 8000, HostPortEnd: 70000, GuestAddr: g, GuestPort: 80, GuestPortEnd: 62080}, false},
		{HostFwd{Proto: "tcp", HostAddr: any4, HostPort: 8000, GuestAddr: g, GuestPort: 9000, GuestPortEnd: 9001}, false},
		{HostFwd{Proto: "tcp", HostAddr: any4, HostPort: 8000, HostPortEnd: 8009, GuestAddr: g, GuestPort: 80}, true},
		{HostFwd{Proto: "tcp", HostAddr: any4, HostPort: 8000, HostPortEnd: 8009, GuestAddr: g, GuestPort: 80, GuestPortEnd: 81}, false},
	}
	for _, tc := range tests {
		if err := tc.f.Check(); (err == nil) != tc.ok {
			t.Errorf("%+v: Check() = %v, want ok %v", tc.f, err, tc.ok)
		}
	}
}

func TestServe(t *testing.T) {
	path := filepath.Join(t.TempDir(), "own.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Serve(l, newFake(), ServerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (&Client{Path: path}).ListHostFwd(context.Background()); err != nil {
		t.Error(err)
	}
	if s.Path() != "" {
		t.Errorf("Path() = %q for a caller's listener", s.Path())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Serve(nil, newFake(), ServerConfig{}); err == nil {
		t.Error("Serve(nil) succeeded")
	}
}

// slirp4netns 1.2.0 answers list_hostfwd with the entries at the top
// level, {"entries":[...]} (api.c; its own test reads `jq .entries[0].id`),
// where its manual shows them under "return": the server answers both
// ways, so a script written against either reads the same from usernat.
func TestListShapeAsSlirp4netns(t *testing.T) {
	_, path := serve(t, newFake(), ServerConfig{})
	raw(t, path, `{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": 8080, "guest_addr": "10.0.2.100", "guest_port": 80}}`, true)
	got := raw(t, path, `{"execute": "list_hostfwd"}`, true)
	var r struct {
		Entries []map[string]any `json:"entries"`
	}
	if err := json.Unmarshal([]byte(got), &r); err != nil || len(r.Entries) != 1 || r.Entries[0]["id"] != float64(1) {
		t.Errorf("list_hostfwd reply %s: no top-level entries as slirp4netns gives", got)
	}
	var m struct {
		Return struct {
			Entries []map[string]any `json:"entries"`
		} `json:"return"`
	}
	if err := json.Unmarshal([]byte(got), &m); err != nil || len(m.Return.Entries) != 1 {
		t.Errorf("list_hostfwd reply %s: no entries under return, as the manual has them", got)
	}
}

// TestListenRaceHelper is TestListenTwoProcessesAtOnce's process: when USERNAT_RACE_PATH is set, wait until USERNAT_RACE_AT
// (unix nanoseconds), Listen on the path, print "ok" or the error, and
// hold the socket until its stdin closes.
func TestListenRaceHelper(t *testing.T) {
	path := os.Getenv("USERNAT_RACE_PATH")
	if path == "" {
		t.Skip("helper")
	}
	at, _ := strconv.ParseInt(os.Getenv("USERNAT_RACE_AT"), 10, 64)
	time.Sleep(time.Until(time.Unix(0, at)))
	s, err := Listen(path, newFake(), ServerConfig{})
	if errors.Is(err, ErrInUse) {
		fmt.Println("RESULT in use")
		return
	}
	if err != nil {
		fmt.Println("RESULT err", err)
		return
	}
	fmt.Println("RESULT ok")
	io.Copy(io.Discard, os.Stdin) // held until the test closes our stdin
	s.Close()
}

// Two gateways started at once on one socket path, free or holding a
// stale socket a crash left: at most one may own it; the other must fail
// with ErrInUse, as bind(2) would have. (Over a stale socket, one
// removed the socket the other had just put in place, and both
// succeeded, or the loser failed on the stale one's removal.)
func TestListenTwoProcessesAtOnce(t *testing.T) {
	for round := range 20 {
		path := filepath.Join(t.TempDir(), "api.sock")
		if round%2 == 1 {
			l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			l.SetUnlinkOnClose(false)
			l.Close() // a stale socket, nothing listening
		}
		at := time.Now().Add(300 * time.Millisecond).UnixNano()
		// Each holds its socket until both have said how Listen went
		// (their stdin closes), so the two overlap however late a loaded
		// machine starts one of them.
		var wg sync.WaitGroup
		var mu sync.Mutex
		oks, inUse := 0, 0
		said := make(chan struct{}, 2)
		release := make(chan struct{})
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cmd := exec.Command(os.Args[0], "-test.run=^TestListenRaceHelper$", "-test.count=1")
				cmd.Env = append(os.Environ(), "USERNAT_RACE_PATH="+path, "USERNAT_RACE_AT="+strconv.FormatInt(at, 10))
				stdin, err := cmd.StdinPipe()
				if err != nil {
					t.Error(err)
					said <- struct{}{}
					return
				}
				out, err := cmd.StdoutPipe()
				if err != nil {
					t.Error(err)
					said <- struct{}{}
					return
				}
				if err := cmd.Start(); err != nil {
					t.Error(err)
					said <- struct{}{}
					return
				}
				sc := bufio.NewScanner(out)
				for sc.Scan() {
					line := sc.Text()
					if !strings.HasPrefix(line, "RESULT") {
						continue
					}
					mu.Lock()
					switch line {
					case "RESULT ok":
						oks++
					case "RESULT in use":
						inUse++
					}
					mu.Unlock()
					break
				}
				said <- struct{}{}
				<-release
				stdin.Close()
				io.Copy(io.Discard, out)
				cmd.Wait()
			}()
		}
		<-said
		<-said
		close(release)
		wg.Wait()
		if oks != 1 || inUse != 1 {
			t.Fatalf("round %d: %d processes' Listen(%s) succeeded, %d refused with ErrInUse; want one and one (both succeeding: the first's socket replaced by the second's)", round, oks, path, inUse)
		}
	}
}

// Two Listens on one path at once from processes with the same pid (two
// pid namespaces, or one process): at most one may succeed, and that one
// must answer on the path.
func TestListenSamePidAtOnce(t *testing.T) {
	for round := range 300 {
		path := filepath.Join(t.TempDir(), "api.sock")
		var wg sync.WaitGroup
		var srv [2]*Server
		var errs [2]error
		start := make(chan struct{})
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				srv[i], errs[i] = Listen(path, newFake(), ServerConfig{})
			}()
		}
		close(start)
		wg.Wait()
		oks := 0
		for i := range 2 {
			if errs[i] == nil {
				oks++
			} else if !errors.Is(errs[i], ErrInUse) {
				t.Logf("round %d: Listen: %v", round, errs[i])
			}
		}
		var callErr error
		if oks == 1 {
			c := &Client{Path: path, Timeout: time.Second}
			_, callErr = c.ListHostFwd(context.Background())
		}
		for i := range 2 {
			if srv[i] != nil {
				srv[i].Close()
			}
		}
		if oks != 1 || callErr != nil {
			t.Fatalf("round %d: %d Listens succeeded (errs %v); a call on the path: %v", round, oks, errs, callErr)
		}
	}
}

// Another process of the same pid (another pid namespace) is binding its
// temporary socket: Listen must not delete it (it took the pid's name for
// its own, and removed a socket there as a crashed process's).
func TestListenKeepsOthersTemp(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "api.sock")
	tmp := filepath.Join(dir, "."+strconv.Itoa(os.Getpid())+".api.sock")
	other, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	s, err := Listen(path, newFake(), ServerConfig{})
	if err == nil {
		defer s.Close()
	}
	if _, err := os.Lstat(tmp); err != nil {
		t.Errorf("Listen removed another live server's socket %s: %v", tmp, err)
	}
}

// Another program's lock on the socket's directory (RootlessKit holds one
// on its state directory, where its slirp4netns's socket goes, for as
// long as it runs) does not hold Listen up: it waited on it for good.
func TestListenBesideLockedDir(t *testing.T) {
	dir := t.TempDir()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := syscall.Flock(int(d.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		s, err := Listen(filepath.Join(dir, "api.sock"), newFake(), ServerConfig{})
		if err == nil {
			s.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		syscall.Flock(int(d.Fd()), syscall.LOCK_UN)
		<-done
		t.Fatal("Listen waited on the directory's lock")
	}
}

// A request far over MaxRequest is answered with the server's "larger
// than" error, whatever its size: the server answers before it has read
// it all, and its Client must report that answer, not the broken pipe of
// the rest of its write.
func TestClientHugeRequestGetsServerError(t *testing.T) {
	_, path := serve(t, newFake(), ServerConfig{})
	for _, n := range []int{100 << 10, 4 << 20} {
		err := (&Client{Path: path}).Call(context.Background(), CmdListHostFwd, map[string]string{"pad": strings.Repeat("x", n)}, nil)
		if _, ok := err.(*Error); !ok || !strings.Contains(err.Error(), "larger than 65536 bytes") {
			t.Errorf("request of %d bytes: %v, want the server's error", n, err)
		}
	}
}
