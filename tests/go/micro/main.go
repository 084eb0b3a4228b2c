// Command micro runs one park-heavy micro workload of `cargo xtask bench`, -ops operations
// of one kind:
//
//   - pingpong: a round trip between two goroutines over unbuffered channels (two parks:
//     an unbuffered hand-off parks exactly one of its two sides);
//   - mutex: eight goroutines on one P take one sync.Mutex and, holding it, yield the
//     processor and work 1 µs: the others find it taken and park in sync.Mutex.Lock (a lock
//     convoy: about one park per operation);
//   - select: four producers send on their own unbuffered channels, one consumer receives
//     with a select over all four (it parks in select, producers in chan send);
//   - timer: 64 goroutines each sleep 20 µs in a loop (one park each, reason sleep; the
//     runtime's timers round short sleeps up to what the netpoller can wait).
//
// It prints {"ready":true,"pid":N}, waits for a line on stdin (so probes can attach first),
// runs (with -trace FILE: under the runtime's execution tracer, writing to FILE), prints
// {"ops":N,"ns":elapsed}, and exits.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/trace"
	"sync"
	"time"
)

var sink int

// work spins for about d without parking (the mutex holder's critical section).
func work(d time.Duration) {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		sink++
	}
}

func pingpong(n int) int {
	ping, pong := make(chan int), make(chan int)
	go func() {
		for v := range ping {
			pong <- v
		}
	}()
	for i := 0; i < n; i++ {
		ping <- i
		<-pong
	}
	close(ping)
	return n
}

func mutex(n int) int {
	const workers = 8
	// One P: a waiter never spins (the holder cannot run meanwhile), it parks.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n/workers; i++ {
				mu.Lock()
				// Yield while holding it (Gosched does not park): the goroutines
				// that run meanwhile find it taken and park.
				runtime.Gosched()
				work(1 * time.Microsecond)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return n / workers * workers
}

func fanIn(n int) int {
	const producers = 4
	var chans [producers]chan int
	for p := range chans {
		chans[p] = make(chan int)
		go func(c chan int) {
			for i := 0; i < n/producers; i++ {
				c <- i
			}
		}(chans[p])
	}
	for i := 0; i < n/producers*producers; i++ {
		select {
		case v := <-chans[0]:
			sink += v
		case v := <-chans[1]:
			sink += v
		case v := <-chans[2]:
			sink += v
		case v := <-chans[3]:
			sink += v
		}
	}
	return n / producers * producers
}

func timers(n int) int {
	const sleepers = 64
	var wg sync.WaitGroup
	for s := 0; s < sleepers; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n/sleepers; i++ {
				time.Sleep(20 * time.Microsecond)
			}
		}()
	}
	wg.Wait()
	return n / sleepers * sleepers
}

func main() {
	kind := flag.String("kind", "pingpong", "pingpong, mutex, select or timer")
	n := flag.Int("ops", 100000, "operations")
	traceFile := flag.String("trace", "", "run under runtime/trace, writing to this file")
	flag.Parse()
	run := map[string]func(int) int{"pingpong": pingpong, "mutex": mutex, "select": fanIn, "timer": timers}[*kind]
	if run == nil {
		fmt.Fprintf(os.Stderr, "micro: unknown -kind %q\n", *kind)
		os.Exit(2)
	}
	out := json.NewEncoder(os.Stdout)
	out.Encode(map[string]any{"ready": true, "pid": os.Getpid()})
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return
	}
	if *traceFile != "" {
		f, err := os.Create(*traceFile)
		if err != nil {
			panic(err)
		}
		defer f.Close()
		if err := trace.Start(f); err != nil {
			panic(err)
		}
	}
	t0 := time.Now()
	ops := run(*n)
	ns := time.Since(t0).Nanoseconds()
	if *traceFile != "" {
		trace.Stop()
	}
	out.Encode(map[string]any{"ops": ops, "ns": ns})
}
