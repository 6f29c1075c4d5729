package api_test

import (
	"context"
	"fmt"
	"log"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/usernat/usernat/internal/api"
)

// table is a Backend that keeps forwards in a slice.
type table struct{ fwds []api.HostFwd }

func (t *table) AddHostFwd(f api.HostFwd) (int, error) {
	f.ID = len(t.fwds) + 1
	t.fwds = append(t.fwds, f)
	return f.ID, nil
}

func (t *table) ListHostFwd() ([]api.HostFwd, error) { return t.fwds, nil }

func (t *table) RemoveHostFwd(id int) error { return fmt.Errorf("cannot remove %d", id) }

func Example() {
	dir, _ := os.MkdirTemp("", "api")
	defer os.RemoveAll(dir)
	srv, err := api.Listen(filepath.Join(dir, "usernat.sock"), &table{}, api.ServerConfig{})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()

	c := &api.Client{Path: srv.Path()}
	ctx := context.Background()
	id, err := c.AddHostFwd(ctx, api.HostFwd{Proto: "tcp", HostPort: 8080,
		GuestAddr: netip.MustParseAddr("172.17.0.4"), GuestPort: 80})
	fmt.Println(id, err)
	list, _ := c.ListHostFwd(ctx)
	fmt.Printf("%+v\n", list[0])
	fmt.Println(c.RemoveHostFwd(ctx, 1))
	_, err = c.ConntrackList(ctx) // table is no api.Inspector
	fmt.Println(err)
	// Output:
	// 1 <nil>
	// {ID:1 Proto:tcp HostAddr:0.0.0.0 HostPort:8080 HostPortEnd:0 GuestAddr:172.17.0.4 GuestPort:80 GuestPortEnd:0}
	// cannot remove 1
	// bad request: unknown command "conntrack_list"
}
