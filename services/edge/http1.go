package edge

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-net/switchboard/pkg/balance"
	"github.com/switchboard-net/switchboard/pkg/netx"
)

// The HTTP/1.1 fast path: one goroutine per client connection, heads
// parsed into reused buffers, upstream connections pooled per backend
// with their buffers, bodies copied through the bufio buffers. HTTP/2
// (TLS ALPN "h2" and h2c prior knowledge) is handed to net/http.

// Connection states for draining (accept.go).
const (
	stIdle   int32 = iota // between requests
	stActive              // serving a request
	stClosed              // taken by drain, or no longer the proxy's
	stNew                 // accepted, first request not begun
)

type h1conn struct {
	p       *proxy
	c       net.Conn
	br      *bufio.Reader
	bw      *bufio.Writer
	ip      []byte // client IP text
	ipAddr  netip.Addr
	tls     bool
	state   atomic.Int32
	req     head
	resp    head
	host    []byte // normalised host of the current request
	scratch []byte
	trace   *traceState
	dl      deadlines

	// The current request's pipeline state (pipeline.go) and tries
	// (try.go); the first try is made on this goroutine with these,
	// allocating nothing.
	x       exchange
	att     attempt
	fwdBuf  []byte // forwarding header values being written (under headMu)
	fw      fwdReq
	firstUC *upConn          // the first try's connection, adopted by runTries
	headMu  sync.Mutex       // serialises tries writing request heads (scratch)
	ops     *tryOps[*upConn] // made once, for runTries
}

var h1pool = sync.Pool{New: func() any {
	return &h1conn{br: bufio.NewReaderSize(nil, 8<<10), bw: bufio.NewWriterSize(nil, 8<<10)}
}}

// serveConn runs the keep-alive loop of one client connection.
func (p *proxy) serveConn(c net.Conn, isTLS bool) {
	h := h1pool.Get().(*h1conn)
	h.p, h.c, h.tls = p, c, isTLS
	h.br.Reset(c)
	h.bw.Reset(c)
	h.dl.reset(c)
	h.ip = h.ip[:0]
	h.ipAddr = netip.Addr{}
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		h.ipAddr = ap.Addr().Unmap()
		h.ip = h.ipAddr.AppendTo(h.ip)
	}
	h.state.Store(stNew)
	p.track(h)
	handedOff := false
	defer func() {
		p.untrack(h)
		if !handedOff {
			c.Close()
		}
		h.c = nil
		h.br.Reset(nil)
		h.bw.Reset(nil)
		h1pool.Put(h)
	}()
	for {
		if !h.waitRequest() {
			return
		}
		keep, handed := h.serveOne()
		if handed {
			handedOff = true
			return
		}
		if !keep || p.draining.Load() {
			return
		}
		h.state.Store(stIdle)
	}
}

// waitRequest waits for the first byte of the next request, then moves
// the connection to active unless drain took it first. A fresh connection
// has the header timeout from its accept for its whole first head, so one
// that never sends a byte is closed then (silently, as nginx and HAProxy
// do); between requests the idle timeout applies until the first byte,
// and the header timeout from there. Drain's marks are read after the
// deadline is armed, so its wake-up (which follows its mark) is never
// overwritten; a fresh connection is served even while draining
// (accept.go).
func (h *h1conn) waitRequest() bool {
	fresh := h.state.Load() == stNew
	if h.br.Buffered() == 0 {
		if fresh {
			h.dl.readExact(time.Now().Add(h.p.opt.ReadHeaderTimeout))
		} else {
			h.dl.read(time.Now(), h.p.opt.IdleTimeout)
		}
		switch st := h.state.Load(); {
		case st == stClosed:
			return false
		case st == stNew && h.p.acc.stopped.Load():
			h.dl.read(time.Now(), freshGrace)
		}
		if _, err := h.br.Peek(1); err != nil {
			return false
		}
	}
	if !h.state.CompareAndSwap(stIdle, stActive) && !h.state.CompareAndSwap(stNew, stActive) {
		return false
	}
	// A head that arrived whole needs no header timer; one arriving in
	// pieces must complete within the header timeout (slow clients).
	if b, _ := h.br.Peek(h.br.Buffered()); !fresh && !bytes.Contains(b, crlfcrlf) {
		h.dl.readExact(time.Now().Add(h.p.opt.ReadHeaderTimeout))
	}
	return true
}

