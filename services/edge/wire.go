package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/switchboard-net/switchboard/pkg/balance"
	"github.com/switchboard-net/switchboard/pkg/netx"
	"github.com/switchboard-net/switchboard/pkg/service"
	"github.com/switchboard-net/switchboard/pkg/wire"
)

// wireServer accepts wire sessions; each stream a client opens names a
// service and is tunnelled to one of its endpoints. Flow control is end
// to end: the stream's window only opens as the backend takes the bytes.
type wireServer struct {
	e    *Edge
	ln   net.Listener
	tls  *tls.Config
	mu   sync.Mutex
	sess map[*wire.Session]struct{}
	done bool
	wg   sync.WaitGroup
}

func (e *Edge) startWire(rt *service.Runtime, addr string, tc *tls.Config) (*wireServer, error) {
	ln, err := rt.Listen("wire", addr)
	if err != nil {
		return nil, err
	}
	w := &wireServer{e: e, ln: ln, tls: tc, sess: map[*wire.Session]struct{}{}}
	rt.Go("wire", w.serve)
	return w, nil
}

func (w *wireServer) serve(ctx context.Context) error {
	for {
		c, err := w.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return nil
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if w.tls != nil {
			c = tls.Server(c, w.tls)
		}
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			w.session(c)
		}()
	}
}

func (w *wireServer) session(c net.Conn) {
	s, err := wire.Server(c, wire.Config{Authenticate: w.authenticate})
	if err != nil {
		c.Close()
		return
	}
	w.mu.Lock()
	if w.done {
		w.mu.Unlock()
		s.Close()
		return
	}
	w.sess[s] = struct{}{}
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		delete(w.sess, s)
		w.mu.Unlock()
		s.Close()
	}()
	var streams sync.WaitGroup
	defer streams.Wait()
	for {
		st, err := s.Accept(context.Background())
		if err != nil {
			return
		}
		streams.Add(1)
		go func() {
			defer streams.Done()
			w.stream(st)
		}()
	}
}

func (w *wireServer) stream(st *wire.Stream) {
	w.e.met.wireStreams.Inc()
	svc := w.e.ups.lookup(st.Service())
	if svc == nil {
		st.ResetWithReason(wire.CodeNoSuchService, "no service "+st.Service())
		return
	}
	up, sel, b, err := dialService(context.Background(), svc, balance.PickInfo{}, w.e.ups.dialer, 1+w.e.cfg.HTTP.Retries, w.e.proxy.rep)
	if err != nil {
		st.ResetWithReason(wire.CodeUnavailable, "no healthy backend for "+st.Service())
		return
	}
	defer b.active.Add(-1)
	start := time.Now()
	netx.Join(context.Background(), st, up, netx.JoinOptions{IdleTimeout: time.Hour})
	sel.Done(balance.Success, time.Since(start))
}

// drain sends GOAWAY on every session and waits for their streams.
func (w *wireServer) drain(ctx context.Context) error {
	w.ln.Close()
	w.mu.Lock()
	w.done = true
	ss := make([]*wire.Session, 0, len(w.sess))
	for s := range w.sess {
		ss = append(ss, s)
	}
	w.mu.Unlock()
	var wg sync.WaitGroup
	errs := make([]error, len(ss))
	for i, s := range ss {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = s.Shutdown(ctx) }()
	}
	wg.Wait()
	return errors.Join(errs...)
}
