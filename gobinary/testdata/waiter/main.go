// Command waiter parks goroutines in the ways gort reports (channel receive, select,
// sleep, sync.Mutex) and exits. gobinary's tests and `cargo xtask offsetgen` build it with
// every supported Go release and read the binaries; they never run it.
package main

import (
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"
)

// marker is the call whose site the tests look up with Pclntab::line_at.
//
//go:noinline
func marker(n int) int {
	return n * 3
}

// handler makes net/http part of the binary, so that the table has its offsets.
var handler http.Handler = http.NotFoundHandler()

func main() {
	ch := make(chan int)
	done := make(chan struct{})
	var mu sync.Mutex
	var wg sync.WaitGroup

	mu.Lock()
	wg.Add(3)
	go func() { // chan receive
		defer wg.Done()
		fmt.Fprintln(os.Stderr, "received", <-ch)
	}()
	go func() { // select
		defer wg.Done()
		select {
		case <-done:
		case <-time.After(time.Second):
		}
	}()
	go func() { // sync.Mutex.Lock
		defer wg.Done()
		mu.Lock() // gobinary-test: inlined lock
		mu.Unlock()
	}()
	time.Sleep(10 * time.Millisecond) // sleep
	ch <- marker(len(os.Args)) // gobinary-test: callsite
	close(done)
	mu.Unlock()
	wg.Wait()
}
