// Command benchhttp is the realistic workload of `cargo xtask bench`: a stdlib net/http
// server whose handler does one channel hand-off with a goroutine per request, served on a
// loopback port to `wrk`.
//
// It prints {"ready":true,"pid":N,"port":P} and serves until stdin closes (with -trace FILE:
// under the runtime's execution tracer, writing to FILE). GET /served answers how many
// requests it has served, for measures over a span of a longer load.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"net"
	"net/http"
	"os"
	"runtime/trace"
	"strconv"
	"sync/atomic"
)

func main() {
	traceFile := flag.String("trace", "", "serve under runtime/trace, writing to this file")
	flag.Parse()
	if *traceFile != "" {
		f, err := os.Create(*traceFile)
		if err != nil {
			panic(err)
		}
		defer f.Close()
		if err := trace.Start(f); err != nil {
			panic(err)
		}
		defer trace.Stop()
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	var served atomic.Int64
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		c := make(chan int)
		go func() { c <- 1 }()
		<-c
		w.Write([]byte("ok\n"))
		served.Add(1)
	})
	http.HandleFunc("/served", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(strconv.FormatInt(served.Load(), 10) + "\n"))
	})
	go http.Serve(l, nil)
	json.NewEncoder(os.Stdout).Encode(map[string]any{
		"ready": true, "pid": os.Getpid(), "port": l.Addr().(*net.TCPAddr).Port,
	})
	bufio.NewReader(os.Stdin).ReadString('\n')
}