// serveOne handles one request. keep reports whether the connection may
// carry another; handed that it now belongs to someone else.
func (h *h1conn) serveOne() (keep, handed bool) {
	p := h.p
	start := time.Now()
	req := &h.req
	if err := req.readHead(h.br, p.opt.MaxHeaderBytes); err != nil {
		switch {
		case errors.Is(err, errHeadTooLarge):
			h.writeError(431, "request header fields too large\n", true)
		case errors.Is(err, io.EOF):
		case isTimeout(err):
			h.writeError(408, "timed out reading the request header\n", true)
		default:
			h.writeError(400, "malformed request\n", true)
		}
		return false, false
	}
	if err := req.parse(true); err != nil {
		h.writeError(400, "malformed request\n", true)
		return false, false
	}
	if string(req.l3.of(req.buf)) == "HTTP/2.0" {
		if string(req.l1.of(req.buf)) == "PRI" && string(req.l2.of(req.buf)) == "*" && p.fallback != nil {
			// h2c with prior knowledge: replay what was read to net/http.
			h.handOff()
			return false, true
		}
		h.writeError(505, "HTTP version not supported\n", true)
		return false, false
	}
	http10 := req.buf[req.l3.e-1] == '0'
	keep = !req.connClose && (!http10 || req.connKeepAlive) && !p.draining.Load()
	// Transfer-Encoding in an HTTP/1.0 request is faulty framing (RFC 9112
	// §6.1), as is any coding but a lone chunked or both framings at once.
	if req.teOther || (req.chunked && (req.contentLength >= 0 || http10)) {
		h.writeError(400, "bad request framing\n", true)
		return false, false
	}
	hostHdr, hasHost := req.getKind(hkHost)
	target := req.l2.of(req.buf)
	path := target
	if len(target) > 0 && target[0] != '/' {
		// absolute-form (http://host/path) or authority/asterisk form.
		if i := indexAfterScheme(target); i > 0 {
			j := i
			for j < len(target) && target[j] != '/' && target[j] != '?' {
				j++
			}
			hostHdr, hasHost = target[i:j], true
			if len(hostHdr) == 0 || indexByte(hostHdr, '@') >= 0 {
				h.writeError(400, "bad request target\n", true)
				return false, false
			}
			// The target's authority replaces the Host header (RFC 9112
			// §3.2.2): the request is routed and forwarded by it.
			req.setHost(span{req.l2.s + int32(i), req.l2.s + int32(j)})
			path = target[j:]
			if len(path) == 0 {
				path = slash
			}
		} else if string(req.l1.of(req.buf)) != "OPTIONS" || string(target) != "*" {
			h.writeError(400, "bad request target\n", true)
			return false, false
		}
	}
	if !hasHost && !http10 {
		h.writeError(400, "missing Host header\n", true)
		return false, false
	}
	if n := countKind(req, hkHost); n > 1 {
		h.writeError(400, "more than one Host header\n", true)
		return false, false
	}
	h.host = append(h.host[:0], hostHdr...)
	h.host = normHost(h.host)

	if p.limiter != nil && !p.limiter.allow(h.ipAddr, start) {
		p.met.limited.Inc()
		h.discardBody()
		h.writeError(429, "rate limit exceeded\n", !keep)
		return keep && h.bodyDone(), false
	}

	if ws := p.wireWS; ws != nil && req.connUpgrade && ws.wsUpgrade(path, h.tls) {
		// A wire session over WebSocket: net/http runs the upgrade.
		h.handOffTo(ws.ln)
		return false, true
	}
	rt := p.matchRoute(h.host, path, req.get, nil)
	if rt == nil {
		h.discardBody()
		h.writeError(404, "no route for "+string(h.host)+string(path)+"\n", !keep)
		p.logAccess(h, start, 404, 0, nil, "")
		return keep && h.bodyDone(), false
	}
	x := &h.x
	x.start, x.rt, x.code, x.n, x.backend = start, rt, 0, 0, ""
	x.tries.firstByte = time.Time{}
	h.fw = fwdReq{rt: rt, path: path, hostHdr: hostHdr, http10: http10, clientKeep: keep}
	keepConn, handed := h.forward()
	h.endSpan(x.code, x.backend)
	if handed {
		return false, true
	}
	p.observe(x)
	p.logAccess(h, start, x.code, x.n, rt, x.backend)
	return keep && keepConn, false
}

