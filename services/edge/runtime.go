package edge

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/switchboard-net/switchboard/pkg/access"
	"github.com/switchboard-net/switchboard/pkg/service"
)

// The runtime API is a line-based text protocol, in the spirit of
// HAProxy's stats socket: one command per line, the answer follows and
// ends with an empty line. Errors are one line starting with "error: ".

const runtimeHelp = `commands:
  help                                   this text
  show routes                            HTTP routes in match order, TCP/UDP listeners
  show backends [service]                backends with state and counters
  show config                            the live configuration's version, file hash, pending restarts, last reload error
  reload                                 re-read --config and the HTTPS certificates (as SIGHUP does)
  disable backend <service> <id>         stop sending new traffic to a backend
  enable backend <service> <id>          undo disable
  set weight <service> <id> <weight>     override a backend's weight (0 clears)
  quit                                   close the connection
`

func (e *Edge) startRuntime(rt *service.Runtime) error {
	// Check both listeners' settings before opening either.
	var tc *tls.Config
	if a := e.cfg.RuntimeAddr; a != "" {
		tc = rt.ServerTLS(true)
		if err := rt.RequireTLS("runtime API (--runtime-addr)", a, tc != nil); err != nil {
			return err
		}
		if !service.IsLoopback(a) && (tc == nil || tc.ClientAuth != tls.RequireAndVerifyClientCert) {
			return &service.FlagError{Err: fmt.Errorf("refusing to serve the runtime API (--runtime-addr) on %s beyond loopback without client certificates: it takes no tokens, so pass --tls-cert, --tls-key and --tls-ca, or bind a loopback address", a)}
		}
	}
	path, err := runtimeSocketPath(e.cfg, rt.Lookup)
	if err != nil {
		return &service.FlagError{Err: err}
	}
	if path != "" {
		// After a restart, the socket (and its file) the previous process
		// served; a retiring process leaves the file to its successor.
		ln, err := rt.Inherit("runtime", "unix", path)
		if err != nil {
			return fmt.Errorf("--runtime-socket %s: %w", path, err)
		}
		var remove func()
		if ln != nil {
			remove = removeIfSame(path)
		} else {
			var ul *net.UnixListener
			if ul, remove, err = listenPrivateSocket(path); err != nil {
				return fmt.Errorf("--runtime-socket %s: %w", path, err)
			}
			ln = ul
			rt.AddListener("runtime", &net.UnixAddr{Name: path, Net: "unix"}, ul)
		}
		rt.OnShutdown(func(context.Context) error {
			if !rt.Retiring() {
				remove()
			}
			return nil
		})
		rt.Go("runtime-api", func(ctx context.Context) error { return e.serveRuntime(ctx, rt, ln, nil, false) })
	}
	if a := e.cfg.RuntimeAddr; a != "" {
		ln, err := rt.Listen("runtime-tcp", a)
		if err != nil {
			return err
		}
		rt.Go("runtime-api", func(ctx context.Context) error { return e.serveRuntime(ctx, rt, ln, tc, true) })
	}
	return nil
}

// removeIfSame returns a function that removes path if it is still the
// file it is now (no later process has replaced it).
func removeIfSame(path string) func() {
	ours, err := os.Lstat(path)
	return func() {
		if fi, lerr := os.Lstat(path); err == nil && lerr == nil && os.SameFile(fi, ours) {
			os.Remove(path)
		}
	}
}

