package netx_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/switchboard-net/switchboard/pkg/netx"
)

// A TCP proxy: accept on one port, dial the backend, join the two with the
// kernel's zero-copy path, and drain on shutdown.
func ExampleJoin() {
	// A backend that answers once the client has finished sending.
	backend, _ := net.Listen("tcp", "127.0.0.1:0")
	defer backend.Close()
	go func() {
		c, err := backend.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		req, _ := io.ReadAll(c) // ends at the client's half-close
		fmt.Fprintf(c, "got %q", req)
	}()

	ctx := context.Background()
	front, _ := netx.Listen(ctx, "tcp", "127.0.0.1:0", netx.ListenOptions{MaxConns: 100})
	dialer := &netx.Dialer{Timeout: 2 * time.Second}
	counted := make(chan string, 1)
	go front.Serve(func(ctx context.Context, c net.Conn) {
		up, err := dialer.DialContext(ctx, "tcp", backend.Addr().String())
		if err != nil {
			return
		}
		in, out, err := netx.Join(ctx, c, up, netx.JoinOptions{IdleTimeout: time.Minute})
		counted <- fmt.Sprintf("proxied %d bytes up, %d down, err %v", in, out, err)
	})

	client, _ := net.Dial("tcp", front.Addr().String())
	io.Copy(client, strings.NewReader("ping"))
	client.(*net.TCPConn).CloseWrite()
	reply, _ := io.ReadAll(client)
	client.Close()
	fmt.Println(string(reply))
	fmt.Println(<-counted)

	shutdown, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	fmt.Println("shutdown:", front.Shutdown(shutdown))
	// Output:
	// got "ping"
	// proxied 4 bytes up, 10 down, err <nil>
	// shutdown: <nil>
}

func ExamplePool() {
	backend, _ := net.Listen("tcp", "127.0.0.1:0")
	defer backend.Close()
	go func() {
		for {
			c, err := backend.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()

	pool := netx.NewPool(netx.PoolOptions{MaxIdlePerKey: 4, IdleTimeout: 30 * time.Second})
	defer pool.Close()
	ctx := context.Background()
	for range 3 {
		c, err := pool.Get(ctx, backend.Addr().String())
		if err != nil {
			fmt.Println(err)
			return
		}
		// ... write a request, read the response ...
		pool.Put(c)
	}
	s := pool.Stats()
	fmt.Printf("dials %d, reuses %d, idle %d\n", s.Dials, s.Hits, s.Idle)
	// Output: dials 1, reuses 2, idle 1
}