var (
	slash    = []byte("/")
	crlfcrlf = []byte("\r\n\r\n")
)

func countKind(h *head, k uint8) int {
	n := 0
	for i := range h.hdrs {
		if h.hdrs[i].kind == k {
			n++
		}
	}
	return n
}

func indexAfterScheme(t []byte) int {
	for _, s := range []string{"http://", "https://"} {
		if len(t) > len(s) && eqFold(t[:len(s)], s) {
			return len(s)
		}
	}
	return -1
}

// bodyDone reports whether the request body has been consumed, so the
// connection is at a message boundary.
func (h *h1conn) bodyDone() bool { return h.req.contentLength <= 0 && !h.req.chunked }

// discardBody reads and drops a small request body so the connection can
// stay open; larger bodies make the connection close instead.
func (h *h1conn) discardBody() {
	if n := h.req.contentLength; n > 0 && n <= 64<<10 {
		if _, err := h.br.Discard(int(n)); err == nil {
			h.req.contentLength = 0
		}
	}
}

// fwdReq is the current request as every try needs it to send it: the
// fast path's part of the pipeline's per-request state (exchange).
type fwdReq struct {
	rt                          *route
	path, hostHdr               []byte
	http10, clientKeep, upgrade bool
	hasBody                     bool
}

// answeredError says the edge already answered the client while sending
// the request (the client failed mid-body: 400, or left: 499).
type answeredError struct{ code int }

func (e *answeredError) Error() string { return "the client failed: " + strconv.Itoa(e.code) }

// forward sends the request to a backend of rt and relays the response,
// recording the outcome in h.x. The first try runs here, allocating
// nothing; a try that does not simply get an answer hands the request to
// runTries (try.go).
func (h *h1conn) forward() (keep, handed bool) {
	p := h.p
	req := &h.req
	x := &h.x
	f := &h.fw
	rt := f.rt
	svc := rt.svc
	f.hasBody = req.contentLength > 0 || req.chunked
	f.upgrade = req.connUpgrade && countKind(req, hkUpgrade) > 0

	var info balance.PickInfo
	if svc.set.Load().Config().Policy == balance.ConsistentHashName {
		info.Hash, info.HasHash = h.hashKey(svc)
	}
	t := &x.tries
	sel, b, err := p.startTries(t, rt, info, p.rules(rt, isIdempotent(req.l1.of(req.buf)) && !f.hasBody && !f.upgrade), x.start)
	if err != nil {
		code, msg := pickFailure(svc.name, err)
		h.discardBody()
		h.writeError(code, msg+"\n", !f.clientKeep)
		x.code = code
		return h.bodyDone(), false
	}
	a := &h.att
	a.reset()
	t.begin(a, sel, b)
	uc, err := h.sendFirst(a)
	if err == nil {
		err = h.awaitFirst(uc, a)
		if err == errTryTimeout && !t.rules.safe {
			// Counted, but an unsafe request is never resent: wait on.
			t.timeout(a)
			err = h.awaitRest(uc, a)
		}
	}
	switch {
	case err == nil:
		t.answer(a)
		h.gotFirst(uc, a)
	case (err == errTryTimeout || err == errLeft) && t.rules.safe:
		h.firstUC = uc
		uc, a, err = runTries(p.hardStop, t, h.tryOps(), a, adoptFirst, nil)
	default:
		if uc != nil {
			uc.c.Close()
		}
		t.end(a, endOf(err))
		uc, a, err = runTries(p.hardStop, t, h.tryOps(), nil, afterFailed, err)
	}
	h.firstUC = nil
	if err != nil {
		x.backend = t.tried[min(t.n, maxTries)-1].id
		var ae *answeredError
		if errors.As(err, &ae) {
			x.code = ae.code
			return false, false
		}
		code, msg := edgeAnswer(svc.name, err)
		h.writeError(code, msg+"\n", true)
		x.code = code
		return false, false
	}
	res := h.relay(uc, a)
	e := endAnswered
	if res.failed {
		e = endFailed
	}
	x.backend = a.b.id
	t.end(a, e)
	if res.handed {
		x.code, x.n = 101, res.n
		return false, true
	}
	if res.sent {
		x.code, x.n = res.code, res.n
		return res.keep, false
	}
	h.writeError(res.errCode, res.errMsg, true)
	x.code = res.errCode
	return false, false
}

