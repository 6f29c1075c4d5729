package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// ServerConfig configures a Server. The zero value serves with the
// defaults given beside each field.
type ServerConfig struct {
	// MaxRequest is the largest request in bytes; 0 means 64 KiB.
	MaxRequest int
	// ReadTimeout bounds the time a client has to send its request; 0
	// means 5 s.
	ReadTimeout time.Duration
	// WriteTimeout bounds the time to send the response; 0 means 30 s.
	WriteTimeout time.Duration
	// MaxConns is how many connections are served at once; 0 means 16.
	// Further clients wait in the listen backlog.
	MaxConns int
	// Logger receives a line per failed request; nil means silent.
	Logger *slog.Logger
}

// Server serves a Backend on a unix socket.
type Server struct {
	cfg     ServerConfig
	backend Backend
	log     *slog.Logger
	l       *net.UnixListener
	path    string
	dev     uint64 // with ino, the socket file's identity, so Close
	ino     uint64 // removes only its own
	sem     chan struct{}
	wg      sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool

	once sync.Once
	cerr error
}

// ErrInUse is returned by Listen when a server already answers on the path.
var ErrInUse = errors.New("api: socket in use")

// Listen creates the unix socket path, readable and writable by its owner
// only, and serves b on it until Close. A stale socket at path (nothing
// listening) is replaced; a live one is an error wrapping ErrInUse, and
// any other file an error.
func Listen(path string, b Backend, cfg ServerConfig) (*Server, error) {
	if b == nil {
		return nil, errors.New("api: listen: nil Backend")
	}
	// Probing and replacing a stale socket, then linking ours, is one step
	// for servers starting at once: else one may remove the socket the
	// other just put in place, and both succeed.
	unlock := lockPath(path)
	defer unlock()
	if err := clearStale(path); err != nil {
		return nil, fmt.Errorf("api: listen %s: %w", path, err)
	}
	l, err := listenPrivate(path)
	if err != nil {
		return nil, fmt.Errorf("api: listen %s: %w", path, err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		l.Close()
		os.Remove(path)
		return nil, fmt.Errorf("api: listen %s: %w", path, err)
	}
	s := newServer(l, b, cfg)
	s.path, s.dev, s.ino = path, uint64(st.Dev), st.Ino
	s.start()
	return s, nil
}

// Serve serves b on l, a listener the caller made, until Close, which
// closes l. Unlike Listen it neither sets the socket's permissions nor
// removes its file.
func Serve(l *net.UnixListener, b Backend, cfg ServerConfig) (*Server, error) {
	if b == nil || l == nil {
		return nil, errors.New("api: serve: nil Backend or listener")
	}
	s := newServer(l, b, cfg)
	s.start()
	return s, nil
}

func newServer(l *net.UnixListener, b Backend, cfg ServerConfig) *Server {
	if cfg.MaxRequest <= 0 {
		cfg.MaxRequest = 64 << 10
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = 5 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 30 * time.Second
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 16
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{
		cfg:     cfg,
		backend: b,
		log:     log,
		l:       l,
		sem:     make(chan struct{}, cfg.MaxConns),
		conns:   make(map[net.Conn]struct{}),
	}
}

// lockPath takes an exclusive flock(2) on a lock file of the socket path
// (".NAME.lock" beside it), to serialize Listens on one path across
// processes, and returns its release, which removes the file while it
// still holds it: a Listen that waited on the removed file finds the path
// gone or another file there, and locks that. Not the directory itself:
// others lock theirs (RootlessKit its state directory, where its
// slirp4netns's socket goes), and Listen would wait on them for good. A
// lock file that cannot be made locks nothing.
func lockPath(path string) (unlock func()) {
	name := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".lock")
	for range 100 {
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|syscall.O_CLOEXEC, 0o600)
		if err != nil {
			return func() {}
		}
		for {
			err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
			if err != syscall.EINTR {
				break
			}
		}
		var held, now syscall.Stat_t
		if err == nil && syscall.Fstat(int(f.Fd()), &held) == nil && syscall.Stat(name, &now) == nil &&
			held.Dev == now.Dev && held.Ino == now.Ino {
			return func() {
				os.Remove(name)
				f.Close()
			}
		}
		f.Close() // its holder removed it meanwhile
	}
	return func() {}
}

