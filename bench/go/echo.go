// echo: the Go peer of shoal's echo benchmark, goroutine per connection.
//
// The way Go writes a network server: net.Listen, one goroutine per accepted
// connection that reads into its own 1 KiB buffer and writes the bytes back
// (the runtime's netpoller parks goroutines whose socket has nothing to
// read), on one OS thread running Go code (GOMAXPROCS=1). TCP_NODELAY is Go's
// default for TCP connections.
//
//	go_echo --host 127.0.0.1 --port 0 [--threads N (ignored)]
//
// Prints `listening on HOST:PORT` once it accepts; SIGINT/SIGTERM exit 0.
// Build (GOPATH mode): GO111MODULE=off go build -o go_echo echo.go
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
	"time"
)

const bufSize = 1024

func serve(c net.Conn) {
	defer c.Close()
	buf := make([]byte, bufSize)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func main() {
	runtime.GOMAXPROCS(1)
	host := flag.String("host", "127.0.0.1", "IP address to listen on")
	port := flag.Int("port", 0, "TCP port (0: pick a free one)")
	flag.Int("threads", 1, "ignored: single-threaded by design")
	flag.Parse()
	if flag.NArg() != 0 || *port < 0 || *port > 65535 {
		fmt.Fprintln(os.Stderr, "usage: go_echo --host IP --port PORT [--threads N]")
		os.Exit(2)
	}

	ln, err := net.Listen("tcp4", net.JoinHostPort(*host, strconv.Itoa(*port)))
	if err != nil {
		fmt.Fprintln(os.Stderr, "go_echo:", err)
		os.Exit(1)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					continue
				}
				// EMFILE and the like: report, back off briefly, go on.
				fmt.Fprintln(os.Stderr, "go_echo: accept:", err)
				time.Sleep(10 * time.Millisecond)
				continue
			}
			go serve(c)
		}
	}()
	fmt.Printf("listening on %s\n", ln.Addr().String())
	os.Stdout.Sync()
	<-sigs
	ln.Close()
	os.Exit(0)
}
