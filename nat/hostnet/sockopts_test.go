package hostnet

import (
	"context"
	"net"
	"testing"
)

// Every socket an acceptor hands a splice has the options of sockOpts:
// inherited from the listening socket, as Linux's are, or given one by
// one when the first accepted socket shows they were not (a listener
// without them stands for a kernel that does not pass them on).
func TestAcceptorSockOpts(t *testing.T) {
	for _, given := range []bool{true, false} {
		var lc net.ListenConfig
		lc.SetMultipathTCP(false)
		l, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		a := &acceptor{}
		if given {
			rc, _ := l.(*net.TCPListener).SyscallConn()
			rc.Control(func(fd uintptr) { a.peek, err = sockOpts(int(fd), false) })
			if err != nil {
				t.Fatal(err)
			}
		} else {
			a.peek = peekOffs.Load() > 0
		}
		for i := range 3 {
			_, s := loopbackPair(t, l)
			var peek, has bool
			rawConn(s).Control(func(fd uintptr) {
				peek, err = a.optsOf(int(fd))
				has = hasSockOpts(int(fd), peek)
			})
			if err != nil || !has || peek != a.peek {
				t.Errorf("listener given the options %v, accepted socket %d: has them %v, peeks from its offset %v (want %v), %v", given, i, has, peek, a.peek, err)
			}
			want := int8(-1)
			if given {
				want = 1
			}
			if a.inherit != want {
				t.Errorf("listener given the options %v: inherit %d after the first accepted socket, want %d", given, a.inherit, want)
			}
		}
	}
}
