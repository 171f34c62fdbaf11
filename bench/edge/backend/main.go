// Command backend is the small HTTP backend the edge benchmarks proxy to:
// GET / answers a fixed 13-byte body with keep-alive, over HTTP/1.1 and
// h2c (prior knowledge), so h2load can measure it directly too.
package main

import (
	"flag"
	"log"
	"net/http"
	"strconv"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9101", "listen address")
	flag.Parse()
	body := []byte("hello, world\n")
	clen := strconv.Itoa(len(body))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Type"] = []string{"text/plain"}
		w.Header()["Content-Length"] = []string{clen}
		w.Write(body)
	})
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Addr: *addr, Handler: h, Protocols: &protos}
	log.Fatal(srv.ListenAndServe())
}
