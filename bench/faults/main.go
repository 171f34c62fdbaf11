// Command faults-driver is the measuring half of scripts/faults.sh: it puts
// steady load on the compose stack while the script injects faults, keeps
// the books, and prints one table at the end.
//
// What it does, the whole time it runs:
//
//   - HTTP: open-loop GETs of -edge at -rate per second (each request is
//     started at its scheduled time, whether or not earlier ones finished, so
//     a stall shows as latency, not as fewer requests). Requests use a pool
//     of keep-alive connections: -conns of them are opened at start and kept
//     idle between requests; an idle one is reused oldest-first (FIFO, so all
//     of them carry traffic), and when none is idle a new one is dialled (it
//     joins the pool afterwards while the pool holds fewer than -conns).
//     Every -fresh-every'th request instead goes on a new connection of its
//     own with "Connection: close". A request has one deadline, -timeout
//     from its scheduled start, its retry included. It is retried once, on a
//     newly dialled connection, exactly when Go's net/http Transport (and
//     browsers) retry an idempotent request: it was sent on a reused
//     keep-alive connection and the connection failed before any byte of the
//     response arrived (RFC 9112 §9.3.1). Nothing else is retried: not a
//     timeout, not a 5xx answer, not a failure on a new connection. A
//     request fails on a transport error, the deadline, or a status other
//     than 200.
//   - Registrations: one Register every -register-every through the
//     registry (mutual TLS, the operator token), spread over -services
//     services; one attempt each with a -register-timeout deadline, recorded
//     as accepted when it returns OK.
//   - Read-back: every -poll, GetService of each of those services; an
//     accepted registration missing from a successful read that started
//     after it was accepted is "hidden" at that read, and "lost" when it is
//     still missing from the final read.
//   - Backend view: every 250 ms, GetService of -backend-service with
//     unhealthy instances, to time how soon a backend that passes again is
//     back in the edge's rotation (seen from which app answers); with
//     -balancer and -edge-api also whether the balancer picks one and which
//     backends the edge has in rotation (ListBackends).
//   - The machine's load average, every second: on a shared machine it
//     tells a starved stack from a broken one.
//
// Every HTTP request runs in a goroutine of its own; its deadline and
// a bound on requests in flight (-max-inflight) keep that bounded. With
// -timeline the driver also writes one line per second of the run.
//
// The script drives it over a loopback HTTP control port (-ctl; the address
// goes to -ctl-file): POST /begin?name=&kind=&param= when it injects a
// fault, /end when the fault is over (the container is back), /note and
// /fail to annotate the current fault, GET /recovered to learn whether the
// traffic since /end has had a clean -clean window, and POST /stop for the
// final read and the table. The exit status is 1 when a judged aim failed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"
)

var (
	edgeURL      = flag.String("edge", "http://127.0.0.1:8080/", "URL of the GETs (through the edge)")
	rate         = flag.Float64("rate", 500, "HTTP requests per second, open loop")
	keepConns    = flag.Int("conns", 32, "keep-alive connections opened at start and kept in the pool")
	freshEvery   = flag.Int("fresh-every", 10, "every Nth request goes on a new connection of its own (0: none)")
	reqTimeout   = flag.Duration("timeout", 2*time.Second, "deadline of one HTTP request from its scheduled start, its retry included")
	maxInflight  = flag.Int("max-inflight", 4000, "HTTP requests in flight at most; beyond, a request fails at once")
	registryAddr = flag.String("registry", "127.0.0.1:7100", "registry gRPC address (mutual TLS)")
	secretsDir   = flag.String("secrets", "deploy/.secrets", "directory with ca.pem, client.pem, client-key.pem and operator.token")
	regEvery     = flag.Duration("register-every", 200*time.Millisecond, "one Register this often")
	regTimeout   = flag.Duration("register-timeout", 3*time.Second, "deadline of one Register")
	regPrefix    = flag.String("service", "faults", "registrations go to services PREFIX-00, PREFIX-01, ...")
	regServices  = flag.Int("services", 16, "how many services the registrations are spread over")
	pollEvery    = flag.Duration("poll", time.Second, "read every registration back this often")
	backendSvc   = flag.String("backend-service", "demo", "the service behind the edge (its health is followed)")
	balancerAddr = flag.String("balancer", "", "balancer gRPC address: also follow whether it picks a backend (optional)")
	edgeAPIAddr  = flag.String("edge-api", "", "edge gRPC address: also follow its healthy backends (optional)")
	ctlAddr      = flag.String("ctl", "127.0.0.1:0", "control listener (loopback)")
	ctlFile      = flag.String("ctl-file", "", "write the control listener's address here")
	cleanWin     = flag.Duration("clean", 5*time.Second, "recovered: this long without a failed request or Register")
	recoverBound = flag.Duration("recover-bound", 30*time.Second, "hard aim: recovered within this long after a fault ends")
	judge        = flag.String("judge", "all", "aims that decide pass/fail: hard (recovery, lost registrations, script failures) or all")
	settle       = flag.Duration("settle", 5*time.Second, "wait this long after /stop before the final read")
	title        = flag.String("title", "", "first line of the table")
	timeline     = flag.String("timeline", "", "write a per-second account of the run to this file")
)

