// Command invariants is a busy Go program that checks its own invariants while gort
// attaches and detaches its probes over and over: values handed over channels arrive in
// order and unchanged, stacks that grow and move (deep recursion, so the runtime copies
// them) compute the same checksums, a mutex-protected counter loses no increment, timers
// fire, and goroutines come and go.
//
// Protocol (stdin/stdout, one JSON object per line): prints {"ready":true,"pid":N}, runs
// until stdin closes or a line arrives, then prints {"ok":bool,"checks":N,"failures":[...]}.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

var (
	checks   atomic.Int64
	mu       sync.Mutex
	failures []string
)

func fail(format string, args ...any) {
	mu.Lock()
	defer mu.Unlock()
	if len(failures) < 20 {
		failures = append(failures, fmt.Sprintf(format, args...))
	}
}

// deep recurses n levels with a frame large enough that the stack must grow (and be copied)
// and returns a checksum that depends on every level.
func deep(n int, seed uint64) uint64 {
	var pad [64]uint64
	for i := range pad {
		pad[i] = seed + uint64(i)
	}
	if n == 0 {
		return pad[63]
	}
	runtime.Gosched()
	return deep(n-1, seed*31+pad[n%64]) ^ pad[0]
}

func main() {
	out := json.NewEncoder(os.Stdout)
	stop := make(chan struct{})
	var wg sync.WaitGroup

	// Channel hand-offs: values arrive in order.
	for p := 0; p < 2; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ping, pong := make(chan uint64), make(chan uint64)
			go func() {
				for v := range ping {
					pong <- v * 2
				}
			}()
			for i := uint64(1); ; i++ {
				select {
				case <-stop:
					close(ping)
					return
				case ping <- i:
				}
				if got := <-pong; got != i*2 {
					fail("ping-pong: sent %d, got %d", i, got)
				}
				checks.Add(1)
			}
		}()
	}
	// Growing stacks: the same recursion gives the same checksum every time.
	want := deep(2000, 7)
	for g := 0; g < 2; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				// A new goroutine each time: it starts with a small stack that must grow.
				done := make(chan uint64)
				go func() { done <- deep(2000, 7) }()
				if got := <-done; got != want {
					fail("stack checksum %d != %d", got, want)
				}
				checks.Add(1)
			}
		}()
	}
	// A mutex-protected counter: no increment lost.
	var counter int64
	var cmu sync.Mutex
	const adders, adds = 4, 20000
	var added sync.WaitGroup
	for a := 0; a < adders; a++ {
		added.Add(1)
		go func() {
			defer added.Done()
			for i := 0; i < adds; i++ {
				cmu.Lock()
				counter++
				cmu.Unlock()
				if i%1000 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		}()
	}
	// Timers fire, not early.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			t0 := time.Now()
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			if d := time.Since(t0); d < 2*time.Millisecond {
				fail("timer fired after %v", d)
			}
			checks.Add(1)
		}
	}()

	out.Encode(map[string]any{"ready": true, "pid": os.Getpid()})
	bufio.NewReader(os.Stdin).ReadString('\n')
	close(stop)
	wg.Wait()
	added.Wait()
	if counter != adders*adds {
		fail("counter %d != %d", counter, adders*adds)
	}
	mu.Lock()
	defer mu.Unlock()
	out.Encode(map[string]any{"ok": len(failures) == 0, "checks": checks.Load(), "failures": failures})
}
