package wire

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestRPC(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			c, s := sessionPair(t, tr, Config{}, Config{})
			release := make(chan struct{})
			served := make(chan error, 1)
			go func() {
				st, err := s.Accept(context.Background())
				if err != nil {
					served <- err
					return
				}
				served <- ServeRPC(context.Background(), st, func(ctx context.Context, req []byte) ([]byte, error) {
					switch {
					case bytes.Equal(req, []byte("fail")):
						return nil, errors.New("handler says no")
					case bytes.Equal(req, []byte("slow")):
						select {
						case <-release:
						case <-ctx.Done():
						}
						return []byte("late"), nil
					}
					return bytes.ToUpper(req), nil
				}, 8)
			}()
			st, err := c.Open(ctxT(t), "rpc")
			if err != nil {
				t.Fatal(err)
			}
			caller := NewCaller(st)

			// Many concurrent calls, each matched to its own answer; one of
			// them is large enough to be fragmented.
			var wg sync.WaitGroup
			for i := 0; i < 50; i++ {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					req := []byte(fmt.Sprintf("request-%d", i))
					if i == 7 {
						req = bytes.Repeat([]byte("x"), 300<<10)
					}
					resp, err := caller.Call(ctxT(t), req)
					if err != nil || !bytes.Equal(resp, bytes.ToUpper(req)) {
						t.Errorf("call %d: %d bytes, %v", i, len(resp), err)
					}
				}(i)
			}
			wg.Wait()

			var ce *CallError
			if _, err := caller.Call(ctxT(t), []byte("fail")); !errors.As(err, &ce) || ce.Message != "handler says no" {
				t.Errorf("failing call = %v", err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			if _, err := caller.Call(ctx, []byte("slow")); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("slow call = %v, want deadline exceeded", err)
			}
			close(release) // its late answer must be dropped quietly
			if resp, err := caller.Call(ctxT(t), []byte("after")); err != nil || string(resp) != "AFTER" {
				t.Errorf("call after a timeout = %q, %v", resp, err)
			}
			st.CloseWrite()
			if err := <-served; err != nil {
				t.Errorf("ServeRPC = %v", err)
			}
			caller.Close()
			if _, err := caller.Call(ctxT(t), []byte("x")); !errors.Is(err, ErrCallerClosed) {
				t.Errorf("call after Close = %v", err)
			}
		})
	}
}