func main() {
	flag.Parse()
	code, err := drive()
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults-driver:", err)
		os.Exit(2)
	}
	os.Exit(code)
}

func drive() (int, error) {
	if *rate <= 0 || *keepConns < 1 || *reqTimeout <= 0 || *regServices < 1 || *regEvery <= 0 {
		return 0, errors.New("need -rate > 0, -conns ≥ 1, -timeout > 0, -services ≥ 1, -register-every > 0")
	}
	if *judge != "hard" && *judge != "all" {
		return 0, fmt.Errorf("-judge %q: want hard or all", *judge)
	}
	r := newRun()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	ld, err := newLoader(r, *edgeURL)
	if err != nil {
		return 0, err
	}
	reg, err := newRegistrar(r)
	if err != nil {
		return 0, err
	}
	defer reg.close()

	ln, err := net.Listen("tcp", *ctlAddr)
	if err != nil {
		return 0, err
	}
	stop := make(chan struct{})
	srv := &http.Server{Handler: r.control(stop), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	if err := ld.warm(); err != nil {
		return 0, err
	}
	// Everything before the script's first fault is the baseline.
	r.begin("baseline (no fault)", "none", "")
	var wg sync.WaitGroup
	for _, f := range []func(context.Context){ld.run, reg.registerLoop, reg.pollLoop, reg.healthLoop, r.loadLoop} {
		wg.Go(func() { f(ctx) })
	}
	if *ctlFile != "" {
		if err := os.WriteFile(*ctlFile, []byte(ln.Addr().String()+"\n"), 0o600); err != nil {
			return 0, err
		}
	}
	fmt.Fprintf(os.Stderr, "faults-driver: %.0f req/s to %s (%d keep-alive connections, every %dth request on a new one), a Register every %v; control on %s\n",
		*rate, *edgeURL, *keepConns, *freshEvery, *regEvery, ln.Addr())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case <-stop:
	case s := <-sig:
		fmt.Fprintf(os.Stderr, "faults-driver: %v: the table so far\n", s)
	}
	r.closePhase()
	time.Sleep(*settle)
	cancel()
	wg.Wait()
	final := reg.finalRead()
	rep := r.report(final)
	rep.print(os.Stdout)
	if *timeline != "" {
		if f, err := os.Create(*timeline); err == nil {
			r.writeTimeline(f)
			f.Close()
		}
	}
	if rep.failed > 0 {
		return 1, nil
	}
	return 0, nil
}

// loadLoop samples the machine's load average every second: on a shared
// machine it tells a starved stack from a broken one.
func (r *run) loadLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		b, err := os.ReadFile("/proc/loadavg")
		if err != nil {
			return
		}
		var l float64
		if _, err := fmt.Sscan(string(b), &l); err != nil {
			return
		}
		r.mu.Lock()
		r.loads = append(r.loads, loadSample{at: r.now(), load: l})
		r.mu.Unlock()
	}
}

// control serves the script's calls.
func (r *run) control(stop chan<- struct{}) http.Handler {
	var once sync.Once
	mux := http.NewServeMux()
	mux.HandleFunc("POST /begin", func(w http.ResponseWriter, q *http.Request) {
		name, kind := q.FormValue("name"), q.FormValue("kind")
		if name == "" || !validKind(kind) {
			http.Error(w, "need name and kind (none, kill, consul-kill, consul-recreate, pause, edge-restart)", http.StatusBadRequest)
			return
		}
		r.begin(name, kind, q.FormValue("param"))
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("POST /end", func(w http.ResponseWriter, _ *http.Request) {
		if err := r.end(); err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("POST /note", func(w http.ResponseWriter, q *http.Request) {
		r.annotate(q.FormValue("text"), false)
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("POST /fail", func(w http.ResponseWriter, q *http.Request) {
		r.annotate(q.FormValue("text"), true)
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /recovered", func(w http.ResponseWriter, _ *http.Request) {
		ok, after, detail := r.recovered()
		if !ok {
			w.WriteHeader(http.StatusAccepted) // not yet
			fmt.Fprintln(w, detail)
			return
		}
		fmt.Fprintln(w, strconv.FormatFloat(after.Seconds(), 'f', 1, 64))
	})
	mux.HandleFunc("POST /stop", func(w http.ResponseWriter, _ *http.Request) {
		once.Do(func() { close(stop) })
		fmt.Fprintln(w, "stopping")
	})
	return mux
}
