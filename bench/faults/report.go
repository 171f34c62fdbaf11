package main

import (
	"fmt"
	"io"
	"maps"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
)

// aim is one aim of a fault with the figure it is judged on.
type aim struct {
	text, figure string
	met, hard    bool
}

// row is one fault's line of the table.
type row struct {
	p                      *phase
	reqs, failOld, failNew int
	errFrom, errTo         time.Duration // from the fault's start; errFrom < 0: no failure
	p99                    time.Duration
	recovery               time.Duration // < 0: not within the phase
	regSent, regOK         int
	regPresent             int // of regOK, in the final read (-1: no final read)
	hidden, lost           int
	aims                   []aim
	load                   float64 // highest 1-minute load average in the span
	failed                 bool
	details                []string
}

type report struct {
	rows           []*row
	total          row
	final          bool
	failed, passed int
	regUnacked     int // not acknowledged (error or timeout) but present at the end
}

// report analyses every record. final is the last read (nil: it failed).
func (r *run) report(final *readRound) *report {
	r.mu.Lock()
	defer r.mu.Unlock()
	rep := &report{final: final != nil}
	n := len(r.phases)
	next := func(k int) time.Duration {
		if k+1 < n {
			return r.phases[k+1].begin
		}
		return r.closed
	}
	phaseOf := func(t time.Duration) int {
		return sort.Search(n, func(k int) bool { return r.phases[k].begin > t }) - 1
	}
	hidden := make([]map[int]bool, n)
	lost := make([]int, n)
	for k := range hidden {
		hidden[k] = map[int]bool{}
	}
	missing := r.registrationFates(final, phaseOf, hidden, lost, rep)
	r.missing = missing

	for k, p := range r.phases {
		w := &row{p: p, errFrom: -1, recovery: -1, hidden: len(hidden[k]), lost: lost[k]}
		lo, hi := p.begin, next(k)
		errKinds := map[string]int{}
		retried, retriedOK := 0, 0
		for i := range r.reqs {
			q := &r.reqs[i]
			if q.at < lo || q.at >= hi || !q.done {
				continue
			}
			w.reqs++
			if q.retried {
				retried++
				if q.ok {
					retriedOK++
				}
			}
			if q.ok {
				continue
			}
			old := !q.fresh && q.connBorn >= 0 && q.connBorn < p.begin
			if old {
				w.failOld++
				errKinds[q.err+" (pre-fault conn)"]++
			} else {
				w.failNew++
				errKinds[q.err+" (new conn)"]++
			}
			if w.errFrom < 0 {
				w.errFrom = q.at - p.begin
			}
			w.errTo = q.at - p.begin
		}
		winEnd := hi
		if p.kind != "none" && p.end >= 0 {
			if t, ok, _ := r.cleanStart(p.end, hi); ok {
				w.recovery = t - p.end
				winEnd = max(t, p.end)
			}
		}
		var lats []time.Duration
		for i := range r.reqs {
			q := &r.reqs[i]
			if q.done && q.at >= lo && q.at < winEnd {
				lats = append(lats, q.lat)
			}
		}
		w.p99 = quantile(lats, 0.99)
		for _, l := range r.loads {
			if l.at >= lo && l.at < hi {
				w.load = max(w.load, l.load)
			}
		}
		regErr := map[string]int{}
		regFrom, regTo := time.Duration(-1), time.Duration(0)
		applied := 0 // failed Registers present at the end
		for i := range r.regs {
			g := &r.regs[i]
			if g.at < lo || g.at >= hi || !g.done {
				continue
			}
			w.regSent++
			if g.ok {
				w.regOK++
				if final != nil && final.present[g.seq] {
					w.regPresent++
				}
			} else {
				regErr[g.err]++
				if final != nil && final.present[g.seq] {
					applied++
				}
				if regFrom < 0 {
					regFrom = g.at - p.begin
				}
				regTo = g.at - p.begin
			}
		}
		if final == nil {
			w.regPresent = -1
		}
		if len(errKinds) > 0 {
			w.details = append(w.details, "failed: "+countList(errKinds))
		}
		if retried > 0 {
			w.details = append(w.details, fmt.Sprintf("retried once (reused connection, nothing received): %d, of which %d succeeded", retried, retriedOK))
		}
		if len(regErr) > 0 {
			w.details = append(w.details, fmt.Sprintf("Register failed: %s (sent %.1f…%.1fs after the start); %d of them present at the end all the same",
				countList(regErr), regFrom.Seconds(), regTo.Seconds(), applied))
		}
		short, most, from, to := 0, 0, time.Duration(-1), time.Duration(0)
		for j, m := range missing {
			if m == 0 || r.reads[j].at < lo || r.reads[j].at >= hi {
				continue
			}
			short++
			most = max(most, m)
			if from < 0 {
				from = r.reads[j].at - p.begin
			}
			to = r.reads[j].at - p.begin
		}
		if short > 0 {
			w.details = append(w.details, fmt.Sprintf("%d reads lacked accepted registrations (at most %d at once), %.1f…%.1fs after the start", short, most, from.Seconds(), to.Seconds()))
		}
		w.details = append(w.details, p.notes...)
		r.judge(w, k, hi)
		rep.rows = append(rep.rows, w)
		if p.kind != "none" {
			if w.failed {
				rep.failed++
			} else {
				rep.passed++
			}
		}
		rep.total.reqs += w.reqs
		rep.total.failOld += w.failOld
		rep.total.failNew += w.failNew
		rep.total.regSent += w.regSent
		rep.total.regOK += w.regOK
		rep.total.regPresent += w.regPresent
	}
	all := map[int]bool{}
	for _, h := range hidden {
		maps.Copy(all, h)
	}
	rep.total.hidden = len(all)
	for _, l := range lost {
		rep.total.lost += l
	}
	return rep
}

