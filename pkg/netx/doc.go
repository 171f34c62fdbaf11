// Package netx is what Switchboard's services share for sockets: dialing
// with deadlines and keep-alive, socket options, a listener with graceful
// shutdown, a bounded pool of idle connections, and a bidirectional copy
// that keeps the kernel's zero-copy path and half-closes correctly.
//
// # Dialing
//
// A Dialer bounds every dial in time (Timeout, default 10 s) even when the
// context has no deadline, sets TCP keep-alive, and applies SocketOptions:
//
//	d := &netx.Dialer{Timeout: 2 * time.Second}
//	c, err := d.DialContext(ctx, "tcp", "10.0.0.7:8080")
//
// # Socket options
//
// SocketOptions sets SO_RCVBUF/SO_SNDBUF before connect or listen, can
// re-enable Nagle's algorithm (Go disables it by default) and sets
// SO_REUSEPORT on listeners. The zero value keeps the defaults.
//
// # Listening and graceful shutdown
//
// Listen (or NewListener around any net.Listener) returns a Listener that
// tracks the connections it accepts, can bound how many are open at once
// (MaxConns), and shuts down in two steps:
//
//	l, err := netx.Listen(ctx, "tcp", ":7900", netx.ListenOptions{MaxConns: 10000})
//	go l.Serve(func(ctx context.Context, c net.Conn) { ... })
//	...
//	err = l.Shutdown(drainCtx) // stop accepting, wait, then force-close
//
// The connections it accepts wrap *net.TCPConn but forward ReadFrom,
// WriteTo, CloseWrite and CloseRead, so io.Copy between them and Join
// still use splice(2). Unwrap returns the *net.TCPConn beneath.
//
// # Handing listening sockets to a successor
//
// A server restarts without refusing a connection by starting its
// successor with duplicates of its listening sockets: one socket and one
// accept queue stay open across both processes (unlike SO_REUSEPORT, whose
// per-process queues lose their waiting connections when a process
// closes). The old process collects its sockets in a Handoff and starts the
// successor; the successor takes them back by name and address with
// Inherit and reports readiness; the old process then closes its copies
// and drains:
//
//	var h netx.Handoff
//	h.Add(netx.Socket{Name: "http", Network: "tcp", Addr: ":8080"}, ln.(*net.TCPListener))
//	s, err := h.Start(exec.Command(exe, os.Args[1:]...))
//	err = s.Ready(ctx) // then close ln and drain
//
//	// in the successor:
//	in, err := netx.Inherit(os.LookupEnv)
//	ln, err := in.Listener("http", "tcp", ":8080") // nil: bind it yourself
//	in.Ready()
//
// # Reusing idle connections
//
// A proxy that keeps connections to a backend open between requests
// checks each one just before reuse with an IdleProbe: a non-blocking
// MSG_PEEK finds a connection the peer has closed or reset while it sat
// idle, or one holding bytes nobody asked for, so the next request goes
// on a fresh connection instead of failing or reading someone else's
// answer. The check allocates nothing.
//
//	var p netx.IdleProbe
//	p.Init(conn) // once, after dialing
//	...
//	if !p.Reusable() { conn.Close(); /* dial again */ }
//
// # Joining two connections
//
// Join copies both directions between two connections, as a TCP proxy
// does. It calls io.Copy on the connections themselves, so between two
// *net.TCPConn the kernel moves the bytes with splice(2) and no user-space
// buffer. When one side finishes sending, Join half-closes the other
// (CloseWrite) and keeps copying the reverse direction; when both are done
// it closes both and returns the byte counts for metrics (JoinCounters
// gives live counts for long-lived connections). An idle timeout and
// context cancellation end it early.
//
//	up, down, err := netx.Join(ctx, clientConn, backendConn, netx.JoinOptions{IdleTimeout: 5 * time.Minute})
package netx