// sendFirst sends the request on a connection to the first try's backend.
// Its errors are an *unsentError (nothing reached the backend), an
// *answeredError, or a failure while sending.
func (h *h1conn) sendFirst(a *attempt) (*upConn, error) {
	t := &h.x.tries
	uc, err := a.b.get(context.Background(), h.p.ups)
	if err != nil {
		return nil, &unsentError{err}
	}
	if t.rules.safe {
		a.b.boardConn(&a.fl, a, uc.c, nil, t.set)
	} else if a.b.left.Load() && !t.set.Panicking() {
		a.fl.evicted.Store(true)
	}
	if a.fl.evicted.Load() {
		a.b.land(&a.fl)
		a.b.put(uc)
		return nil, &unsentError{errLeft}
	}
	if err := h.sendOn(uc, a, false); err != nil {
		a.b.land(&a.fl)
		uc.c.Close()
		return nil, err
	}
	return uc, nil
}

// sendOn writes the request to uc: the head, then the body from the
// client. shared says other tries may write heads at the same time (the
// head is built in the connection's scratch space).
func (h *h1conn) sendOn(uc *upConn, a *attempt, shared bool) error {
	p := h.p
	req := &h.req
	f := &h.fw
	uc.dl.write(time.Now(), p.opt.ResponseHeaderTimeout)
	if shared {
		h.headMu.Lock()
	}
	h.writeUpstreamHead(uc.bw, f.rt, f.path, f.hostHdr, f.upgrade, a.b)
	if shared {
		h.headMu.Unlock()
	}
	if f.hasBody {
		if req.expect100 {
			h.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
			if err := h.flushClient(); err != nil {
				return &answeredError{code: 499}
			}
		}
		dl := &copyDeadlines{src: &h.dl, srcT: p.opt.ClientTimeout, dst: &uc.dl, dstT: p.opt.ResponseHeaderTimeout}
		var cerr error
		if req.chunked {
			cerr = copyChunked(uc.bw, h.br, dl)
		} else {
			cerr = copyN(uc.bw, h.br, req.contentLength, dl)
		}
		req.contentLength, req.chunked = 0, false
		if cerr != nil {
			var we *writeErr
			if errors.As(cerr, &we) {
				return fmt.Errorf("sending the request body: %w", cerr)
			}
			// The client failed mid-body.
			h.writeError(400, bodyErrorText(cerr), true)
			return &answeredError{code: 400}
		}
		// The request's clock starts once its body is sent.
		now := time.Now()
		a.start = now
		h.x.tries.start = now
	}
	if err := uc.bw.Flush(); err != nil {
		return fmt.Errorf("sending the request: %w", err)
	}
	return nil
}

// awaitFirst waits for the first byte of the answer to the first try,
// until its own time or the request's runs out (errTryTimeout,
// errTimeout), its backend leaves (errLeft) or closes (errBackendClosed).
// Deadlines move lazily: the try's by at most an eighth of it.
func (h *h1conn) awaitFirst(uc *upConn, a *attempt) error {
	t := &h.x.tries
	dl, isTry := t.waitUntil(a)
	slack := t.rules.overall / 2
	if isTry {
		slack = t.rules.tryTimeout / 8
	}
	uc.dl.readBy(dl, slack)
	if a.fl.evicted.Load() {
		return errLeft
	}
	if _, err := uc.br.Peek(1); err != nil {
		switch {
		case a.fl.evicted.Load():
			return errLeft
		case isTimeout(err) && isTry:
			return errTryTimeout
		case isTimeout(err):
			return errTimeout
		}
		return errBackendClosed
	}
	return nil
}