// registrationFates counts, per fault, the registrations that went missing
// from a read that began after they were accepted: "lost" when they are
// missing from the final read too (counted in the fault during which they
// went missing for good), "hidden" for every other missing read.
// It returns, per read, how many accepted registrations it lacked.
func (r *run) registrationFates(final *readRound, phaseOf func(time.Duration) int, hidden []map[int]bool, lost []int, rep *report) []int {
	reads := r.reads
	missing := make([]int, len(reads))
	for i := range r.regs {
		g := &r.regs[i]
		if !g.done {
			continue
		}
		if !g.ok {
			if final != nil && final.present[g.seq] {
				rep.regUnacked++
			}
			continue
		}
		acked := g.at + g.lat
		first := sort.Search(len(reads), func(j int) bool { return reads[j].at > acked })
		lastSeen := -1
		for j := first; j < len(reads); j++ {
			if reads[j].present[g.seq] {
				lastSeen = j
			}
		}
		isLost := final != nil && !final.present[g.seq]
		for j := first; j < len(reads); j++ {
			if reads[j].present[g.seq] {
				continue
			}
			missing[j]++
			if isLost && j > lastSeen {
				continue
			}
			if k := phaseOf(reads[j].at); k >= 0 {
				hidden[k][g.seq] = true
			}
		}
		if isLost {
			at := acked
			switch {
			case lastSeen >= 0 && lastSeen+1 < len(reads):
				at = reads[lastSeen+1].at
			case lastSeen < 0 && first < len(reads):
				at = reads[first].at
			case lastSeen >= 0:
				at = final.at
			}
			if k := phaseOf(at); k >= 0 {
				lost[k]++
			}
		}
	}
	return missing
}

