// Command leaky leaks goroutines at a known rate beside healthy goroutines that block and
// wake all the time, and a pool of workers that wait for work for long stretches.
//
// Protocol (stdin/stdout, one JSON object per line): starts the healthy goroutines, prints
// {"ready":true,...}, waits for a line on stdin, then leaks one goroutine every
// 1s/-rate for -leak-for, parked in chan receive for good, and prints
// {"leaked":N,"created_by":{...},"blocked_at":{...}}; keeps the healthy ones busy until stdin
// closes.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"os"
	"runtime"
	"time"
)

type site struct {
	Function string `json:"function"`
	File     string `json:"file"`
	Line     int    `json:"line"`
}

// here is the location of the line after the call to here.
func here() site {
	pc, file, line, _ := runtime.Caller(1)
	return site{Function: runtime.FuncForPC(pc).Name(), File: file, Line: line + 1}
}

var blockedAt site

// leakOne is the leaking goroutine: it waits on a channel nobody will ever send on.
func leakOne(never chan int) {
	<-never
}

func main() {
	rate := flag.Int("rate", 50, "goroutines leaked per second")
	leakFor := flag.Duration("leak-for", 5*time.Second, "how long to leak")
	flag.Parse()
	out := json.NewEncoder(os.Stdout)
	in := bufio.NewReader(os.Stdin)

	// Healthy: ping-pong pairs that block and wake all the time.
	for i := 0; i < 4; i++ {
		ping, pong := make(chan int), make(chan int)
		go func() {
			for v := range ping {
				pong <- v
			}
		}()
		go func() {
			for i := 0; ; i++ {
				ping <- i
				<-pong
				time.Sleep(time.Millisecond)
			}
		}()
	}
	// Healthy: a pool of workers idle for long stretches (old parks, but not growing).
	jobs := make(chan func())
	for i := 0; i < 4; i++ {
		go func() {
			for job := range jobs {
				job()
			}
		}()
	}

	out.Encode(map[string]any{"ready": true, "pid": os.Getpid()})
	if _, err := in.ReadString('\n'); err != nil {
		return
	}
	// The line after the receive statement's comment in leakOne.
	blockedAt = site{Function: "main.leakOne", File: here().File, Line: leakOneLine()}
	never := make(chan int)
	tick := time.NewTicker(time.Second / time.Duration(*rate))
	deadline := time.Now().Add(*leakFor)
	leaked := 0
	var createdBy site
	for time.Now().Before(deadline) {
		<-tick.C
		createdBy = here()
		go leakOne(never)
		leaked++
	}
	tick.Stop()
	out.Encode(map[string]any{"leaked": leaked, "created_by": createdBy, "blocked_at": blockedAt})
	in.ReadString('\n')
}

// leakOneLine is the line of the receive in leakOne, found from its own position.
func leakOneLine() int {
	f := runtime.FuncForPC(funcPC(leakOne))
	_, line := f.FileLine(f.Entry())
	return line + 1
}