// awaitRest waits on after the try's own time ran out, until the
// request's does.
func (h *h1conn) awaitRest(uc *upConn, a *attempt) error {
	uc.dl.readExact(h.x.tries.deadline())
	if _, err := uc.br.Peek(1); err != nil {
		if isTimeout(err) {
			return errTimeout
		}
		return errBackendClosed
	}
	return nil
}

// gotFirst ends the first try's flight once its answer begins; a past
// deadline its backend's leaving may have set meanwhile is undone.
func (h *h1conn) gotFirst(uc *upConn, a *attempt) {
	if !a.fl.linked {
		return
	}
	a.b.land(&a.fl)
	if a.fl.evicted.Load() {
		uc.dl.readExact(h.x.tries.deadline())
	}
}

// tryOps returns the fast path's transport for runTries, made once per
// pooled connection state.
func (h *h1conn) tryOps() *tryOps[*upConn] {
	if h.ops == nil {
		h.ops = &tryOps[*upConn]{do: h.tryAsync, resume: h.resumeAsync, discard: func(uc *upConn) { uc.c.Close() }}
	}
	return h.ops
}

// tryAsync is a try inside runTries, on a goroutine of its own: the same
// steps as the first try's.
func (h *h1conn) tryAsync(ctx context.Context, a *attempt) (*upConn, error) {
	uc, err := a.b.get(ctx, h.p.ups)
	if err != nil {
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		return nil, &unsentError{err}
	}
	if a.fl.evicted.Load() {
		a.b.put(uc)
		return nil, &unsentError{errLeft}
	}
	stop := context.AfterFunc(ctx, func() { uc.c.SetDeadline(aLongTimeAgo) })
	err = h.sendOn(uc, a, true)
	if !h.x.tries.rules.safe {
		a.b.land(&a.fl) // sent: an unsafe request stays where it is
	}
	if err != nil {
		stop()
		uc.c.Close()
		return nil, err
	}
	return h.awaitAsync(ctx, uc, stop)
}

// resumeAsync goes on waiting for the first try's answer inside runTries.
func (h *h1conn) resumeAsync(ctx context.Context, a *attempt) (*upConn, error) {
	uc := h.firstUC
	stop := context.AfterFunc(ctx, func() { uc.c.SetDeadline(aLongTimeAgo) })
	return h.awaitAsync(ctx, uc, stop)
}

// awaitAsync waits for the first byte of an answer on uc until the
// request's time runs out or ctx ends (stop undoes the wake-up on ctx).
func (h *h1conn) awaitAsync(ctx context.Context, uc *upConn, stop func() bool) (*upConn, error) {
	uc.dl.readExact(h.x.tries.deadline())
	_, err := uc.br.Peek(1)
	if !stop() {
		uc.c.Close()
		return nil, context.Cause(ctx)
	}
	if err != nil {
		uc.c.Close()
		if isTimeout(err) {
			return nil, errTimeout
		}
		return nil, errBackendClosed
	}
	return uc, nil
}

// attemptResult is how relaying a try's answer went.
type attemptResult struct {
	sent    bool // a response (or part of one) went to the client
	code    int
	n       int64
	keep    bool // client connection reusable
	failed  bool // counts against the backend
	handed  bool // upgraded: the connections were joined
	errCode int  // nothing went to the client: the edge's answer
	errMsg  string
}

