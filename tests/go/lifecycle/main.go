// Command lifecycle creates and ends goroutines in known steps and reports, after each,
// runtime.NumGoroutine() and how many goroutines it created and ended, so that gort's
// goroutine counts can be checked against the runtime's own.
//
// Protocol (stdin/stdout, one JSON object per line): parks -preparked goroutines, prints
// {"ready":true,"num_goroutine":N,"mono_ns":T}; then for every line on stdin runs the next
// step and prints {"step":K,"num_goroutine":N,"created":C,"exited":E,"mono_ns":T} (C and E
// count since the ready line); after the last step it waits for stdin to close.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"os"
	"runtime"
	"syscall"
	"time"
	"unsafe"
)

func monotonic() int64 {
	var ts syscall.Timespec
	// CLOCK_MONOTONIC, the clock gort's probes read.
	syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 1, uintptr(unsafe.Pointer(&ts)), 0)
	return ts.Nano()
}

// nap waits without parking the goroutine (a raw system call).
func nap(d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	syscall.Nanosleep(&ts, nil)
}

func main() {
	preparked := flag.Int("preparked", 1000, "goroutines parked before the ready line")
	flag.Parse()
	out := json.NewEncoder(os.Stdout)
	in := bufio.NewReader(os.Stdin)

	pre := make(chan struct{})
	for i := 0; i < *preparked; i++ {
		go func() { <-pre }()
	}
	base := runtime.NumGoroutine() - *preparked
	waitFor := func(n int) {
		for runtime.NumGoroutine() != n {
			nap(time.Millisecond)
		}
	}
	waitFor(base + *preparked)
	out.Encode(map[string]any{"ready": true, "pid": os.Getpid(), "num_goroutine": runtime.NumGoroutine(), "mono_ns": monotonic()})

	created, exited := 0, 0
	held := make(chan struct{})
	live := *preparked
	steps := []func(){
		func() { // 500 more, parked
			for i := 0; i < 500; i++ {
				go func() { <-held }()
			}
			created += 500
			live += 500
		},
		func() { // 700 of the pre-parked end
			for i := 0; i < 700; i++ {
				pre <- struct{}{}
			}
			exited += 700
			live -= 700
		},
		func() { // churn: 2000 that end at once, 300 that stay
			for i := 0; i < 2000; i++ {
				go func() {}()
			}
			for i := 0; i < 300; i++ {
				go func() { <-held }()
			}
			created += 2300
			exited += 2000
			live += 300
		},
		func() { // everything ends
			close(pre)
			close(held)
			exited += live
			live = 0
		},
	}
	for k, step := range steps {
		if _, err := in.ReadString('\n'); err != nil {
			return
		}
		step()
		waitFor(base + live)
		out.Encode(map[string]any{"step": k + 1, "num_goroutine": runtime.NumGoroutine(), "created": created, "exited": exited, "mono_ns": monotonic()})
	}
	in.ReadString('\n')
}
