// Command spawner creates and ends goroutines as fast as it can (aiming at -rate a second),
// for gort's load tests: every goroutine does one channel send to its creator and returns, so
// none is left behind. Its schedule is absolute: what it falls behind (under probes) it
// makes up after, so its rate over a few seconds is -rate where the machine allows.
//
// It prints {"ready":true,"pid":N}, waits for a line on stdin, runs for -duration, prints
// {"created":N,"ns":elapsed,"goroutines":runtime.NumGoroutine()} once all its goroutines are
// gone, and waits for stdin to close. With -forever it runs until stdin closes instead,
// printing {"created":N,"ended":M} (M: goroutines whose send it has received, each about
// to return) for every line it reads.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"os"
	"runtime"
	"sync/atomic"
	"time"
)

func main() {
	rate := flag.Int("rate", 200000, "goroutines a second to aim at")
	duration := flag.Duration("duration", 10*time.Second, "how long")
	forever := flag.Bool("forever", false, "run until stdin closes, reporting the counts so far for every line read")
	flag.Parse()
	out := json.NewEncoder(os.Stdout)
	out.Encode(map[string]any{"ready": true, "pid": os.Getpid()})
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadString('\n'); err != nil {
		return
	}
	var created, ended atomic.Int64
	stop := make(chan struct{})
	if *forever {
		go func() {
			for {
				if _, err := in.ReadString('\n'); err != nil {
					close(stop)
					return
				}
				// Ended first: never more than created.
				e := ended.Load()
				out.Encode(map[string]any{"created": created.Load(), "ended": e})
			}
		}()
	}
	done := make(chan struct{}, 1024)
	perMs := *rate / 1000
	t0 := time.Now()
	for next := t0; *forever || time.Since(t0) < *duration; {
		if *forever {
			select {
			case <-stop:
				return
			default:
			}
		}
		next = next.Add(time.Millisecond)
		for i := 0; i < perMs; i++ {
			go func() { done <- struct{}{} }()
			created.Add(1)
		}
		for i := 0; i < perMs; i++ {
			<-done
			ended.Add(1)
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
	out.Encode(map[string]any{"created": created.Load(), "ns": elapsed.Nanoseconds(), "goroutines": runtime.NumGoroutine()})
	in.ReadString('\n')
}
