package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// Client calls a server on a unix socket, one connection per call.
type Client struct {
	// Path is the socket's path.
	Path string
	// Timeout bounds a whole call when the context has no earlier
	// deadline; 0 means 30 s.
	Timeout time.Duration
	// MaxResponse is the largest response in bytes accepted; 0 means
	// 256 MiB, room for a full conntrack table.
	MaxResponse int64
}

// Call sends execute with args (nil for none) and decodes the "return"
// member of the response into result (nil to ignore it). An error the
// server answered with is an *Error.
func (c *Client) Call(ctx context.Context, execute string, args, result any) error {
	if err := c.call(ctx, execute, args, result); err != nil {
		var ae *Error
		if errors.As(err, &ae) {
			return err
		}
		return fmt.Errorf("api: %s on %s: %w", execute, c.Path, err)
	}
	return nil
}

func (c *Client) call(ctx context.Context, execute string, args, result any) error {
	req := Request{Execute: execute}
	if args != nil {
		b, err := json.Marshal(args)
		if err != nil {
			return err
		}
		req.Arguments = b
	}
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.Path)
	if err != nil {
		return err
	}
	defer conn.Close()
	dl, hasDL := ctx.Deadline()
	conn.SetDeadline(dl)
	// The connection's deadline is the context's, and may pass a moment
	// before the context says so: report the context's error either way,
	// so a caller can tell a timeout from a broken server.
	ctxErr := func(err error) error {
		if hasDL && ctx.Err() == nil && errors.Is(err, os.ErrDeadlineExceeded) {
			<-ctx.Done()
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if _, err := conn.Write(body); err != nil {
		if ctx.Err() == nil && (errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)) {
			// The server answered before reading it all (a request
			// too large, say) and closed: its answer may be waiting.
			var resp Response
			if json.NewDecoder(io.LimitReader(conn, 64<<10)).Decode(&resp) == nil && resp.Error != nil {
				return resp.Error
			}
		}
		return ctxErr(err)
	}
	// Half-close as RootlessKit does: slirp4netns and this package's
	// server answer after one request either way.
	if uc, ok := conn.(*net.UnixConn); ok {
		uc.CloseWrite()
	}
	max := c.MaxResponse
	if max <= 0 {
		max = 256 << 20
	}
	lr := &io.LimitedReader{R: conn, N: max + 1}
	var resp Response
	if err := json.NewDecoder(lr).Decode(&resp); err != nil {
		if lr.N <= 0 {
			return fmt.Errorf("response larger than %d bytes", max)
		}
		if err := ctxErr(err); err == ctx.Err() {
			return err
		}
		return fmt.Errorf("bad response: %w", err)
	}
	if resp.Error != nil {
		return resp.Error
	}
	if resp.Return == nil && resp.Entries != nil { // slirp4netns's list_hostfwd
		resp.Return, _ = json.Marshal(map[string]json.RawMessage{"entries": resp.Entries})
	}
	if resp.Return == nil {
		return errors.New("bad response: neither return nor error")
	}
	if result != nil {
		if err := json.Unmarshal(resp.Return, result); err != nil {
			return fmt.Errorf("bad response: %w", err)
		}
	}
	return nil
}

// AddHostFwd adds a forward and returns its id.
func (c *Client) AddHostFwd(ctx context.Context, f HostFwd) (int, error) {
	f.ID = 0
	var r AddResult
	err := c.Call(ctx, CmdAddHostFwd, f, &r)
	return r.ID, err
}

// ListHostFwd lists the forwards.
func (c *Client) ListHostFwd(ctx context.Context) ([]HostFwd, error) {
	var r ListResult
	err := c.Call(ctx, CmdListHostFwd, nil, &r)
	return r.Entries, err
}

// RemoveHostFwd removes the forward with the id.
func (c *Client) RemoveHostFwd(ctx context.Context, id int) error {
	return c.Call(ctx, CmdRemoveHostFwd, RemoveArgs{ID: id}, nil)
}

// ConntrackList returns the conntrack table as `conntrack -L` lines.
func (c *Client) ConntrackList(ctx context.Context) (string, error) {
	return c.text(ctx, CmdConntrackList)
}

// ConntrackFlush empties the conntrack table and returns how many entries
// it deleted.
func (c *Client) ConntrackFlush(ctx context.Context) (int, error) {
	var r FlushResult
	err := c.Call(ctx, CmdConntrackFlush, nil, &r)
	return r.Deleted, err
}

// NATList returns the NAT rules in the `iptables -t nat -L -n` style.
func (c *Client) NATList(ctx context.Context) (string, error) {
	return c.text(ctx, CmdNATList)
}

// FDBList returns the forwarding database as `bridge fdb show` lines.
func (c *Client) FDBList(ctx context.Context) (string, error) {
	return c.text(ctx, CmdFDBList)
}

// Stats returns the server's counters.
func (c *Client) Stats(ctx context.Context) (map[string]uint64, error) {
	var r StatsResult
	err := c.Call(ctx, CmdStats, nil, &r)
	return r.Counters, err
}

func (c *Client) text(ctx context.Context, cmd string) (string, error) {
	var r TextResult
	err := c.Call(ctx, cmd, nil, &r)
	return r.Text, err
}
