// Command preparked parks goroutines before gort attaches, so gort must find them by walking
// the runtime's goroutine list; then it wakes some of them.
//
// Protocol (stdin/stdout, one JSON object per line):
//  1. parks -n goroutines in each of chan receive, select and sync.Cond.Wait, reads its own
//     goroutine dump, prints {"ready":true,"parked":[{"goid":..,"kind":..,"reason":..}]}, and
//     waits for a line on stdin;
//  2. wakes -wake of the chan receive goroutines (they then exit), waits until they are gone,
//     prints {"woken":[goids]} and waits for stdin to close.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var (
	n      = flag.Int("n", 1000, "goroutines parked per kind")
	wake   = flag.Int("wake", 100, "chan receive goroutines woken after the go line")
	verify = flag.Bool("verify", true, "check each goroutine's wait reason in a goroutine dump (slow for many)")
)

type parked struct {
	Goid   int64  `json:"goid"`
	Kind   string `json:"kind"`
	Reason string `json:"reason"`
}

func goid() int64 {
	var buf [64]byte
	s := string(buf[:runtime.Stack(buf[:], false)])
	id, _ := strconv.ParseInt(strings.Fields(s)[1], 10, 64)
	return id
}

func nap(d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	syscall.Nanosleep(&ts, nil)
}

func main() {
	flag.Parse()
	out := json.NewEncoder(os.Stdout)
	in := bufio.NewReader(os.Stdin)

	kinds := []string{"chan receive", "select", "sync.Cond.Wait"}
	ids := make([][]atomic.Int64, len(kinds))
	for k := range ids {
		ids[k] = make([]atomic.Int64, *n)
	}
	wakers := make([]chan int, *n)
	var exited atomic.Int32
	var condMu sync.Mutex
	cond := sync.NewCond(&condMu)
	never := make(chan int)
	for i := 0; i < *n; i++ {
		i := i
		wakers[i] = make(chan int)
		go func() {
			ids[0][i].Store(goid())
			<-wakers[i]
			exited.Add(1)
		}()
		go func() {
			ids[1][i].Store(goid())
			select {
			case <-never:
			case <-time.After(24 * time.Hour):
			}
		}()
		go func() {
			ids[2][i].Store(goid())
			condMu.Lock()
			cond.Wait()
			condMu.Unlock()
		}()
	}

	var list []parked
	if !*verify {
		// Every goroutine created, then a moment for the last ones to park.
		for runtime.NumGoroutine() < len(kinds)**n+1 {
			nap(time.Millisecond)
		}
		nap(200 * time.Millisecond)
		out.Encode(map[string]any{"ready": true, "pid": os.Getpid(), "num_goroutine": runtime.NumGoroutine()})
		in.ReadString('\n')
		return
	}
	// Wait until the runtime's own dump shows every one of them parked.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); nap(10 * time.Millisecond) {
		reasons := waitReasons()
		list = list[:0]
		for k, kind := range kinds {
			for i := range ids[k] {
				id := ids[k][i].Load()
				if r, ok := reasons[id]; ok && id != 0 {
					list = append(list, parked{Goid: id, Kind: kind, Reason: r})
				}
			}
		}
		if len(list) == len(kinds)**n {
			break
		}
	}
	out.Encode(map[string]any{"ready": true, "pid": os.Getpid(), "parked": list})
	if _, err := in.ReadString('\n'); err != nil {
		return
	}
	var woken []int64
	for i := 0; i < *wake; i++ {
		woken = append(woken, ids[0][i].Load())
		wakers[i] <- i // the receiver is parked: this hands off without parking the sender
	}
	for exited.Load() < int32(*wake) {
		nap(time.Millisecond)
	}
	out.Encode(map[string]any{"woken": woken})
	in.ReadString('\n')
}

// waitReasons reads every parked goroutine's wait reason from the runtime's own dump.
func waitReasons() map[int64]string {
	buf := make([]byte, 64<<20)
	dump := string(buf[:runtime.Stack(buf, true)])
	out := map[int64]string{}
	for _, line := range strings.Split(dump, "\n") {
		if !strings.HasPrefix(line, "goroutine ") {
			continue
		}
		f := strings.SplitN(line, " ", 3)
		if len(f) < 3 {
			continue
		}
		id, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		state := strings.SplitN(strings.TrimSuffix(strings.TrimPrefix(f[2], "["), "]:"), ",", 2)[0]
		switch state {
		case "running", "runnable", "syscall":
			continue
		}
		out[id] = state
	}
	return out
}