// relay reads the answer whose first byte is on uc and relays it.
func (h *h1conn) relay(uc *upConn, a *attempt) (r attemptResult) {
	p := h.p
	req := &h.req
	f := &h.fw
	b := a.b
	closeUp := true
	defer func() {
		if closeUp {
			uc.c.Close()
		}
	}()
	resp := &h.resp
	for {
		if err := resp.readHead(uc.br, 64<<10); err != nil {
			if isTimeout(err) {
				return attemptResult{failed: true, errCode: 504, errMsg: "gateway timeout: the backend did not answer in time\n"}
			}
			return attemptResult{failed: true, errCode: 502, errMsg: "bad gateway: " + errBackendClosed.Error() + "\n"}
		}
		if err := resp.parse(false); err != nil {
			return attemptResult{failed: true, errCode: 502, errMsg: "bad gateway: malformed response from backend\n"}
		}
		code := atoi3(resp.l2.of(resp.buf))
		if code == 101 && f.upgrade {
			closeUp = false
			return h.tunnel(uc, code)
		}
		if code >= 100 && code < 200 {
			if code == 100 {
				continue // we answered 100-continue ourselves
			}
			h.writeResponseHead(code, false, false, f.http10)
			if err := h.flushClient(); err != nil {
				return attemptResult{sent: true, code: 499}
			}
			continue
		}
		r.code = code
		break
	}
	r.sent = true
	r.failed = r.code >= 500
	method := req.l1.of(req.buf)
	noBody := eqFold(method, "head") || r.code == 204 || r.code == 304
	upKeep := !resp.connClose && resp.buf[resp.l1.e-1] == '1'
	if resp.buf[resp.l1.e-1] == '0' && resp.connKeepAlive {
		upKeep = true
	}
	untilClose := !noBody && !resp.chunked && resp.contentLength < 0
	dechunk := !noBody && resp.chunked && f.http10
	r.keep = f.clientKeep && !untilClose && !dechunk && !p.draining.Load()
	if resp.teOther || (resp.chunked && resp.contentLength >= 0) {
		return attemptResult{failed: true, errCode: 502, errMsg: "bad gateway: bad response framing from backend\n"}
	}
	h.writeResponseHead(r.code, !r.keep, resp.chunked && !noBody && !dechunk, f.http10)
	dl := copyDeadlines{src: &uc.dl, srcT: p.opt.BackendIdleTimeout, dst: &h.dl, dstT: p.opt.ClientTimeout}
	var cerr error
	switch {
	case noBody:
	case dechunk:
		cerr = copyDechunked(h.bw, uc.br)
		upKeep = false
	case resp.chunked:
		cerr = copyChunked(h.bw, uc.br, &dl)
	case resp.contentLength >= 0:
		cerr = copyN(h.bw, uc.br, resp.contentLength, &dl)
		r.n = resp.contentLength
	default:
		cerr = copyN(h.bw, uc.br, -1, &dl)
		upKeep = false
	}
	if cerr != nil {
		r.keep = false
		var we *writeErr
		if !errors.As(cerr, &we) {
			r.failed = true // the backend broke off the body
		}
		return r
	}
	if err := h.flushClient(); err != nil {
		r.keep = false
	}
	if upKeep && uc.br.Buffered() == 0 {
		closeUp = false
		b.put(uc)
	}
	return r
}

// writeUpstreamHead writes the request head for the backend: hop-by-hop
// headers removed, X-Forwarded-* and Forwarded set (their values from
// fwdOrigin, headers.go, as on every protocol).
func (h *h1conn) writeUpstreamHead(w *bufio.Writer, rt *route, path, hostHdr []byte, upgrade bool, b *backend) {
	p := h.p
	req := &h.req
	buf := req.buf
	w.Write(req.l1.of(buf))
	w.WriteByte(' ')
	if rt.strip {
		h.scratch = rt.stripPath(path, h.scratch[:0])
		w.Write(h.scratch)
	} else {
		w.Write(path)
	}
	w.WriteString(" HTTP/1.1\r\n")
	var xff, fwd []byte
	hostWritten := false
	var trace *traceState
	if p.tracer != nil {
		if h.trace == nil {
			h.startSpan(rt)
		}
		trace = h.trace
	}
	for i := range req.hdrs {
		hd := &req.hdrs[i]
		name := hd.name.of(buf)
		val := hd.val.of(buf)
		switch hd.kind {
		case hkXFF:
			xff = appendList(xff, val)
			continue
		case hkForwarded:
			fwd = appendList(fwd, val)
			continue
		case hkXFProto, hkXFHost, hkExpect:
			continue
		case hkTE:
			if containsToken(val, "trailers") {
				w.WriteString("TE: trailers\r\n")
			}
			continue
		case hkHost:
			hostWritten = true
		case hkTraceparent, hkTracestate:
			if trace != nil {
				continue
			}
		}
		if isHopByHop(hd.kind) || (len(req.connTokens) > 0 && req.inConnTokens(name)) {
			continue
		}
		w.Write(name)
		w.WriteString(": ")
		w.Write(val)
		w.WriteString("\r\n")
	}
	if !hostWritten {
		w.WriteString("Host: ")
		if len(hostHdr) > 0 {
			w.Write(hostHdr)
		} else {
			w.WriteString(b.addr)
		}
		w.WriteString("\r\n")
	}
	if upgrade {
		uv, _ := req.getKind(hkUpgrade)
		w.WriteString("Connection: Upgrade\r\nUpgrade: ")
		w.Write(uv)
		w.WriteString("\r\n")
	}
	if req.chunked {
		w.WriteString("Transfer-Encoding: chunked\r\n")
	}
	o := fwdOrigin{ip: h.ip, is6: h.ipAddr.Is6(), host: hostHdr, tls: h.tls}
	w.WriteString("X-Forwarded-For: ")
	h.fwdBuf = o.appendXFF(h.fwdBuf[:0], xff)
	w.Write(h.fwdBuf)
	w.WriteString("\r\nX-Forwarded-Proto: ")
	w.WriteString(o.scheme())
	if len(hostHdr) > 0 {
		w.WriteString("\r\nX-Forwarded-Host: ")
		w.Write(hostHdr)
	}
	w.WriteString("\r\nForwarded: ")
	h.fwdBuf = o.appendForwarded(h.fwdBuf[:0], fwd)
	w.Write(h.fwdBuf)
	w.WriteString("\r\n")
	if trace != nil {
		trace.writeHeaders(w)
	}
	w.WriteString("\r\n")
}