// judge sets a row's aims and verdict.
func (r *run) judge(w *row, k int, hi time.Duration) {
	p := w.p
	if p.kind == "none" {
		return
	}
	bound := *recoverBound
	rec := "none within the fault's span"
	if w.recovery >= 0 {
		rec = secs(w.recovery)
	}
	w.aims = append(w.aims,
		aim{text: fmt.Sprintf("recovery ≤ %s", secs(bound)), figure: rec, met: w.recovery >= 0 && w.recovery <= bound, hard: true},
		aim{text: "0 lost", figure: fmt.Sprint(w.lost), met: w.lost == 0, hard: true})
	for _, f := range p.fails {
		w.aims = append(w.aims, aim{text: "script: " + f, figure: "failed", hard: true})
	}
	switch p.kind {
	case "consul-kill", "consul-recreate":
		w.aims = append(w.aims, aim{text: "0 lost, 0 hidden",
			figure: fmt.Sprintf("%d lost, %d hidden", w.lost, w.hidden), met: w.lost == 0 && w.hidden == 0})
	case "pause":
		fails := w.failOld + w.failNew
		w.aims = append(w.aims, aim{text: "0 failed, p99 < 1s",
			figure: fmt.Sprintf("%d failed, p99 %s", fails, dur(w.p99)), met: fails == 0 && w.p99 < time.Second})
		fig, met := r.rotation(p, hi)
		w.aims = append(w.aims, aim{text: "back ≤ 2s after passing", figure: fig, met: met})
	case "edge-restart":
		w.aims = append(w.aims, aim{text: "0 failed on pre-fault conns",
			figure: fmt.Sprint(w.failOld), met: w.failOld == 0})
	}
	for _, a := range w.aims {
		if !a.met && (a.hard || *judge == "all") {
			w.failed = true
		}
	}
}

// rotation: how long after the paused backend passed again (in the
// registry) the edge first sent it a request.
func (r *run) rotation(p *phase, hi time.Duration) (string, bool) {
	b := p.param
	if b == "" || p.end < 0 {
		return "no backend named", false
	}
	ejected := false
	for _, h := range r.health {
		if h.at >= p.begin && h.at <= p.end && h.health[b] != registryv1.HealthStatus_HEALTH_STATUS_PASSING {
			ejected = true
			break
		}
	}
	pass := time.Duration(-1)
	for _, h := range r.health {
		if h.at >= p.end && h.at < hi && h.health[b] == registryv1.HealthStatus_HEALTH_STATUS_PASSING {
			pass = h.at
			break
		}
	}
	back := time.Duration(-1)
	for i := range r.reqs {
		q := &r.reqs[i]
		if q.at >= p.end && q.at < hi && q.ok && q.backend == b {
			back = q.at
			break
		}
	}
	switch {
	case back < 0:
		return fmt.Sprintf("%s got no request after the fault", b), false
	case !ejected || pass < 0:
		// The registry never showed it critical (or never passing again):
		// judge from the fault's end, allowing one check interval (2 s in
		// the compose stack) for the check that passes.
		d := back - p.end
		return fmt.Sprintf("served %s after the fault (registry: %s)", secs(d), map[bool]string{true: "never critical", false: "never passing again"}[!ejected]), d <= 4*time.Second
	}
	d := back - pass
	return fmt.Sprintf("%+.1fs (passing %s after the fault)", d.Seconds(), secs(pass-p.end)), d <= 2*time.Second
}

func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	i := int(float64(len(d)-1) * q)
	return d[i]
}

func countList(m map[string]int) string {
	keys := slices.Collect(maps.Keys(m))
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d× %s", m[k], k))
	}
	return strings.Join(parts, ", ")
}

func secs(d time.Duration) string { return fmt.Sprintf("%.1fs", d.Seconds()) }

func dur(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/1e6)
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}

