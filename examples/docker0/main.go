// Command docker0 runs the reference experiment of usernat: Docker's
// network, built in userspace, checked, and shown.
//
//	go run ./examples/docker0     # as root
//
// It re-runs itself inside a private network namespace (unshare --net) and
// builds there, in namespaces of its own and with no kernel NAT anywhere:
//
//	client 192.168.2.104 ──LAN── 192.168.2.116 usernat gateway 172.17.0.1 ──docker0── 172.17.0.4 web (HTTP :80, published as :8080)
//	                                                                                └─ 172.17.0.5 second
//
// Then it makes the classic requests — the client to 192.168.2.116:8080,
// the second container to the web container directly, the web container
// out to the client — prints the packets as captured on the LAN and on the
// bridge, the NAT rules and the conntrack table, checks every expectation,
// and exits 0 only if all held.
package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strings"

	"github.com/usernat/usernat/bridge"
	"github.com/usernat/usernat/internal/netns"
	"github.com/usernat/usernat/internal/topo"
)

const innerEnv = "USERNAT_DOCKER0_INNER"

func main() {
	if os.Getenv(innerEnv) == "" {
		os.Exit(reexec())
	}
	ok, err := run(os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "docker0:", err)
		os.Exit(2)
	}
	if !ok {
		os.Exit(1)
	}
}

// reexec runs this program again inside a private network namespace, so
// nothing it sends can leave the machine.
func reexec() int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "docker0: run as root: it creates network namespaces and TAP devices")
		return 2
	}
	code, err := netns.RunReexec(os.Args[1:], innerEnv+"=1")
	if err != nil {
		fmt.Fprintln(os.Stderr, "docker0: unshare --net:", err)
		return 2
	}
	return code
}

// checks collects the expectations and prints each as it is decided.
type checks struct {
	w      io.Writer
	failed int
}

func (c *checks) expect(ok bool, what string, detail ...any) {
	mark := "ok  "
	if !ok {
		mark = "FAIL"
		c.failed++
	}
	fmt.Fprintf(c.w, "  [%s] %s", mark, what)
	var parts []string
	for _, d := range detail {
		if s := fmt.Sprint(d); s != "" {
			parts = append(parts, s)
		}
	}
	if len(parts) > 0 {
		fmt.Fprintf(c.w, " (%s)", strings.Join(parts, "; "))
	}
	fmt.Fprintln(c.w)
}

