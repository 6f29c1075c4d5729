package topo

import (
	"context"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/usernat/usernat/internal/netns"
)

// ServeWho runs an HTTP server on addr inside ns whose answer to every
// request is the client address it saw: what a container sees of a NAT.
// stop closes it.
func ServeWho(ns *netns.NS, addr string) (stop func() error, err error) {
	ln, err := ns.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.RemoteAddr)
	})}
	go srv.Serve(ln)
	return srv.Close, nil
}

// Get fetches url from inside ns, over a connection of its own, within
// 10 s, and returns the body and the address the connection went to: what
// a client sees of a NAT.
func Get(ns *netns.NS, url string) (body, remote string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := ns.Dial(ctx, network, addr)
		if err == nil {
			remote = c.RemoteAddr().String()
		}
		return c, err
	}}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return "", "", err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return "", remote, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), remote, err
}