// clearStale removes a socket file at path that nothing listens on.
func clearStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != os.ModeSocket {
		return errors.New("file exists and is not a socket")
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return ErrInUse
	}
	// Another server starting at once may remove the stale socket first:
	// then linking its own, or ours, decides.
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("probing the existing socket: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// listenPrivate binds a unix socket at path with mode 0600. The socket is
// bound under a temporary name, restricted, then linked into place, so no
// one can connect while it has the umask's permissions.
func listenPrivate(path string) (*net.UnixListener, error) {
	// The temporary name is random, not the pid: two processes of
	// one pid (two pid namespaces, or two Listens in one process) must
	// neither share nor delete each other's.
	var (
		tmp string
		l   *net.UnixListener
		err error
	)
	for range 8 {
		tmp = filepath.Join(filepath.Dir(path), "."+strconv.FormatUint(rand.Uint64(), 36)+"."+filepath.Base(path))
		if len(tmp) >= 108 { // sun_path; the name must fit as is
			tmp = path
		}
		l, err = net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
		if tmp == path || !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	l.SetUnlinkOnClose(false)
	fail := func(err error) (*net.UnixListener, error) {
		l.Close()
		os.Remove(tmp)
		return nil, err
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fail(err)
	}
	if tmp != path {
		// link(2), not rename(2): rename would replace a socket another
		// server put at path since clearStale looked.
		if err := os.Link(tmp, path); err != nil {
			if errors.Is(err, os.ErrExist) {
				err = ErrInUse
			}
			return fail(err)
		}
		os.Remove(tmp)
	}
	return l, nil
}

// Path returns the socket's path; empty for a Server made by Serve.
func (s *Server) Path() string { return s.path }

func (s *Server) start() {
	s.wg.Add(1)
	go s.acceptLoop()
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	var backoff time.Duration
	for {
		s.sem <- struct{}{}
		c, err := s.l.Accept()
		if err != nil {
			<-s.sem
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait, never spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("api: accept", "err", err, "retry", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if !s.track(c) {
			c.Close()
			<-s.sem
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.sem }()
			defer s.untrack(c)
			s.serveConn(c)
		}()
	}
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

// setDeadline sets a deadline d from now with set, unless Close has cut
// the connection already, whose deadline must stay in the past.
func (s *Server) setDeadline(c net.Conn, set func(time.Time) error, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		set(time.Now().Add(d))
	}
}

func (s *Server) serveConn(c net.Conn) {
	s.setDeadline(c, c.SetReadDeadline, s.cfg.ReadTimeout)
	resp := s.answer(c)
	s.setDeadline(c, c.SetWriteDeadline, s.cfg.WriteTimeout)
	b, err := json.Marshal(resp)
	if err != nil { // cannot happen with the types above
		b = []byte(`{"error":{"desc":"internal error: cannot encode the response"}}`)
	}
	if _, err := c.Write(append(b, '\n')); err != nil {
		s.log.Debug("api: write response", "err", err)
		return
	}
	// Closing with unread input resets the connection, and the client may
	// lose the response (an oversized request, say). So signal the end,
	// then take what the client still sends, within bounds, until it
	// closes too.
	if uc, ok := c.(*net.UnixConn); ok {
		uc.CloseWrite()
	}
	s.setDeadline(c, c.SetReadDeadline, time.Second)
	io.Copy(io.Discard, io.LimitReader(c, 1<<20))
}

// answer reads one request from r and carries it out.
func (s *Server) answer(r io.Reader) (resp Response) {
	lr := &io.LimitedReader{R: r, N: int64(s.cfg.MaxRequest) + 1}
	var req Request
	if err := json.NewDecoder(lr).Decode(&req); err != nil {
		if lr.N <= 0 {
			return s.fail("", fmt.Errorf("bad request: larger than %d bytes", s.cfg.MaxRequest))
		}
		return s.fail("", fmt.Errorf("bad request: cannot parse JSON: %w", err))
	}
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("api: panic serving a request", "execute", req.Execute, "panic", p)
			resp = s.fail(req.Execute, fmt.Errorf("internal error: %v", p))
		}
	}()
	ret, err := s.execute(req)
	if err != nil {
		return s.fail(req.Execute, err)
	}
	b, err := json.Marshal(ret)
	if err != nil {
		return s.fail(req.Execute, fmt.Errorf("internal error: %w", err))
	}
	if l, ok := ret.(ListResult); ok {
		e, _ := json.Marshal(l.Entries)
		return Response{Return: b, Entries: e}
	}
	return Response{Return: b}
}

func (s *Server) fail(cmd string, err error) Response {
	s.log.Info("api: request failed", "execute", cmd, "err", err)
	return Response{Error: &Error{Desc: err.Error()}}
}

// execute dispatches req and returns the "return" member.
func (s *Server) execute(req Request) (any, error) {
	switch req.Execute {
	case CmdAddHostFwd:
		var f HostFwd
		if err := decodeArgs(req.Arguments, &f); err != nil {
			return nil, err
		}
		f.ID = 0
		// tcp4 and udp4 are IPv4 alone, which is all usernat forwards,
		// and tcp6 and udp6 IPv6 alone, as proposed for slirp4netns
		// (its 1.2 refuses all four).
		switch f.Proto {
		case "tcp4", "udp4":
			f.Proto = f.Proto[:3]
		case "tcp6", "udp6":
			return nil, fmt.Errorf("bad request: proto %q: IPv6 forwarding is not supported", f.Proto)
		}
		if !f.HostAddr.IsValid() {
			f.HostAddr = netip.IPv4Unspecified()
			if f.GuestAddr.Is6() {
				f.HostAddr = netip.IPv6Unspecified()
			}
		}
		if err := f.Check(); err != nil {
			return nil, fmt.Errorf("bad request: %w", err)
		}
		id, err := s.backend.AddHostFwd(f)
		if err != nil {
			return nil, err
		}
		return AddResult{ID: id}, nil
	case CmdListHostFwd:
		entries, err := s.backend.ListHostFwd()
		if err != nil {
			return nil, err
		}
		if entries == nil {
			entries = []HostFwd{}
		}
		return ListResult{Entries: entries}, nil
	case CmdRemoveHostFwd:
		var a struct {
			ID *int `json:"id"`
		}
		if err := decodeArgs(req.Arguments, &a); err != nil {
			return nil, err
		}
		if a.ID == nil {
			return nil, errors.New("bad request: remove_hostfwd needs an id")
		}
		if err := s.backend.RemoveHostFwd(*a.ID); err != nil {
			return nil, err
		}
		return struct{}{}, nil
	}
	in, ok := s.backend.(Inspector)
	if !ok {
		return nil, unknownCommand(req.Execute)
	}
	switch req.Execute {
	case CmdConntrackList:
		return text(in.ConntrackList)
	case CmdNATList:
		return text(in.NATList)
	case CmdFDBList:
		return text(in.FDBList)
	case CmdConntrackFlush:
		n, err := in.ConntrackFlush()
		if err != nil {
			return nil, err
		}
		return FlushResult{Deleted: n}, nil
	case CmdStats:
		c, err := in.Stats()
		if err != nil {
			return nil, err
		}
		if c == nil {
			c = map[string]uint64{}
		}
		return StatsResult{Counters: c}, nil
	}
	return nil, unknownCommand(req.Execute)
}

func unknownCommand(cmd string) error { return fmt.Errorf("bad request: unknown command %q", cmd) }

func text(write func(io.Writer) error) (any, error) {
	var b bytes.Buffer
	if err := write(&b); err != nil {
		return nil, err
	}
	return TextResult{Text: b.String()}, nil
}

func decodeArgs(raw json.RawMessage, v any) error {
	if len(raw) == 0 {
		raw = []byte("{}")
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("bad request: arguments: %w", err)
	}
	return nil
}

// Close stops accepting, cuts the connections in progress, waits for every
// goroutine of the server and removes the socket file Listen created. It
// is idempotent.
func (s *Server) Close() error {
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		for c := range s.conns {
			c.SetDeadline(time.Unix(1, 0))
		}
		s.mu.Unlock()
		s.cerr = s.l.Close()
		s.wg.Wait()
		if s.path != "" {
			var st syscall.Stat_t
			if err := syscall.Stat(s.path, &st); err == nil && uint64(st.Dev) == s.dev && st.Ino == s.ino {
				if err := os.Remove(s.path); err != nil && s.cerr == nil {
					s.cerr = err
				}
			}
		}
	})
	return s.cerr
}
