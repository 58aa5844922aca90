// fasthttp_hello: the fasthttp peer of shoal's HTTP benchmark.
//
// A fasthttp server on one OS thread running Go code (GOMAXPROCS=1):
// `GET /` answers 200 `Hello, World!` as text/plain; anything else 404.
// fasthttp pipelines by itself (it flushes once the read buffer is empty).
//
//	fasthttp_hello --host 127.0.0.1 --port 0 [--threads N (ignored)]
//
// Prints `listening on HOST:PORT` once it accepts; SIGINT/SIGTERM exit 0.
// Build (GOPATH mode, against Debian's golang-github-valyala-fasthttp-dev):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o fasthttp_hello fasthttp_hello.go
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"syscall"

	"github.com/valyala/fasthttp"
)

var hello = []byte("Hello, World!")

func handler(ctx *fasthttp.RequestCtx) {
	if ctx.IsGet() && string(ctx.Path()) == "/" {
		ctx.SetContentType("text/plain")
		ctx.SetBody(hello)
		return
	}
	ctx.Error("not found", fasthttp.StatusNotFound)
}

func main() {
	runtime.GOMAXPROCS(1)
	host := flag.String("host", "127.0.0.1", "IP address to listen on")
	port := flag.Int("port", 0, "TCP port (0: pick a free one)")
	flag.Int("threads", 1, "ignored: single-threaded by design")
	flag.Parse()
	if flag.NArg() != 0 || *port < 0 || *port > 65535 {
		fmt.Fprintln(os.Stderr, "usage: fasthttp_hello --host IP --port PORT [--threads N]")
		os.Exit(2)
	}

	ln, err := net.Listen("tcp4", net.JoinHostPort(*host, strconv.Itoa(*port)))
	if err != nil {
		fmt.Fprintln(os.Stderr, "fasthttp_hello:", err)
		os.Exit(1)
	}
	srv := &fasthttp.Server{
		Handler: handler,
		Name:    "fasthttp",
	}
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
		fmt.Fprintln(os.Stderr, "fasthttp_hello: serve:", err)
		os.Exit(1)
	}
}