func (rep *report) print(out io.Writer) {
	head := []string{"fault", "requests", "failed pre/new", "errors (s after start)", "p99 fault", "recovery", "reg ok/sent", "present", "hidden", "lost", "load", "aim → figure", "verdict"}
	var rows [][]string
	for _, w := range rep.rows {
		errs := "-"
		if w.errFrom >= 0 {
			errs = fmt.Sprintf("%.1f…%.1f", w.errFrom.Seconds(), w.errTo.Seconds())
		}
		rec, verdict := "-", "-"
		if w.p.kind != "none" {
			rec = "none"
			if w.recovery >= 0 {
				rec = secs(w.recovery)
			}
			verdict = "pass"
			if w.failed {
				var why []string
				for _, a := range w.aims {
					if !a.met && (a.hard || *judge == "all") {
						why = append(why, a.text)
					}
				}
				verdict = "FAIL: " + strings.Join(why, "; ")
			}
		}
		present := "?"
		if w.regPresent >= 0 {
			present = fmt.Sprintf("%d/%d", w.regPresent, w.regOK)
		}
		var aims []string
		for _, a := range w.aims {
			if a.hard {
				continue // in "recovery", "lost" and the verdict
			}
			mark := "met"
			if !a.met {
				mark = "MISSED"
			}
			aims = append(aims, fmt.Sprintf("%s → %s %s", a.text, a.figure, mark))
		}
		if len(aims) == 0 {
			aims = []string{"-"}
		}
		for i, a := range aims {
			if i == 0 {
				rows = append(rows, []string{w.p.name, fmt.Sprint(w.reqs), fmt.Sprintf("%d/%d", w.failOld, w.failNew), errs, dur(w.p99), rec,
					fmt.Sprintf("%d/%d", w.regOK, w.regSent), present, fmt.Sprint(w.hidden), fmt.Sprint(w.lost), fmt.Sprintf("%.1f", w.load), a, verdict})
			} else {
				rows = append(rows, []string{"", "", "", "", "", "", "", "", "", "", "", a, ""})
			}
		}
	}
	t := rep.total
	present := "?"
	if rep.final {
		present = fmt.Sprintf("%d/%d", t.regPresent, t.regOK)
	}
	rows = append(rows, []string{"whole run", fmt.Sprint(t.reqs), fmt.Sprintf("%d/%d", t.failOld, t.failNew), "", "", "",
		fmt.Sprintf("%d/%d", t.regOK, t.regSent), present, fmt.Sprint(t.hidden), fmt.Sprint(t.lost), "", "", ""})

	width := make([]int, len(head))
	for i, h := range head {
		width[i] = len([]rune(h))
	}
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	line := func(cells []string) {
		var b strings.Builder
		for i, c := range cells {
			if i == len(cells)-1 {
				b.WriteString(c)
				break
			}
			pad := width[i] - len([]rune(c))
			if i >= 1 && i <= 10 { // figures: right-aligned
				b.WriteString(strings.Repeat(" ", pad) + c + "  ")
			} else {
				b.WriteString(c + strings.Repeat(" ", pad) + "  ")
			}
		}
		fmt.Fprintln(out, strings.TrimRight(b.String(), " "))
	}
	if *title != "" {
		fmt.Fprintln(out, *title)
	}
	fmt.Fprintf(out, "load: %.0f GET/s open loop through the edge (%d keep-alive connections, every %dth request on a new connection, %v deadline, one retry per HTTP semantics); a Register every %v (mutual TLS, operator token); read back every %v\n",
		*rate, *keepConns, *freshEvery, *reqTimeout, *regEvery, *pollEvery)
	line(head)
	for _, r := range rows {
		line(r)
	}
	fmt.Fprintln(out, "failed pre/new: failed requests first sent on a keep-alive connection opened before the fault / on a connection opened after it began (or of its own).")
	fmt.Fprintf(out, "p99 fault: over requests from the fault's start to the first %v of clean traffic. recovery: from the fault's end to the start of that window.\n", *cleanWin)
	fmt.Fprintf(out, "load: the machine's highest 1-minute load average during the span (%d cores).\n", runtime.NumCPU())
	fmt.Fprintln(out, "present: accepted registrations of that span in the final read. hidden: accepted registrations (of any span) missing from a read during that span, back later; lost: missing from the final read.")
	fmt.Fprintln(out, "aims (the issue's): 0 lost or hidden registrations after any Consul fault; with one of two backends paused, 0 failed requests and p99 under 1 s;")
	fmt.Fprintln(out, "  docker restart of the edge with 0 failed requests on connections that keep retrying per HTTP semantics; a restarted backend back in rotation within 2 s of passing.")
	if *judge == "hard" {
		fmt.Fprintf(out, "verdict: hard aims only (recovery ≤ %s, 0 lost registrations, the script's own checks); the issue's aims above are figures.\n", secs(*recoverBound))
	} else {
		fmt.Fprintf(out, "verdict: every aim (recovery ≤ %s, 0 lost registrations, the script's own checks, and the issue's aims).\n", secs(*recoverBound))
	}
	if rep.regUnacked > 0 {
		fmt.Fprintf(out, "%d Register calls that failed or timed out were applied anyway (present at the end).\n", rep.regUnacked)
	}
	for _, w := range rep.rows {
		for _, d := range w.details {
			fmt.Fprintf(out, "  %s: %s\n", w.p.name, d)
		}
	}
	fmt.Fprintf(out, "faults: %d passed, %d failed\n", rep.passed, rep.failed)
}

