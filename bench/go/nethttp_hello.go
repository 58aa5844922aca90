// nethttp_hello: the Go net/http peer of shoal's HTTP benchmark.
//
// The standard library's HTTP/1.1 server on one OS thread running Go code
// (GOMAXPROCS=1): `GET /` answers 200 `Hello, World!` as text/plain;
// anything else 404. net/http reads pipelined requests one by one and
// flushes after each response unless more input is already buffered.
//
//	nethttp_hello --host 127.0.0.1 --port 0 [--threads N (ignored)]
//
// Prints `listening on HOST:PORT` once it accepts; SIGINT/SIGTERM exit 0.
// Build: GO111MODULE=off go build -o nethttp_hello nethttp_hello.go
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"
)

var hello = []byte("Hello, World!")

func handler(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet || r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h["Server"] = []string{"nethttp"}
	h["Content-Type"] = []string{"text/plain"}
	h["Content-Length"] = []string{"13"}
	w.Write(hello)
}

func main() {
	runtime.GOMAXPROCS(1)
	host := flag.String("host", "127.0.0.1", "IP address to listen on")
	port := flag.Int("port", 0, "TCP port (0: pick a free one)")
	flag.Int("threads", 1, "ignored: single-threaded by design")
	flag.Parse()
	if flag.NArg() != 0 || *port < 0 || *port > 65535 {
		fmt.Fprintln(os.Stderr, "usage: nethttp_hello --host IP --port PORT [--threads N]")
		os.Exit(2)
	}

	ln, err := net.Listen("tcp4", net.JoinHostPort(*host, strconv.Itoa(*port)))
	if err != nil {
		fmt.Fprintln(os.Stderr, "nethttp_hello:", err)
		os.Exit(1)
	}
	srv := &http.Server{Handler: http.HandlerFunc(handler)}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	fmt.Printf("listening on %s\n", ln.Addr().String())
	os.Stdout.Sync()

	select {
	case <-sigs:
		ln.Close()
		os.Exit(0)
	case err := <-done:
		fmt.Fprintln(os.Stderr, "nethttp_hello: serve:", err)
		os.Exit(1)
	}
}
