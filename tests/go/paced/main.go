// Command paced is a ping-pong at a set rate (an open-loop workload: its rate is set by the
// clock, not by how fast it can go, as a service's is set by its clients), for gort's
// overhead-budget test. Every round trip parks each goroutine once on a channel receive;
// the pacing sleeps park the main goroutine with reason "sleep".
//
// It prints {"ready":true,"pid":N}, waits for a line on stdin, then for -duration does
// -burst round trips every millisecond (sleeping until the next one), prints {"round_trips":N,"sleeps":S,"ns":elapsed}
// and waits for stdin to close.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"os"
	"time"
)

func main() {
	burst := flag.Int("burst", 10, "round trips after each sleep")
	duration := flag.Duration("duration", 10*time.Second, "how long to run")
	flag.Parse()
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
	n, sleeps := 0, 0
	// Absolute deadlines: slower round trips (under probes) do not lower the rate.
	for next := t0; time.Since(t0) < *duration; {
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
	}
	out.Encode(map[string]any{"round_trips": n, "sleeps": sleeps, "ns": time.Since(t0).Nanoseconds()})
	in.ReadString('\n')
}