func run(w io.Writer) (bool, error) {
	if err := netns.CheckPrivate(); err != nil {
		return false, err
	}
	t, err := topo.New(topo.Config{LAN: true})
	if err != nil {
		return false, fmt.Errorf("building the experiment: %w", err)
	}
	defer t.Close()
	web, second := t.Containers[0], t.Containers[1]
	if _, err := t.Publish("8080:172.17.0.4:80/tcp"); err != nil {
		return false, err
	}

	// Captures: on the LAN, the client's side of the gateway's uplink; on
	// docker0, the web container's port.
	var lanPcap, bridgePcap bytes.Buffer
	lanCap, err := t.LAN.Ports()[0].Capture(&lanPcap, bridge.CaptureConfig{})
	if err != nil {
		return false, err
	}
	webCap, err := web.Port.Capture(&bridgePcap, bridge.CaptureConfig{})
	if err != nil {
		return false, err
	}

	// Servers: the web container's HTTP server answers with the address
	// it sees; so does one in the client, for the outbound test.
	for _, s := range []struct {
		ns   *netns.NS
		addr string
	}{{web.NS, ":80"}, {t.Client, "192.168.2.104:9000"}} {
		stop, err := topo.ServeWho(s.ns, s.addr)
		if err != nil {
			return false, err
		}
		defer stop()
	}

	c := &checks{w: w}
	fmt.Fprintln(w, "usernat docker0: the reference experiment, in userspace")
	fmt.Fprintln(w, "\n1. The client 192.168.2.104 asks http://192.168.2.116:8080/ (published as 172.17.0.4:80)")
	seen, remote, err := topo.Get(t.Client, "http://192.168.2.116:8080/")
	c.expect(err == nil, "the request succeeds", errText(err))
	c.expect(host(seen) == "192.168.2.104", "the container sees the client's real address", "saw "+seen)
	c.expect(remote == "192.168.2.116:8080", "the client only ever talks to 192.168.2.116:8080", "talked to "+remote)
	clientPort := port(seen)

	fmt.Fprintln(w, "\n2. The second container 172.17.0.5 asks http://172.17.0.4/ directly")
	seen2, _, err := topo.Get(second.NS, "http://172.17.0.4/")
	c.expect(err == nil && host(seen2) == "172.17.0.5", "it reaches the web container at L2 with its own address", "saw "+seen2, errText(err))

	fmt.Fprintln(w, "\n3. The web container 172.17.0.4 connects out to the client at 192.168.2.104:9000")
	seen3, _, err := topo.Get(web.NS, "http://192.168.2.104:9000/")
	c.expect(err == nil && host(seen3) == "192.168.2.116", "the client sees it come from 192.168.2.116 (masquerade)", "saw "+seen3, errText(err))

	lanCap.Close()
	webCap.Close()
	lanLines := summarize(lanPcap.Bytes(), clientPort)
	bridgeLines := summarize(bridgePcap.Bytes(), clientPort)
	fmt.Fprintln(w, "\n4. Request 1 as captured on the LAN (before DNAT):")
	printLines(w, lanLines)
	fmt.Fprintln(w, "   and on docker0, at the web container (after DNAT):")
	printLines(w, bridgeLines)
	wantLAN := fmt.Sprintf("192.168.2.104.%s > 192.168.2.116.8080", clientPort)
	wantBridge := fmt.Sprintf("192.168.2.104.%s > 172.17.0.4.80", clientPort)
	c.expect(contains(lanLines, wantLAN) && !containsAny(lanLines, "172.17."), "on the LAN: "+wantLAN+", no container address")
	c.expect(contains(bridgeLines, wantBridge), "on the bridge: "+wantBridge+" — destination rewritten, client source kept")

	fmt.Fprintln(w, "\n5. The NAT rules (iptables -t nat -L -n):")
	var rules strings.Builder
	t.Gateway.WriteRules(&rules)
	fmt.Fprint(w, indent(rules.String()))
	c.expect(strings.Contains(rules.String(), "dpt:8080 to:172.17.0.4:80"), "the DNAT rule of the published port")
	c.expect(strings.Contains(rules.String(), "MASQUERADE") && strings.Contains(rules.String(), "172.17.0.0/16"), "the masquerade rule of the subnet")

	fmt.Fprintln(w, "\n6. The conntrack table (conntrack -L):")
	var ct strings.Builder
	t.Gateway.Table().WriteList(&ct, true)
	fmt.Fprint(w, indent(ct.String()))
	c.expect(strings.Contains(ct.String(), fmt.Sprintf("src=192.168.2.104 dst=192.168.2.116 sport=%s dport=8080", clientPort)) &&
		strings.Contains(ct.String(), fmt.Sprintf("src=172.17.0.4 dst=192.168.2.104 sport=80 dport=%s", clientPort)),
		"the published flow, with its original and reply tuples")
	c.expect(masqueraded.MatchString(ct.String()),
		"the masqueraded flow: from the container to the client's 9000, replied to the host's address")
	c.expect(!strings.Contains(ct.String(), "172.17.0.5"), "no entry for the container-to-container flow")

	fmt.Fprintln(w)
	if c.failed > 0 {
		fmt.Fprintf(w, "%d expectation(s) failed\n", c.failed)
		return false, nil
	}
	fmt.Fprintln(w, "every expectation held")
	return true, nil
}

func host(addrport string) string { h, _, _ := net.SplitHostPort(addrport); return h }
func port(addrport string) string { _, p, _ := net.SplitHostPort(addrport); return p }

// masqueraded matches the conntrack line of request 3: its original tuple
// the container's, to the client's port 9000, its reply from that port to
// the host's address. (Both halves on one line: the published flow's
// reply tuple alone also reads "src=172.17.0.4 dst=192.168.2.104".)
var masqueraded = regexp.MustCompile(`src=172\.17\.0\.4 dst=192\.168\.2\.104 sport=\d+ dport=9000 .*src=192\.168\.2\.104 dst=192\.168\.2\.116 sport=9000 dport=\d+`)

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func contains(lines []string, s string) bool {
	for _, l := range lines {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

func containsAny(lines []string, s string) bool { return contains(lines, s) }

func printLines(w io.Writer, lines []string) {
	if len(lines) == 0 {
		fmt.Fprintln(w, "     (nothing captured)")
	}
	for _, l := range lines {
		fmt.Fprintln(w, "     "+l)
	}
}

func indent(s string) string {
	if s == "" {
		return "   (empty)\n"
	}
	return "   " + strings.ReplaceAll(strings.TrimSuffix(s, "\n"), "\n", "\n   ") + "\n"
}
