// Command wire-bench measures one stream's throughput over loopback TCP
// side by side: raw TCP, pkg/wire, hashicorp/yamux and xtaci/smux, at 4 KiB
// and 64 KiB application writes, in interleaved rounds (the order rotates
// every round so none always runs first). Every round is printed with its
// ratio to raw TCP measured in the same round, then the medians.
//
// The reader always reads into a 64 KiB buffer. reads/64KiB counts the
// process's read syscalls (/proc/self/io syscr, both ends and both
// directions) per 64 KiB moved, the figure that says how many reads the
// receiver makes per frame. cpu is the process's CPU time (user+system,
// both ends) per MiB moved: on a shared, loaded machine wall-clock rates
// swing with the neighbours, while CPU per byte is what the code costs, so
// both are printed with their ratios to raw TCP.
//
//	go run . [-rounds 3] [-mb 512] [-cpuprofile wire.prof]
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/xtaci/smux"

	"github.com/switchboard-net/switchboard/pkg/wire"
)

var (
	rounds  = flag.Int("rounds", 3, "interleaved rounds")
	mb      = flag.Int("mb", 512, "MiB moved per measurement")
	sizes   = flag.String("sizes", "4096,65536", "application write sizes in bytes")
	only    = flag.String("only", "", "comma-separated subset of raw,wire,yamux,smux")
	cpuProf = flag.String("cpuprofile", "", "write a CPU profile of the pkg/wire measurements to this file")
)

// pair is one connected stream: w is written, r is read.
type pair struct {
	w, r  io.ReadWriteCloser
	close func()
}

type impl struct {
	name string
	dial func() (pair, error)
}

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "wire-bench:", err)
		os.Exit(1)
	}
}

func run() error {
	impls := []impl{{"raw", rawPair}, {"wire", wirePair}, {"yamux", yamuxPair}, {"smux", smuxPair}}
	if *only != "" {
		keep := strings.Split(*only, ",")
		impls = slices.DeleteFunc(impls, func(i impl) bool { return !slices.Contains(keep, i.name) })
	}
	var ws []int
	for _, f := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return fmt.Errorf("bad -sizes entry %q", f)
		}
		ws = append(ws, n)
	}
	var prof *os.File
	if *cpuProf != "" {
		f, err := os.Create(*cpuProf)
		if err != nil {
			return err
		}
		prof = f
		defer f.Close()
	}
	total := int64(*mb) << 20
	// rates[size][impl] collects MB/s per round; reads likewise.
	rates := map[int]map[string][]float64{}
	reads := map[int]map[string][]float64{}
	cpus := map[int]map[string][]float64{}
	for _, w := range ws {
		rates[w], reads[w], cpus[w] = map[string][]float64{}, map[string][]float64{}, map[string][]float64{}
	}
	for r := 0; r < *rounds; r++ {
		order := slices.Clone(impls)
		for i := 0; i < r%len(order); i++ {
			order = append(order[1:], order[0])
		}
		for _, w := range ws {
			line := map[string]float64{}
			rpf := map[string]float64{}
			cpu := map[string]float64{}
			for _, im := range order {
				p, err := im.dial()
				if err != nil {
					return fmt.Errorf("%s: %w", im.name, err)
				}
				if prof != nil && im.name == "wire" {
					pprof.StartCPUProfile(prof) //nolint:errcheck // profile is optional
				}
				before, cpu0 := syscr(), cpuTime()
				d, err := pump(p, w, total)
				after, cpu1 := syscr(), cpuTime()
				if prof != nil && im.name == "wire" {
					pprof.StopCPUProfile()
					prof = nil
				}
				p.close()
				if err != nil {
					return fmt.Errorf("%s %d: %w", im.name, w, err)
				}
				line[im.name] = float64(total) / 1e6 / d.Seconds()
				rpf[im.name] = float64(after-before) / float64(total/(64<<10))
				cpu[im.name] = float64((cpu1 - cpu0).Microseconds()) / float64(total>>20)
				cpus[w][im.name] = append(cpus[w][im.name], cpu[im.name])
				rates[w][im.name] = append(rates[w][im.name], line[im.name])
				reads[w][im.name] = append(reads[w][im.name], rpf[im.name])
			}
			fmt.Printf("round %d  writes %-6s\n", r+1, sizeName(w))
			for _, im := range impls {
				fmt.Printf("    %-6s %6.0f MB/s %5.2fx raw | cpu %5.0f us/MiB, raw/this %5.2fx | %5.2f reads/64KiB\n",
					im.name, line[im.name], line[im.name]/line["raw"], cpu[im.name], cpu["raw"]/cpu[im.name], rpf[im.name])
			}
		}
	}
	fmt.Println("medians over the rounds (ratios are per round, then the median):")
	for _, w := range ws {
		fmt.Printf("writes %s\n", sizeName(w))
		for _, im := range impls {
			var ratios, cpuRatios []float64
			for i, v := range rates[w][im.name] {
				ratios = append(ratios, v/rates[w]["raw"][i])
				cpuRatios = append(cpuRatios, cpus[w]["raw"][i]/cpus[w][im.name][i])
			}
			fmt.Printf("    %-6s %6.0f MB/s, %5.2fx raw (%.2f-%.2f) | cpu %5.0f us/MiB, raw/this %5.2fx (%.2f-%.2f) | %5.2f reads/64KiB\n",
				im.name, median(rates[w][im.name]), median(ratios), slices.Min(ratios), slices.Max(ratios),
				median(cpus[w][im.name]), median(cpuRatios), slices.Min(cpuRatios), slices.Max(cpuRatios), median(reads[w][im.name]))
		}
	}
	return nil
}