func appendList(dst, v []byte) []byte {
	if len(dst) > 0 {
		dst = append(dst, ", "...)
	}
	return append(dst, v...)
}

// writeResponseHead writes the backend's response head to the client,
// without hop-by-hop headers.
func (h *h1conn) writeResponseHead(code int, closeConn, chunked, http10 bool) {
	resp := &h.resp
	buf := resp.buf
	w := h.bw
	w.WriteString("HTTP/1.1 ")
	w.Write(resp.l2.of(buf))
	w.WriteByte(' ')
	w.Write(resp.l3.of(buf))
	w.WriteString("\r\n")
	for i := range resp.hdrs {
		hd := &resp.hdrs[i]
		if code == 101 && (hd.kind == hkUpgrade) {
			// kept for the switch
		} else if isHopByHop(hd.kind) || (len(resp.connTokens) > 0 && resp.inConnTokens(hd.name.of(buf))) {
			continue
		}
		w.Write(hd.name.of(buf))
		w.WriteString(": ")
		w.Write(hd.val.of(buf))
		w.WriteString("\r\n")
	}
	switch {
	case code == 101:
		w.WriteString("Connection: Upgrade\r\n")
	case closeConn:
		w.WriteString("Connection: close\r\n")
	case http10:
		w.WriteString("Connection: keep-alive\r\n")
	}
	if chunked {
		w.WriteString("Transfer-Encoding: chunked\r\n")
	}
	w.WriteString("\r\n")
}

// tunnel completes a protocol switch: the 101 goes to the client, then the
// two connections are joined until both sides are done.
func (h *h1conn) tunnel(uc *upConn, code int) attemptResult {
	h.writeResponseHead(code, false, false, false)
	// Bytes already read on either side go across first.
	if n := uc.br.Buffered(); n > 0 {
		b, _ := uc.br.Peek(n)
		h.bw.Write(b)
	}
	if err := h.flushClient(); err != nil {
		uc.c.Close()
		return attemptResult{sent: true, code: code}
	}
	if n := h.br.Buffered(); n > 0 {
		b, _ := h.br.Peek(n)
		n, err := uc.c.Write(b)
		uc.b.countJoined(int64(n), 0)
		if err != nil {
			uc.c.Close()
			return attemptResult{sent: true, code: code}
		}
	}
	h.c.SetDeadline(time.Time{})
	uc.c.SetDeadline(time.Time{})
	c := h.c
	p := h.p
	h.state.Store(stClosed)
	p.untrack(h)
	// The join runs on this goroutine after the connection left the pool
	// of tracked keep-alive connections; streams are tracked separately.
	p.streams.Add(1)
	go func() {
		defer p.streams.Done()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		stop := context.AfterFunc(p.hardStop, cancel)
		defer stop()
		sent, recv, _ := netx.Join(ctx, c, uc.c, netx.JoinOptions{IdleTimeout: p.opt.TunnelIdleTimeout})
		uc.b.countJoined(recv, sent) // c is the client's side
	}()
	return attemptResult{sent: true, code: code, handed: true}
}

