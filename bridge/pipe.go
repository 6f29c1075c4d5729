package bridge

import (
	"io"
	"net"
	"sync"
)

// PipeConfig configures a Pipe pair. The zero value is ready to use.
type PipeConfig struct {
	// BatchSize is the most frames moved per call; zero means 32.
	BatchSize int
}

// Pipe is one end of an in-memory link, the veth pair of this world: frames
// written to one end are read from the other. It is unbuffered, like
// net.Pipe: a write waits until the peer's reader has copied the frames, so
// memory stays bounded and a pipe never drops. It links tests to a bridge,
// a bridge to the gateway, or two bridges together.
//
// When one end is closed, its own calls return net.ErrClosed, the peer's
// ReadFrames returns io.EOF and the peer's WriteFrames io.ErrClosedPipe.
type Pipe struct {
	batch int

	rd  <-chan [][]byte // frames offered by the peer's writer
	rdn chan<- int      // how many of them this end's reader took
	wr  chan<- [][]byte
	wrn <-chan int

	wrMu sync.Mutex // one writer at a time, so a batch is not interleaved

	once   sync.Once
	done   chan struct{}
	remote <-chan struct{}
}

var _ Port = (*Pipe)(nil)

// NewPipe returns the two ends of a new pipe.
func NewPipe(cfg PipeConfig) (*Pipe, *Pipe) {
	batch := cfg.BatchSize
	if batch <= 0 {
		batch = 32
	}
	ab, ba := make(chan [][]byte), make(chan [][]byte)
	abn, ban := make(chan int), make(chan int)
	a := &Pipe{batch: batch, done: make(chan struct{})}
	b := &Pipe{batch: batch, done: make(chan struct{})}
	a.wr, a.wrn, b.rd, b.rdn = ab, abn, ab, abn
	b.wr, b.wrn, a.rd, a.rdn = ba, ban, ba, ban
	a.remote, b.remote = b.done, a.done
	return a, b
}

// ReadFrames implements Port.
func (p *Pipe) ReadFrames(bufs [][]byte, sizes []int) (int, error) {
	select {
	case <-p.done:
		return 0, net.ErrClosed
	default:
	}
	if len(bufs) == 0 {
		return 0, nil
	}
	select {
	case frames := <-p.rd:
		n := min(len(frames), len(bufs))
		for i := range n {
			sizes[i] = copy(bufs[i], frames[i])
		}
		// The writer waits for this answer before it reuses its buffers.
		p.rdn <- n
		return n, nil
	case <-p.done:
		return 0, net.ErrClosed
	case <-p.remote:
		return 0, io.EOF
	}
}

// WriteFrames implements Port. It returns when the peer has read every
// frame, or when either end is closed.
func (p *Pipe) WriteFrames(bufs [][]byte) (int, error) {
	p.wrMu.Lock()
	defer p.wrMu.Unlock()
	select {
	case <-p.done:
		return 0, net.ErrClosed
	default:
	}
	sent := 0
	for sent < len(bufs) {
		select {
		case p.wr <- bufs[sent:]:
			sent += <-p.wrn
		case <-p.done:
			return sent, net.ErrClosed
		case <-p.remote:
			return sent, io.ErrClosedPipe
		}
	}
	return sent, nil
}

// ReadFrame reads one frame into buf and returns its length: a convenience
// for tests and simple users.
func (p *Pipe) ReadFrame(buf []byte) (int, error) {
	var size [1]int
	_, err := p.ReadFrames([][]byte{buf}, size[:])
	return size[0], err
}

// WriteFrame writes one frame: a convenience for tests and simple users.
func (p *Pipe) WriteFrame(frame []byte) error {
	_, err := p.WriteFrames([][]byte{frame})
	return err
}

// BatchSize implements Port.
func (p *Pipe) BatchSize() int { return p.batch }

// Close implements Port. Closing an end twice is harmless.
func (p *Pipe) Close() error {
	p.once.Do(func() { close(p.done) })
	return nil
}