// serveRuntime serves the runtime API on ln, over TLS when tc is set. On
// the Unix socket the file's mode is the guard; on TCP (tcp set), with an
// ACL file, each command needs the permission of its gRPC twin, held by
// the client certificate's name (anonymous callers get the ACL's default).
func (e *Edge) serveRuntime(ctx context.Context, rt *service.Runtime, ln net.Listener, tc *tls.Config, tcp bool) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			closeOnStop := context.AfterFunc(ctx, func() { c.Close() })
			defer closeOnStop()
			var cs *tls.ConnectionState
			if tc != nil {
				t := tls.Server(c, tc)
				c = t
				hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				err := t.HandshakeContext(hctx)
				cancel()
				if err != nil {
					return
				}
				st := t.ConnectionState()
				cs = &st
			}
			br := bufio.NewReaderSize(io.LimitReader(c, 1<<20), 4096)
			for {
				c.SetDeadline(time.Now().Add(5 * time.Minute))
				line, err := br.ReadString('\n')
				if strings.TrimSpace(line) != "" {
					var caller *access.Caller
					if tcp && rt.ACL() != nil {
						var ierr error
						if caller, ierr = rt.Identify("", cs); ierr != nil {
							return
						}
					}
					out, quit := e.runCommand(line, caller)
					if _, werr := io.WriteString(c, out+"\n"); werr != nil || quit {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

// commandNeed is the permission a runtime command needs: its gRPC twin's.
func commandNeed(verb string) (access.Need, bool) {
	switch verb {
	case "show":
		return needShow, true
	case "disable", "enable", "set", "reload":
		return needOperate, true
	}
	return access.Need{}, false
}

// runCommand executes one runtime command line for caller (nil: anyone
// may run anything) and returns its answer.
func (e *Edge) runCommand(line string, caller *access.Caller) (out string, quit bool) {
	f := strings.Fields(line)
	if len(f) == 0 {
		return "", false
	}
	if need, ok := commandNeed(f[0]); ok && !caller.Allows(need) {
		return fmt.Sprintf("error: %s lacks %s", caller, need), false
	}
	var b strings.Builder
	switch {
	case f[0] == "help":
		return runtimeHelp, false
	case f[0] == "quit":
		return "", true
	case f[0] == "show" && len(f) >= 2 && f[1] == "routes":
		if len(f) > 2 {
			return "error: show routes takes no arguments", false
		}
		fmt.Fprintf(&b, "%-8s %-24s %-16s %-6s %-24s %s\n", "proto", "host", "path_prefix", "strip", "service", "source")
		for _, r := range e.listRoutes() {
			host := r.Host
			if host == "" {
				host = "*"
			}
			fmt.Fprintf(&b, "%-8s %-24s %-16s %-6v %-24s %s\n", r.Protocol, host, r.PathPrefix, r.Strip, r.Service, r.Source)
		}
		return b.String(), false
	case f[0] == "show" && len(f) >= 2 && f[1] == "config":
		if len(f) > 2 {
			return "error: show config takes no arguments", false
		}
		return e.showConfig(), false
	case f[0] == "reload":
		if len(f) > 1 {
			return "error: reload takes no arguments", false
		}
		st, err := e.reloadNow()
		if err != nil {
			return "error: " + err.Error(), false
		}
		out := fmt.Sprintf("ok: version %d sha256 %s", st.version, st.shortSum())
		if len(st.needsRestart) > 0 {
			out += "; needs a restart (SIGUSR2): " + strings.Join(st.needsRestart, ", ")
		}
		return out, false
	case f[0] == "show" && len(f) >= 2 && f[1] == "backends":
		if len(f) > 3 {
			return "error: usage: show backends [service]", false
		}
		svc := ""
		if len(f) == 3 {
			svc = f[2]
			if e.ups.lookup(svc) == nil {
				return fmt.Sprintf("error: unknown service %q", svc), false
			}
		}
		fmt.Fprintf(&b, "%-24s %-24s %-22s %-8s %-8s %-8s %-7s %-8s %-8s %s\n", "service", "id", "address", "weight", "healthy", "disabled", "active", "total", "failures", "breaker")
		for _, x := range e.ups.backends(svc) {
			fmt.Fprintf(&b, "%-24s %-24s %-22s %-8.4g %-8v %-8v %-7d %-8d %-8d %s\n", x.Service, x.ID, x.Addr, x.Weight, x.Healthy, x.Disabled, x.Active, x.Total, x.Failures, x.Breaker)
		}
		return b.String(), false
	case (f[0] == "disable" || f[0] == "enable") && len(f) >= 2 && f[1] == "backend":
		if len(f) != 4 {
			return fmt.Sprintf("error: usage: %s backend <service> <id>", f[0]), false
		}
		dis := f[0] == "disable"
		if _, err := e.ups.setOverride(f[2], f[3], &dis, nil); err != nil {
			return "error: " + err.Error(), false
		}
		return fmt.Sprintf("ok: backend %s/%s %sd", f[2], f[3], f[0]), false
	case f[0] == "set" && len(f) >= 2 && f[1] == "weight":
		if len(f) != 5 {
			return "error: usage: set weight <service> <id> <weight>", false
		}
		w, err := strconv.ParseUint(f[4], 10, 32)
		if err != nil || w > 1_000_000 {
			return fmt.Sprintf("error: weight %q: want an integer 0-1000000", f[4]), false
		}
		w32 := uint32(w)
		if _, err := e.ups.setOverride(f[2], f[3], nil, &w32); err != nil {
			return "error: " + err.Error(), false
		}
		return fmt.Sprintf("ok: backend %s/%s weight %d", f[2], f[3], w), false
	case f[0] == "show" || f[0] == "disable" || f[0] == "enable" || f[0] == "set":
		return fmt.Sprintf("error: unknown %s command %q (try help)", f[0], strings.Join(f, " ")), false
	}
	return fmt.Sprintf("error: unknown command %q (try help)", f[0]), false
}

// RouteInfo is one route for the runtime API.
type RouteInfo struct {
	Protocol, Host, PathPrefix, Service, Source string
	Strip                                       bool
	Headers                                     map[string]string
}

func (e *Edge) listRoutes() []RouteInfo {
	var out []RouteInfo
	for _, r := range e.proxy.routes.Load().all {
		ri := RouteInfo{Protocol: "http", Host: r.host, PathPrefix: r.prefix, Strip: r.strip, Service: r.service, Source: r.source}
		if len(r.headers) > 0 {
			ri.Headers = map[string]string{}
			for _, h := range r.headers {
				ri.Headers[h[0]] = h[1]
			}
		}
		out = append(out, ri)
	}
	for _, t := range e.tcp {
		out = append(out, RouteInfo{Protocol: "tcp", Host: t.ln.Addr().String(), Service: t.svc.name, Source: "config"})
	}
	for _, u := range e.udp {
		out = append(out, RouteInfo{Protocol: "udp", Host: u.pc.LocalAddr().String(), Service: u.svc.name, Source: "config"})
	}
	if w := e.wire; w != nil {
		if w.ln != nil {
			out = append(out, RouteInfo{Protocol: "wire", Host: w.ln.Addr().String(), Service: "*", Source: "registry"})
		}
		if w.quic != nil {
			out = append(out, RouteInfo{Protocol: "wire-quic", Host: w.quic.Addr().String(), Service: "*", Source: "registry"})
		}
		if w.ws != nil {
			out = append(out, RouteInfo{Protocol: "wire-ws", PathPrefix: w.ws.path, Service: "*", Source: "registry"})
		}
	}
	return out
}
