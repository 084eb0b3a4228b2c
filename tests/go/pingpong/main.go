// Command pingpong hands a value back and forth between two goroutines over unbuffered
// channels: every round trip parks each goroutine once. It is the park-heavy workload of
// `cargo xtask bench`.
//
// It prints {"ready":true,"pid":N}, waits for a line on stdin (so probes can attach first),
// runs, prints {"round_trips":N,"ns":elapsed}, and exits (with -wait: once stdin closes).
// With -forever it runs flat out until stdin closes (a closed loop: its pace is set by how
// fast it can go), printing {"round_trips":N} for every line read: gort's closed-loop
// estimates test.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"os"
	"sync/atomic"
	"time"
)

func main() {
	n := flag.Int("n", 100000, "round trips")
	wait := flag.Bool("wait", false, "after the report, wait for stdin to close")
	forever := flag.Bool("forever", false, "run until stdin closes, reporting the round trips so far for every line read")
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
	if *forever {
		var trips atomic.Int64
		go func() {
			for {
				ping <- 0
				<-pong
				trips.Add(1)
			}
		}()
		for {
			if _, err := in.ReadString('\n'); err != nil {
				return
			}
			out.Encode(map[string]any{"round_trips": trips.Load()})
		}
	}
	t0 := time.Now()
	for i := 0; i < *n; i++ {
		ping <- i
		<-pong
	}
	out.Encode(map[string]any{"round_trips": *n, "ns": time.Since(t0).Nanoseconds()})
	if *wait {
		in.ReadString('\n')
	}
}
