package wire

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// The request/response convention carried on one stream (docs/wire.md,
// "Request/response"): every message is
//
//	kind u8 | request id u64 | body
//
// with kind 0 a request, 1 a response and 2 an error response whose body
// is UTF-8 text. Responses may come back in any order.
const (
	rpcRequest  = 0
	rpcResponse = 1
	rpcError    = 2
	rpcHeader   = 9
)

// CallError is an error response from the remote handler.
type CallError struct {
	Message string
}

func (e *CallError) Error() string { return "wire: remote call failed: " + e.Message }

// ErrCallerClosed is returned by Call after the Caller's stream has ended.
var ErrCallerClosed = errors.New("wire: caller closed")

type callResult struct {
	body []byte
	err  error
}

// Caller sends requests over one stream and matches each response to its
// waiting caller by request id, so many calls share the stream at once.
type Caller struct {
	st *Stream
	// Timeout bounds a Call whose context has no deadline. Default 30s.
	Timeout time.Duration

	mu      sync.Mutex
	pending map[uint64]chan callResult
	nextID  uint64
	err     error
	done    chan struct{}
}

// NewCaller starts reading responses from st; Close stops it.
func NewCaller(st *Stream) *Caller {
	c := &Caller{st: st, Timeout: 30 * time.Second, pending: make(map[uint64]chan callResult), done: make(chan struct{})}
	go c.readLoop()
	return c
}

// Call sends req and waits for its response until ctx is done (or Timeout
// passes when ctx has no deadline). A late response is dropped.
func (c *Caller) Call(ctx context.Context, req []byte) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok && c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	ch := make(chan callResult, 1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, err
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}()
	msg := make([]byte, rpcHeader, rpcHeader+len(req))
	msg[0] = rpcRequest
	binary.BigEndian.PutUint64(msg[1:], id)
	if err := c.st.WriteMessage(append(msg, req...)); err != nil {
		return nil, fmt.Errorf("wire: call %d: %w", id, err)
	}
	select {
	case r := <-ch:
		return r.body, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("wire: call %d: %w", id, ctx.Err())
	}
}

// Close closes the stream and fails the calls still waiting.
func (c *Caller) Close() error {
	err := c.st.Close()
	<-c.done
	return err
}

func (c *Caller) readLoop() {
	defer close(c.done)
	var buf []byte
	var err error
	for {
		buf, err = c.st.ReadMessage(buf[:0])
		if errors.Is(err, ErrMessageTooLarge) {
			continue // its caller times out
		}
		if err != nil {
			break
		}
		if len(buf) < rpcHeader || buf[0] == rpcRequest {
			err = fmt.Errorf("%w: bad response message", ErrMalformed)
			c.st.Reset(CodeProtocol)
			break
		}
		id := binary.BigEndian.Uint64(buf[1:])
		r := callResult{body: append([]byte(nil), buf[rpcHeader:]...)}
		if buf[0] == rpcError {
			r = callResult{err: &CallError{Message: string(buf[rpcHeader:])}}
		}
		c.mu.Lock()
		ch := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		if ch != nil {
			ch <- r
		}
	}
	c.mu.Lock()
	c.err = fmt.Errorf("%w: %w", ErrCallerClosed, err)
	for id, ch := range c.pending {
		ch <- callResult{err: c.err}
		delete(c.pending, id)
	}
	c.mu.Unlock()
}

// Handler answers one request; an error is sent back as a CallError.
type Handler func(ctx context.Context, req []byte) ([]byte, error)

// ServeRPC answers requests arriving on st with h, running up to
// concurrency (default 16) at once, until the peer half-closes the stream
// or ctx is done. It then waits for running handlers, half-closes st and
// returns nil after a clean end.
func ServeRPC(ctx context.Context, st *Stream, h Handler, concurrency int) error {
	if concurrency <= 0 {
		concurrency = 16
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { st.SetReadDeadline(time.Now()) }) //nolint:errcheck // never fails
	defer stop()
	sem := make(chan struct{}, concurrency)
	var wg sync.WaitGroup
	finish := func(err error) error { return finishRPC(ctx, st, &wg, err) }
	for {
		buf, err := st.ReadMessage(nil)
		if errors.Is(err, ErrMessageTooLarge) {
			continue
		}
		if err != nil {
			return finish(err)
		}
		if len(buf) < rpcHeader || buf[0] != rpcRequest {
			st.Reset(CodeProtocol) //nolint:errcheck // the session reports write failures
			return finish(fmt.Errorf("%w: bad request message", ErrMalformed))
		}
		sem <- struct{}{}
		wg.Add(1)
		go func(msg []byte) {
			defer wg.Done()
			defer func() { <-sem }()
			resp, herr := h(ctx, msg[rpcHeader:])
			out := make([]byte, rpcHeader, rpcHeader+len(resp))
			out[0] = rpcResponse
			copy(out[1:], msg[1:rpcHeader])
			if herr != nil {
				out[0] = rpcError
				out = append(out, herr.Error()...)
			} else {
				out = append(out, resp...)
			}
			st.WriteMessage(out) //nolint:errcheck // the caller times out if the stream broke
		}(buf)
	}
}

func finishRPC(ctx context.Context, st *Stream, wg *sync.WaitGroup, err error) error {
	wg.Wait()
	switch {
	case ctx.Err() != nil:
		st.CloseWrite() //nolint:errcheck // best effort
		return ctx.Err()
	case errors.Is(err, io.EOF):
		return st.CloseWrite()
	}
	return err
}