// handOff passes the connection to the net/http server (h2c).
func (h *h1conn) handOff() { h.handOffTo(h.p.fallback.ln) }

// handOffTo passes the connection, replaying what was read, to the
// net/http server behind ln.
func (h *h1conn) handOffTo(ln *chanListener) {
	pre := append([]byte(nil), h.req.buf...)
	if n := h.br.Buffered(); n > 0 {
		b, _ := h.br.Peek(n)
		pre = append(pre, b...)
	}
	h.c.SetDeadline(time.Time{})
	h.state.Store(stClosed)
	h.p.untrack(h)
	if !ln.push(&replayConn{Conn: h.c, pre: pre}) {
		h.c.Close()
	}
}

// replayConn replays bytes already read before reading the connection.
type replayConn struct {
	net.Conn
	pre []byte
}

func (c *replayConn) Read(b []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(b, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

func (h *h1conn) flushClient() error {
	if h.bw.Buffered() == 0 {
		return nil
	}
	h.dl.write(time.Now(), h.p.opt.ClientTimeout)
	return h.bw.Flush()
}

// writeError sends a short plain-text response generated by the edge.
func (h *h1conn) writeError(code int, body string, closeConn bool) {
	w := h.bw
	w.WriteString("HTTP/1.1 ")
	w.WriteString(strconv.Itoa(code))
	w.WriteByte(' ')
	w.WriteString(statusText(code))
	w.WriteString("\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ")
	w.WriteString(strconv.Itoa(len(body)))
	if closeConn || !h.bodyDone() {
		w.WriteString("\r\nConnection: close")
	}
	w.WriteString("\r\nX-Edge-Error: 1\r\n\r\n")
	w.WriteString(body)
	h.flushClient()
}

func statusText(code int) string {
	switch code {
	case 400:
		return "Bad Request"
	case 404:
		return "Not Found"
	case 408:
		return "Request Timeout"
	case 429:
		return "Too Many Requests"
	case 431:
		return "Request Header Fields Too Large"
	case 499:
		return "Client Closed Request"
	case 502:
		return "Bad Gateway"
	case 503:
		return "Service Unavailable"
	case 504:
		return "Gateway Timeout"
	case 505:
		return "HTTP Version Not Supported"
	}
	return "Error"
}

func atoi3(b []byte) int {
	return int(b[0]-'0')*100 + int(b[1]-'0')*10 + int(b[2]-'0')
}

// isIdempotent reports whether a request method is idempotent (RFC 9110
// §9.2.2): a request with it may be resent.
func isIdempotent(m []byte) bool { return isIdempotentMethod(string(m)) }

func isIdempotentMethod(m string) bool {
	switch m {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	return false
}

func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// hashKey computes the consistent-hash key for the request.
func (h *h1conn) hashKey(svc *upService) (uint64, bool) {
	ho := svc.hashOn.Load()
	switch ho.Source {
	case balance.HashHeader:
		if v, ok := h.req.get(lowerASCII(ho.Name)); ok {
			return balance.HashBytes(v), true
		}
		return 0, false
	case balance.HashCookie:
		if v, ok := h.req.get("cookie"); ok {
			if c, found := cookieValue(v, ho.Name); found {
				return balance.HashBytes(c), true
			}
		}
		return 0, false
	}
	if h.ipAddr.IsValid() {
		return balance.HashAddr(h.ipAddr), true
	}
	return 0, false
}

func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func cookieValue(v []byte, name string) ([]byte, bool) {
	for len(v) > 0 {
		i := indexByte(v, ';')
		part := v
		if i >= 0 {
			part, v = v[:i], v[i+1:]
		} else {
			v = nil
		}
		part = trimOWS(part)
		if eq := indexByte(part, '='); eq > 0 && string(part[:eq]) == name {
			return part[eq+1:], true
		}
	}
	return nil, false
}
