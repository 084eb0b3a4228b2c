// Command spawner creates and ends goroutines as fast as it can (aiming at -rate a second),
// for gort's load test: every goroutine does one channel send to its creator and returns, so
// none is left behind.
//
// It prints {"ready":true,"pid":N}, waits for a line on stdin, runs for -duration, prints
// {"created":N,"ns":elapsed,"goroutines":runtime.NumGoroutine()} once all its goroutines are
// gone, and waits for stdin to close.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"os"
	"runtime"
	"time"
)

func main() {
	rate := flag.Int("rate", 200000, "goroutines a second to aim at")
	duration := flag.Duration("duration", 10*time.Second, "how long")
	flag.Parse()
	out := json.NewEncoder(os.Stdout)
	out.Encode(map[string]any{"ready": true, "pid": os.Getpid()})
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadString('\n'); err != nil {
		return
	}
	done := make(chan struct{}, 1024)
	perMs := *rate / 1000
	created := 0
	t0 := time.Now()
	for next := t0; time.Since(t0) < *duration; {
		next = next.Add(time.Millisecond)
		for i := 0; i < perMs; i++ {
			go func() { done <- struct{}{} }()
			created++
		}
		for i := 0; i < perMs; i++ {
			<-done
		}
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
	}
	elapsed := time.Since(t0)
	// Goroutines are gone from NumGoroutine once they have exited.
	for runtime.NumGoroutine() > 1 {
		time.Sleep(time.Millisecond)
	}
	out.Encode(map[string]any{"created": created, "ns": elapsed.Nanoseconds(), "goroutines": runtime.NumGoroutine()})
	in.ReadString('\n')
}
