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

func ExampleIdleProbe() {
	backend, _ := net.Listen("tcp", "127.0.0.1:0")
	defer backend.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := backend.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	conn, err := net.Dial("tcp", backend.Addr().String())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()
	var p netx.IdleProbe
	p.Init(conn)
	server := <-accepted
	// ... a request and its response; the connection goes idle ...
	fmt.Println("reusable:", p.Reusable())
	server.Close() // the backend closes the idle connection
	for p.Reusable() {
		time.Sleep(time.Millisecond) // the FIN is on its way
	}
	fmt.Println("reusable after the backend closed it:", p.Reusable())
	// Output:
	// reusable: true
	// reusable after the backend closed it: false
}
