// Command backend is the small HTTP backend the edge benchmarks proxy to:
// GET / answers a fixed 13-byte body with keep-alive.
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
	log.Fatal(http.ListenAndServe(*addr, h))
}
