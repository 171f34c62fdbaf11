package wire_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"

	"github.com/switchboard-net/switchboard/pkg/wire"
)

// A server accepts streams and refuses unknown services; a client opens a
// stream by service name and uses it as a net.Conn.
func Example() {
	clientConn, serverConn := net.Pipe()
	ctx := context.Background()

	go func() {
		srv, err := wire.Server(serverConn, wire.Config{})
		if err != nil {
			return
		}
		defer srv.Close()
		for {
			st, err := srv.Accept(ctx)
			if err != nil {
				return
			}
			if st.Service() != "echo" {
				st.ResetWithReason(wire.CodeNoSuchService, "no such service: "+st.Service())
				continue
			}
			go func() {
				defer st.Close()
				io.Copy(st, st)
				st.CloseWrite()
			}()
		}
	}()

	sess, err := wire.Client(clientConn, wire.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer sess.Close()

	st, _ := sess.Open(ctx, "echo")
	st.Write([]byte("hello"))
	st.CloseWrite()
	got, _ := io.ReadAll(st)
	fmt.Printf("%s\n", got)

	st, _ = sess.Open(ctx, "nothing")
	_, err = st.Read(make([]byte, 1))
	fmt.Println(wire.CodeOf(err))
	// Output:
	// hello
	// NO_SUCH_SERVICE
}

// Frames can be encoded and decoded without a session.
func ExampleReadFrame() {
	var buf bytes.Buffer
	buf.Write(wire.AppendFrame(nil, wire.FrameOpen, 0, 1, []byte("echo")))
	f, err := wire.ReadFrame(bufio.NewReader(&buf), wire.DefaultMaxFrameSize, nil)
	fmt.Println(f.Header.Type(), f.Header.StreamID(), string(f.Payload), err)
	// Output: OPEN 1 echo <nil>
}
