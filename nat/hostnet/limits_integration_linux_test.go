package hostnet_test

import (
	"net"
	"testing"
	"time"

	"github.com/usernat/usernat/nat/hostnet"
)

// An echo flow whose ICMP socket cannot be made (the process is out of
// descriptors: EMFILE) drops the echo and counts it; once descriptors
// are free, the next echo is answered.
func TestIntegrationPingEMFILECounted(t *testing.T) {
	e := newEnv(t, envConfig{ping: true})
	pc, err := e.ctr.ListenPacket("ip4:icmp", "172.17.0.4")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	dst := &net.IPAddr{IP: net.IPv4(198, 51, 100, 2)}
	echo := func(seq byte) []byte {
		b := []byte{8, 0, 0, 0, 0x55, 0x55, 0, seq, 'p'}
		s := ^icmpSum(b)
		b[2], b[3] = byte(s>>8), byte(s)
		return b
	}
	drops := func() uint64 { return hostnet.DropCount(e.up) }
	before := drops()
	restore := hostnet.ExhaustFDs(t)
	pc.WriteTo(echo(1), dst)
	// Until the echo has crossed the TAP and the bridge to the uplink,
	// and its flow could not be opened.
	waitFor(5*time.Second, func() bool { return drops()-before >= 1 })
	restore()
	if n := e.up.Flows(); n != 0 {
		t.Errorf("%d flows after EMFILE, want none", n)
	}
	if got := drops() - before; got != 1 {
		t.Errorf("echo dropped for EMFILE counted %d times in drop_* counters, want 1 (%v)", got, e.up.Counters())
	}
	pc.WriteTo(echo(2), dst)
	buf := make([]byte, 1500)
	deadline := time.Now().Add(3 * time.Second)
	for {
		pc.SetReadDeadline(deadline)
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("echo once descriptors are free: no reply: %v (%v)", err, e.up.Counters())
		}
		if n >= 8 && buf[0] == 0 && buf[4] == 0x55 && buf[7] == 2 {
			break
		}
	}
}
