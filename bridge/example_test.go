package bridge_test

import (
	"fmt"
	"os"

	"github.com/usernat/usernat/bridge"
)

// Two containers on one bridge, each behind a pipe: the first one's
// broadcast reaches the second, whose reply goes straight back, and the
// bridge has learned where both are.
func Example() {
	br, err := bridge.New(bridge.Config{Name: "docker0"})
	if err != nil {
		panic(err)
	}
	defer br.Close()

	c1 := bridge.MustParseMAC("02:42:ac:11:00:03")
	c2 := bridge.MustParseMAC("02:42:ac:11:00:04")
	veth1, eth1 := bridge.NewPipe(bridge.PipeConfig{})
	veth2, eth2 := bridge.NewPipe(bridge.PipeConfig{})
	defer eth1.Close()
	defer eth2.Close()
	if _, err := br.AddPort(veth1, bridge.PortConfig{Name: "veth1"}); err != nil {
		panic(err)
	}
	if _, err := br.AddPort(veth2, bridge.PortConfig{Name: "veth2"}); err != nil {
		panic(err)
	}

	frame := func(dst, src bridge.MAC) []byte {
		f := make([]byte, 60) // EtherType 0 and a zero payload
		copy(f[0:6], dst[:])
		copy(f[6:12], src[:])
		return f
	}
	buf := make([]byte, 1518)

	eth1.WriteFrame(frame(bridge.Broadcast, c1))
	n, _ := eth2.ReadFrame(buf)
	fmt.Printf("eth2 got %d bytes from %v\n", n, bridge.MAC(buf[6:12]))

	eth2.WriteFrame(frame(c1, c2))
	n, _ = eth1.ReadFrame(buf)
	fmt.Printf("eth1 got %d bytes from %v\n", n, bridge.MAC(buf[6:12]))

	br.WriteFDB(os.Stdout)
	// Output:
	// eth2 got 60 bytes from 02:42:ac:11:00:03
	// eth1 got 60 bytes from 02:42:ac:11:00:04
	// 02:42:ac:11:00:03 dev veth1 master docker0
	// 02:42:ac:11:00:04 dev veth2 master docker0
}
