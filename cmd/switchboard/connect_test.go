package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-net/switchboard/pkg/wire"
)

// fakeEdge accepts wire sessions; each stream answers "<service>:" and then
// echoes until the client half-closes.
func fakeEdge(t *testing.T, token string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				s, err := wire.Server(c, wire.Config{Authenticate: func(tok []byte) error {
					if string(tok) != token {
						return io.ErrUnexpectedEOF
					}
					return nil
				}})
				if err != nil {
					return
				}
				defer s.Close()
				for {
					st, err := s.Accept(ctx)
					if err != nil {
						return
					}
					go func() {
						defer st.Close()
						io.WriteString(st, st.Service()+":")
						io.Copy(st, st)
						st.CloseWrite()
					}()
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func TestConnectForwardsStreams(t *testing.T) {
	edgeAddr := fakeEdge(t, "s3cret")
	ready := make(chan string, 1)
	connectReady = func(a string) { ready <- a }
	defer func() { connectReady = nil }()

	ctx, cancel := context.WithCancel(context.Background())
	code := make(chan int, 1)
	var out, errOut bytes.Buffer
	go func() {
		code <- run(ctx, []string{"connect", "orders", "--edge", edgeAddr, "--token", "s3cret"}, &out, &errOut)
	}()
	var local string
	select {
	case local = <-ready:
	case c := <-code:
		t.Fatalf("connect exited %d: %s", c, errOut.String())
	case <-time.After(10 * time.Second):
		t.Fatal("connect did not start")
	}

	// Several connections share one session; each is its own stream.
	for i := 0; i < 3; i++ {
		c, err := net.DialTimeout("tcp", local, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		msg := strings.Repeat("x", 100_000)
		go func() {
			io.WriteString(c, msg)
			c.(*net.TCPConn).CloseWrite()
		}()
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		if want := "orders:" + msg; string(got) != want {
			t.Fatalf("stream %d: got %d bytes, want %d (prefix %q)", i, len(got), len(want), got[:min(len(got), 10)])
		}
	}
	cancel()
	if c := <-code; c != 0 {
		t.Fatalf("connect exited %d after cancel: %s", c, errOut.String())
	}
	if !strings.Contains(out.String(), `-> service "orders"`) {
		t.Errorf("banner: %q", out.String())
	}
}

func TestConnectErrors(t *testing.T) {
	edgeAddr := fakeEdge(t, "right")
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no service", []string{"connect", "--edge", edgeAddr}, 2, "SERVICE"},
		{"no edge", []string{"connect", "orders"}, 2, "--edge"},
		{"bad edge address", []string{"connect", "orders", "--edge", "nohost"}, 2, "--edge"},
		{"wrong token", []string{"connect", "orders", "--edge", edgeAddr, "--token", "wrong"}, 1, "edge"},
		{"nothing listening", []string{"connect", "orders", "--edge", "127.0.0.1:1", "--dial-timeout=2s"}, 1, "127.0.0.1:1"},
		{"unknown command", []string{"nope"}, 2, "unknown command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if c := run(ctx, tt.args, &out, &errOut); c != tt.code || !strings.Contains(errOut.String(), tt.want) {
				t.Fatalf("exit %d, stderr %q; want %d mentioning %q", c, errOut.String(), tt.code, tt.want)
			}
		})
	}
}

func TestHealthCommand(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			io.WriteString(w, "ready\n")
			return
		}
		http.Error(w, "not ready: starting", http.StatusServiceUnavailable)
	}))
	defer ok.Close()
	tests := []struct {
		url  string
		code int
	}{
		{ok.URL + "/readyz", 0},
		{ok.URL + "/other", 1},
		{"http://127.0.0.1:1/readyz", 1},
	}
	for _, tt := range tests {
		var out, errOut bytes.Buffer
		if c := run(context.Background(), []string{"health", tt.url}, &out, &errOut); c != tt.code {
			t.Errorf("health %s = %d (%s), want %d", tt.url, c, errOut.String(), tt.code)
		}
	}
}

func TestDemoServesWithoutRegistry(t *testing.T) {
	h := demoHandler("demo-7")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/x", nil))
	if rec.Code != 200 || rec.Header().Get("X-Demo-Instance") != "demo-7" || !strings.Contains(rec.Body.String(), "hello from demo-7") {
		t.Fatalf("demo answered %d %q", rec.Code, rec.Body.String())
	}
}
