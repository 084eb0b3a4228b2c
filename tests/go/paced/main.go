// Command paced is a ping-pong at a set rate (an open-loop workload: its rate is set by the
// clock, not by how fast it can go, as a service's is set by its clients), for gort's
// overhead-budget test. Every round trip parks each goroutine once on a channel receive;
// the pacing sleeps park the main goroutine with reason "sleep".
//
// With -spawn K, it also starts K goroutines every millisecond (each ends at once, without
// parking; net/http's server adds one per request, its connection's background read); with -request-every N, it sends one HTTP request to its own net/http server
// every N milliseconds, over one keep-alive connection written and read directly (no
// http.Client: its transport parks on channels, which would blur the channel parks' truth);
// the handler sleeps 10 µs, one "sleep" park inside each request.
//
// It prints {"ready":true,"pid":N}, waits for a line on stdin, then for -duration does
// -burst round trips every millisecond (sleeping until the next one), prints
// {"round_trips":N,"sleeps":S,"spawned":G,"requests":R,"ns":elapsed} and waits for stdin to
// close.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"time"
)

// client sends requests to the program's own server over one connection.
type client struct {
	conn net.Conn
	r    *bufio.Reader
}

func serve() *client {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(10 * time.Microsecond)
		w.Write([]byte("ok"))
	}))
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	return &client{conn: conn, r: bufio.NewReader(conn)}
}

func (c *client) get() {
	if _, err := io.WriteString(c.conn, "GET / HTTP/1.1\r\nHost: paced\r\n\r\n"); err != nil {
		log.Fatal(err)
	}
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		log.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

func main() {
	burst := flag.Int("burst", 10, "round trips after each sleep")
	duration := flag.Duration("duration", 10*time.Second, "how long to run")
	spawn := flag.Int("spawn", 0, "goroutines started every millisecond")
	requestEvery := flag.Int("request-every", 0, "one HTTP request every this many milliseconds (0: none)")
	flag.Parse()
	var c *client
	if *requestEvery > 0 {
		c = serve()
	}
	out := json.NewEncoder(os.Stdout)
	out.Encode(map[string]any{"ready": true, "pid": os.Getpid()})
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadString('\n'); err != nil {
		return
	}
	ping, pong := make(chan int), make(chan int)
	go func() {
		for v := range ping {
			pong <- v
		}
	}()
	t0 := time.Now()
	n, sleeps, spawned, requests := 0, 0, 0, 0
	// Absolute deadlines: slower round trips (under probes) do not lower the rate.
	for next, tick := t0, 0; time.Since(t0) < *duration; tick++ {
		next = next.Add(time.Millisecond)
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
			sleeps++
		}
		for i := 0; i < *burst; i++ {
			ping <- i
			<-pong
			n++
		}
		for i := 0; i < *spawn; i++ {
			go func() {}()
			spawned++
		}
		if c != nil && tick%*requestEvery == 0 {
			c.get()
			requests++
		}
	}
	out.Encode(map[string]any{
		"round_trips": n, "sleeps": sleeps, "spawned": spawned, "requests": requests,
		"ns": time.Since(t0).Nanoseconds(),
	})
	in.ReadString('\n')
}
