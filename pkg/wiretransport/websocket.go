package wiretransport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/coder/websocket"
)

// The WebSocket transport: one WebSocket connection carries one wire
// session as a byte stream in binary messages (each message is whatever
// the sender flushed; message boundaries mean nothing). The opening
// handshake offers the subprotocol ALPN; the wire HELLO follows inside.

// dialWebSocket opens a WebSocket to u (ws:// or wss://), through the
// HTTP proxy that proxy picks, and returns it as a net.Conn.
func dialWebSocket(ctx context.Context, u string, tc *tls.Config, proxy func(*http.Request) (*url.URL, error), dial func(context.Context, string, string) (net.Conn, error)) (net.Conn, error) {
	if proxy == nil {
		proxy = http.ProxyFromEnvironment
	}
	tr := &http.Transport{
		Proxy:                  proxy,
		DialContext:            dial,
		TLSClientConfig:        tc,
		TLSHandshakeTimeout:    10 * time.Second,
		ResponseHeaderTimeout:  10 * time.Second,
		MaxResponseHeaderBytes: 64 << 10,
		// One connection per session: nothing to keep idle.
		DisableKeepAlives: true,
	}
	ws, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{
		HTTPClient:   &http.Client{Transport: tr},
		Subprotocols: []string{ALPN},
	})
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("websocket: %s: %w", resp.Status, err)
		}
		return nil, fmt.Errorf("websocket: %w", err)
	}
	return newWSConn(ws, nil), nil
}

// wsConn is a WebSocket as a net.Conn whose Close never waits for the
// peer: the wire session's GOAWAY already says goodbye, so the WebSocket
// close handshake (up to 10 s in coder/websocket) is skipped.
type wsConn struct {
	net.Conn
	ws     *websocket.Conn
	remote net.Addr
}

func newWSConn(ws *websocket.Conn, remote net.Addr) *wsConn {
	return &wsConn{Conn: websocket.NetConn(context.Background(), ws, websocket.MessageBinary), ws: ws, remote: remote}
}

func (c *wsConn) Close() error {
	c.ws.CloseNow() //nolint:errcheck // Close below reports
	err := c.Conn.Close()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

func (c *wsConn) RemoteAddr() net.Addr {
	if c.remote != nil {
		return c.remote
	}
	return c.Conn.RemoteAddr()
}

// WebSocketHandler upgrades requests to WebSockets and hands each as a
// net.Conn to serve, which runs the wire session (wire.Server) and
// returns when it ends. A request that is not a WebSocket upgrade gets
// 426 Upgrade Required. remote, if not nil, gives the client's address
// (for a connection handed over from another server); else the request's
// RemoteAddr is used.
func WebSocketHandler(serve func(c net.Conn, r *http.Request)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
			Subprotocols: []string{ALPN},
			// Browsers are not clients of the tunnel; non-browser clients
			// send no Origin, and a cross-origin page gets 403.
		})
		if err != nil {
			return // Accept answered the client
		}
		var remote net.Addr
		if ap, err := net.ResolveTCPAddr("tcp", r.RemoteAddr); err == nil {
			remote = ap
		}
		serve(newWSConn(ws, remote), r)
	})
}
