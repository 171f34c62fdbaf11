// Command watchheap measures what unread registry Watch streams cost the
// registry's heap: it serves a catalog of large instances (the most tags
// and metadata the registry allows, about 36 KiB each), opens watchers of
// every service that never read, makes a few changes, and reports the
// live heap after a GC — for whole-snapshot watches and for incremental
// ones, in interleaved rounds, each round on a fresh registry. The
// watchers run in a child process, each on its own connection as separate
// clients are, so the heap measured is the registry's alone; the figure
// with no watchers is printed as the base.
//
//	go run ./watchheap [-instances 120] [-watchers 200] [-rounds 3]
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/switchboard-net/switchboard/pkg/service"
	registryv1 "github.com/switchboard-net/switchboard/proto/switchboard/registry/v1"
	"github.com/switchboard-net/switchboard/services/registry"
	"github.com/switchboard-net/switchboard/services/registry/catalog"
	"github.com/switchboard-net/switchboard/services/registry/embedded"
)

var memprofile = flag.String("memprofile", "", "write a heap profile of each mode's last round to this file (.whole, .incremental)")

func main() {
	instances := flag.Int("instances", 120, "instances in the catalog")
	watchers := flag.Int("watchers", 200, "unread watch streams")
	changes := flag.Int("changes", 20, "changes made while the watchers do not read")
	rounds := flag.Int("rounds", 3, "rounds of each mode, interleaved")
	watchAddr := flag.String("watch-addr", "", "internal: open the watchers on this address (child process)")
	mode := flag.String("mode", "", "internal: whole or incremental (child process)")
	flag.Parse()
	if *watchAddr != "" {
		log.Fatal(openWatchers(*watchAddr, *mode, *watchers))
	}
	for r := 1; r <= *rounds; r++ {
		for _, mode := range []string{"none", "whole", "incremental"} {
			mb, size, err := round(mode, *instances, *watchers, *changes)
			if err != nil {
				log.Fatalf("round %d %s: %v", r, mode, err)
			}
			fmt.Printf("round %d  %-12s catalog %.1f MiB  watchers %3d  live heap %7.1f MiB\n", r, mode, float64(size)/(1<<20), *watchers, mb)
		}
	}
}

func large(service, id string, port uint32) *registryv1.Instance {
	in := &registryv1.Instance{Service: service, Id: id, Address: "10.1.0.1", Port: port, Metadata: map[string]string{}}
	for k := range catalog.MaxTags {
		in.Tags = append(in.Tags, fmt.Sprintf("tag%03d-%s", k, strings.Repeat("t", catalog.MaxTagLen-7)))
	}
	for k := range catalog.MaxMetadata {
		in.Metadata[fmt.Sprintf("key%03d-%s", k, strings.Repeat("k", catalog.MaxMetaKeyLen-7))] = strings.Repeat("v", catalog.MaxMetaValueLen)
	}
	return in
}

// round serves a fresh registry, opens the watchers (mode "none": none),
// makes the changes and returns the live heap in MiB after a GC.
func round(mode string, n, watchers, changes int) (float64, int, error) {
	dir, err := os.MkdirTemp("", "watchheap")
	if err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(dir)
	store, err := embedded.Open(dir)
	if err != nil {
		return 0, 0, err
	}
	defer store.Close()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, 0, err
	}
	opts := []grpc.ServerOption{grpc.MaxRecvMsgSize(service.MaxMessageSize), grpc.MaxSendMsgSize(service.MaxMessageSize)}
	srv := grpc.NewServer(opts...)
	registryv1.RegisterRegistryServer(srv, registry.NewServer(store, nil))
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dial := func() (*grpc.ClientConn, error) {
		return grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(service.MaxMessageSize)))
	}
	cc, err := dial()
	if err != nil {
		return 0, 0, err
	}
	defer cc.Close()
	c := registryv1.NewRegistryClient(cc)
	size := 0
	for i := range n {
		in := large(fmt.Sprintf("svc%d", i%8), fmt.Sprintf("i%04d", i), uint32(1000+i))
		resp, err := c.Register(ctx, &registryv1.RegisterRequest{Instance: in})
		if err != nil {
			return 0, 0, err
		}
		size += protoSize(resp.Instance)
	}
	if mode != "none" {
		self, err := os.Executable()
		if err != nil {
			return 0, 0, err
		}
		child := exec.CommandContext(ctx, self, "-watch-addr", lis.Addr().String(), "-mode", mode, "-watchers", strconv.Itoa(watchers))
		child.Stderr = os.Stderr
		out, err := child.StdoutPipe()
		if err != nil {
			return 0, 0, err
		}
		if err := child.Start(); err != nil {
			return 0, 0, err
		}
		defer func() { _ = child.Process.Kill(); _ = child.Wait() }()
		if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
			return 0, 0, fmt.Errorf("watchers: %q, %v", line, err)
		}
	}
	for i := range changes {
		st := registryv1.HealthStatus_HEALTH_STATUS_CRITICAL
		if i%2 == 1 {
			st = registryv1.HealthStatus_HEALTH_STATUS_PASSING
		}
		if _, err := c.SetHealth(ctx, &registryv1.SetHealthRequest{Service: "svc0", Id: fmt.Sprintf("i%04d", (i*8)%n), Status: st}); err != nil {
			return 0, 0, err
		}
	}
	// Let every stream send what it can; the watchers never read.
	time.Sleep(2 * time.Second)
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if *memprofile != "" && mode != "none" {
		f, err := os.Create(*memprofile + "." + mode)
		if err != nil {
			return 0, 0, err
		}
		defer f.Close()
		if err := pprof.WriteHeapProfile(f); err != nil {
			return 0, 0, err
		}
	}
	return float64(ms.HeapAlloc) / (1 << 20), size, nil
}

// openWatchers opens n watchers of every service on addr, each on its own
// connection, says "ready" once all are open and then never reads them; it
// returns only on error (the parent kills the process).
func openWatchers(addr, mode string, n int) error {
	ctx := context.Background()
	for range n {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(service.MaxMessageSize)))
		if err != nil {
			return err
		}
		st, err := registryv1.NewRegistryClient(cc).Watch(ctx, &registryv1.WatchRequest{IncludeUnhealthy: true, Incremental: mode == "incremental"})
		if err != nil {
			return err
		}
		if _, err := st.Header(); err != nil { // the stream is open on the server
			return err
		}
	}
	fmt.Println("ready")
	select {}
}

func protoSize(in *registryv1.Instance) int { return proto.Size(in) }
