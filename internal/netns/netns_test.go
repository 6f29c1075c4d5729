package netns

import (
	"context"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func TestIntegrationNetNS(t *testing.T) {
	RequirePrivileged(t)
	a, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	self := inode(t, "/proc/self/ns/net")
	var inside uint64
	if err := a.Do(func() error {
		inside = inode(t, "/proc/thread-self/ns/net")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if inside == self || inside != inode(t, a.Path()) || inside == inode(t, b.Path()) {
		t.Fatalf("Do ran in namespace %d; self %d, a %d, b %d", inside, self, inode(t, a.Path()), inode(t, b.Path()))
	}
	if inode(t, "/proc/thread-self/ns/net") != self {
		t.Fatal("caller's thread left in another namespace")
	}

	// A veth pair between the two, with documentation addresses.
	if err := a.AddVeth("va", b, "vb"); err != nil {
		t.Fatal(err)
	}
	addrs := []struct {
		ns  *NS
		dev string
		p   netip.Prefix
	}{
		{a, "va", netip.MustParsePrefix("198.51.100.1/24")},
		{b, "vb", netip.MustParsePrefix("198.51.100.2/24")},
		{a, "va", netip.MustParsePrefix("2001:db8:51::1/64")},
		{b, "vb", netip.MustParsePrefix("2001:db8:51::2/64")},
	}
	for _, x := range addrs {
		if err := x.ns.SetLink(x.dev, 9000); err != nil {
			t.Fatal(err)
		}
		if err := x.ns.AddAddr(x.dev, x.p); err != nil {
			t.Fatal(err)
		}
	}
	out, err := a.Run(context.Background(), "ip", "-o", "link", "show", "va")
	if err != nil || !strings.Contains(string(out), "mtu 9000") {
		t.Fatalf("ip link show va: %v %s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, dst := range []string{"198.51.100.2", "2001:db8:51::2"} {
		if _, err := a.Run(ctx, "ping", "-c", "1", "-W", "5", dst); err != nil {
			t.Fatal(err)
		}
	}

	// Sockets made inside keep their namespace.
	l, err := b.Listen("tcp", "[2001:db8:51::2]:7")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan string, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			done <- err.Error()
			return
		}
		defer c.Close()
		msg, _ := io.ReadAll(c)
		done <- string(msg)
	}()
	c, err := a.Dial(ctx, "tcp", "[2001:db8:51::2]:7")
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("hello"))
	c.Close()
	if got := <-done; got != "hello" {
		t.Fatalf("received %q", got)
	}

	// An invalid namespace is an error, not a run in the current one.
	if _, err := (&NS{fd: -1}).Run(ctx, "true"); err == nil {
		t.Error("Run in a closed namespace succeeded")
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
