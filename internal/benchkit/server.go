package benchkit

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// The first byte a client sends picks what the server does with the
// connection; one published port carries every measurement. The client
// always speaks first: some pasta versions do not finish an inbound
// handshake until the client sends (see bench/README.md).
const (
	modePeer    = 'P' // reply with the address the server sees the client at, then close
	modeRequest = 'R' // reply with one byte, then close (server first, as HTTP/1.0 does)
	modeEcho    = 'E' // echo one byte at a time
	modeSink    = 'S' // read to EOF, then reply with the byte count and the time taken
)

// Bounds on every loop, besides the time each runs for.
const (
	streamBuf       = 256 << 10
	maxStreamBytes  = 1 << 40
	maxPings        = 1 << 20
	maxConns        = 200_000
	udpReplyTimeout = 500 * time.Millisecond

	// WarmupPings is how many round trips PingPong makes before it
	// starts timing.
	WarmupPings = 100
	// DialTimeout bounds a connection's setup, and each request of
	// ConnRate and AskPeer.
	DialTimeout = 5 * time.Second
	// IOGrace is the time beyond a measurement's length that its
	// connection may take before its deadline ends it.
	IOGrace = 30 * time.Second
)

// Server answers the clients of this package on one listener until Close.
type Server struct {
	l     net.Listener
	limit time.Duration // deadline of each connection
	wg    sync.WaitGroup

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
}

// Serve listens on TCP addr inside in; each connection may last limit.
func Serve(in Place, addr string, limit time.Duration) (*Server, error) {
	l, err := Listen(in, "tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{l: l, limit: limit, conns: make(map[net.Conn]struct{})}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.l.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// EMFILE and the like: back off instead of spinning.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.handle(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// Close stops the server and its connections and waits for them.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.l.Close()
	s.wg.Wait()
}

func (s *Server) handle(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(s.limit))
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return
	}
	switch b[0] {
	case modePeer:
		peer := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
		io.WriteString(c, peer.String()+"\n")
	case modeRequest:
		c.Write(b[:])
	case modeEcho:
		for range WarmupPings + maxPings + 1 {
			if _, err := c.Write(b[:]); err != nil {
				return
			}
			if _, err := io.ReadFull(c, b[:]); err != nil {
				return
			}
		}
	case modeSink:
		sink(c)
	}
}

// sink counts what arrives until EOF and replies with the count and the
// time from the first byte to EOF: the rate the receiver saw.
func sink(c net.Conn) {
	buf := make([]byte, streamBuf)
	start := time.Now()
	var n int64
	for n <= maxStreamBytes {
		m, err := c.Read(buf)
		n += int64(m)
		if err == io.EOF {
			break
		}
		if err != nil {
			return
		}
	}
	var res [16]byte
	binary.BigEndian.PutUint64(res[:8], uint64(n))
	binary.BigEndian.PutUint64(res[8:], uint64(time.Since(start)))
	c.Write(res[:])
}

// UDPServer answers every datagram with the address it came from, until
// Close.
type UDPServer struct {
	c    net.PacketConn
	done chan struct{}
}

// ServeUDP listens on UDP addr inside in.
func ServeUDP(in Place, addr string) (*UDPServer, error) {
	var c net.PacketConn
	err := in.Do(func() error {
		var err error
		c, err = net.ListenPacket("udp", addr)
		return err
	})
	if err != nil {
		return nil, err
	}
	s := &UDPServer{c: c, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		buf := make([]byte, 2048)
		for {
			_, from, err := c.ReadFrom(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			peer := from.(*net.UDPAddr).AddrPort().Addr().Unmap()
			c.WriteTo([]byte(peer.String()+"\n"), from)
		}
	}()
	return s, nil
}

// Close stops the server and waits for it.
func (s *UDPServer) Close() {
	s.c.Close()
	<-s.done
}