func sizeName(n int) string {
	if n%1024 == 0 {
		return fmt.Sprintf("%dKiB", n/1024)
	}
	return fmt.Sprintf("%dB", n)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// syscr returns the process's read syscall count.
func syscr() int64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "syscr: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

// cpuTime returns the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pump writes total bytes in w-byte writes on p.w and reads them on p.r
// with a 64 KiB buffer, returning the time from first write to last read.
func pump(p pair, w int, total int64) (time.Duration, error) {
	data := make([]byte, w)
	for i := range data {
		data[i] = byte(i * 7)
	}
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		buf := make([]byte, 64<<10)
		var got int64
		for got < total {
			n, err := p.r.Read(buf)
			got += int64(n)
			if err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for sent := int64(0); sent < total; sent += int64(w) {
		if _, err := p.w.Write(data); err != nil {
			return 0, err
		}
	}
	err := <-done
	return time.Since(start), err
}

func tcpConns() (net.Conn, net.Conn, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		return nil, nil, err
	}
	r := <-ch
	if r.err != nil {
		c.Close()
		return nil, nil, r.err
	}
	return c, r.c, nil
}

func rawPair() (pair, error) {
	c, s, err := tcpConns()
	if err != nil {
		return pair{}, err
	}
	return pair{w: c, r: s, close: func() { c.Close(); s.Close() }}, nil
}

func wirePair() (pair, error) {
	c, s, err := tcpConns()
	if err != nil {
		return pair{}, err
	}
	ch := make(chan *wire.Session, 1)
	go func() {
		ss, err := wire.Server(s, wire.Config{})
		if err != nil {
			ch <- nil
			return
		}
		ch <- ss
	}()
	cs, err := wire.Client(c, wire.Config{})
	ss := <-ch
	if err != nil || ss == nil {
		return pair{}, errors.Join(err, errors.New("wire handshake failed"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := cs.Open(ctx, "bench")
	if err != nil {
		return pair{}, err
	}
	as, err := ss.Accept(ctx)
	if err != nil {
		return pair{}, err
	}
	return pair{w: st, r: as, close: func() { cs.Close(); ss.Close() }}, nil
}

func yamuxPair() (pair, error) {
	c, s, err := tcpConns()
	if err != nil {
		return pair{}, err
	}
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	cs, err := yamux.Client(c, cfg)
	if err != nil {
		return pair{}, err
	}
	ss, err := yamux.Server(s, cfg)
	if err != nil {
		return pair{}, err
	}
	ch := make(chan net.Conn, 1)
	go func() {
		st, err := ss.Accept()
		if err != nil {
			ch <- nil
			return
		}
		ch <- st
	}()
	st, err := cs.Open()
	if err != nil {
		return pair{}, err
	}
	// yamux sends the SYN with the first write.
	if _, err := st.Write([]byte{0}); err != nil {
		return pair{}, err
	}
	as := <-ch
	if as == nil {
		return pair{}, errors.New("yamux accept failed")
	}
	if _, err := io.ReadFull(as, make([]byte, 1)); err != nil {
		return pair{}, err
	}
	return pair{w: st, r: as, close: func() { cs.Close(); ss.Close() }}, nil
}

func smuxPair() (pair, error) {
	c, s, err := tcpConns()
	if err != nil {
		return pair{}, err
	}
	cfg := smux.DefaultConfig()
	cs, err := smux.Client(c, cfg)
	if err != nil {
		return pair{}, err
	}
	ss, err := smux.Server(s, cfg)
	if err != nil {
		return pair{}, err
	}
	ch := make(chan *smux.Stream, 1)
	go func() {
		st, err := ss.AcceptStream()
		if err != nil {
			ch <- nil
			return
		}
		ch <- st
	}()
	st, err := cs.OpenStream()
	if err != nil {
		return pair{}, err
	}
	as := <-ch
	if as == nil {
		return pair{}, errors.New("smux accept failed")
	}
	return pair{w: st, r: as, close: func() { cs.Close(); ss.Close() }}, nil
}