// writeTimeline writes one line per second of the run: requests by outcome
// and by the app that answered, Register calls, and the phase.
func (r *run) writeTimeline(out io.Writer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	type sec struct {
		ok, fail, regOK, regFail int
		errs, backends           map[string]int
		lats                     []time.Duration
		backendView              string // the registry's view of the backend service
		missing                  int    // accepted registrations missing from a read (-1: no read)
	}
	var secs []*sec
	at := func(t time.Duration) *sec {
		i := int(t / time.Second)
		for len(secs) <= i {
			secs = append(secs, &sec{errs: map[string]int{}, backends: map[string]int{}, missing: -1})
		}
		return secs[i]
	}
	for i := range r.reqs {
		q := &r.reqs[i]
		if !q.done {
			continue
		}
		s := at(q.at)
		s.lats = append(s.lats, q.lat)
		if q.ok {
			s.ok++
			s.backends[q.backend]++
		} else {
			s.fail++
			s.errs[q.err]++
		}
	}
	for i := range r.regs {
		g := &r.regs[i]
		if !g.done {
			continue
		}
		if s := at(g.at); g.ok {
			s.regOK++
		} else {
			s.regFail++
		}
	}
	for _, h := range r.health {
		pass := 0
		for _, st := range h.health {
			if st == registryv1.HealthStatus_HEALTH_STATUS_PASSING {
				pass++
			}
		}
		v := fmt.Sprintf("registry %d/%d", pass, len(h.health))
		if h.picked >= 0 {
			v += fmt.Sprintf(" pick %d", h.picked)
		}
		if h.edgeHealthy >= 0 {
			v += fmt.Sprintf(" edge %d", h.edgeHealthy)
			if len(h.edgeOut) > 0 {
				v += " (" + strings.Join(h.edgeOut, ", ") + ")"
			}
		}
		at(h.at).backendView = v
	}
	for j, rd := range r.reads {
		if j < len(r.missing) {
			s := at(rd.at)
			s.missing = max(s.missing, r.missing[j])
		}
	}
	k := -1
	for i, s := range secs {
		t := time.Duration(i) * time.Second
		mark := ""
		for k+1 < len(r.phases) && r.phases[k+1].begin < t+time.Second {
			k++
			mark = " ← " + r.phases[k].name
		}
		if k >= 0 && r.phases[k].end >= t && r.phases[k].end < t+time.Second {
			mark += " ← fault over"
		}
		miss := "-"
		if s.missing >= 0 {
			miss = fmt.Sprint(s.missing)
		}
		fmt.Fprintf(out, "%4ds ok %4d fail %4d p99 %-7s reg %d/%d missing %-4s %s: %-40s %s", i, s.ok, s.fail, dur(quantile(s.lats, 0.99)), s.regOK, s.regOK+s.regFail,
			miss, *backendSvc, s.backendView, countList(s.backends))
		if s.fail > 0 {
			fmt.Fprintf(out, "  failed: %s", countList(s.errs))
		}
		fmt.Fprintln(out, mark)
	}
}
