// Command parks makes a known number of goroutine parks of known kinds and lengths, measures
// them itself, and reports what it did as JSON, so that gort's numbers can be checked against
// the program's own.
//
// Protocol (stdin/stdout, one JSON object per line):
//  1. sets up (sockets), prints {"ready":true,"pid":N}, and waits for a line on stdin;
//  2. runs every scenario at once, then parks one goroutine of each kind for good;
//  3. prints the report (see type report) and waits for stdin to close, then exits.
//
// Every park here is deterministic: a goroutine blocks only where the program knows it will
// (its peer arrives block later), so the expected counts are exact. The main goroutine never
// parks once measuring starts: it waits with raw nanosleep system calls, which do not park.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"net"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var (
	workers = flag.Int("workers", 2, "goroutines per scenario")
	ops     = flag.Int("ops", 20, "blocking operations per goroutine")
	block   = flag.Duration("block", 20*time.Millisecond, "how long each operation blocks")
)

// site is a source location.
type site struct {
	Function string `json:"function"`
	File     string `json:"file"`
	Line     int    `json:"line"`
}

// worker is what one measured goroutine did.
type worker struct {
	Kind      string `json:"kind"`
	Goid      int64  `json:"goid"`
	Count     int    `json:"count"`
	BlockedNs int64  `json:"blocked_ns"`
	MaxNs     int64  `json:"max_ns"`
	// Where it blocks, and where it was created.
	BlockSite     site   `json:"block_site"`
	CreatedBy     site   `json:"created_by"`
	StartFunction string `json:"start_function"`
}

// total is what the program knows about one kind of park, over all its goroutines.
type total struct {
	Count     int   `json:"count"`
	BlockedNs int64 `json:"blocked_ns"`
}

type parked struct {
	Kind   string `json:"kind"`
	Goid   int64  `json:"goid"`
	Reason string `json:"reason"` // as the runtime's own goroutine dump names it
}

type report struct {
	GoVersion string            `json:"go_version"`
	Workers   []*worker         `json:"workers"`
	Totals    map[string]*total `json:"totals"` // by kind
	Parked    []parked          `json:"parked"` // parked for good at the end
	// Reasons maps each kind to the runtime's name for it, read from the goroutine dump.
	Reasons map[string]string `json:"reasons"`
	// Waiting counts every waiting goroutine of the final goroutine dump by wait reason
	// (the dump leaves out the runtime's own goroutines).
	Waiting map[string]int `json:"waiting"`
	// SchedLatencies is runtime/metrics' /sched/latencies:seconds, read last.
	SchedLatencies histogram `json:"sched_latencies"`
}

type histogram struct {
	Counts []uint64 `json:"counts"`
	// Buckets are the boundaries (len(Counts)+1), with -Inf and +Inf as null.
	Buckets []*float64 `json:"buckets"`
}

// kinds of park the program makes; "sleep" is its helper goroutines' sleeps.
var kinds = []string{"chan receive", "chan send", "select", "sync.Mutex.Lock", "sync.Cond.Wait",
	"sync.WaitGroup.Wait", "time.Sleep", "IO wait", "sleep"}

// counters per kind, updated without locks: a contended lock could itself park.
var counts, sums = map[string]*atomic.Int64{}, map[string]*atomic.Int64{}

func init() {
	for _, k := range kinds {
		counts[k], sums[k] = new(atomic.Int64), new(atomic.Int64)
	}
}

func account(kind string, d time.Duration) {
	counts[kind].Add(1)
	sums[kind].Add(int64(d))
}

// sleep is time.Sleep, accounted: every sleep parks exactly once.
func sleep(d time.Duration) {
	t0 := time.Now()
	time.Sleep(d)
	account("sleep", time.Since(t0))
}

// measure runs op, which must park exactly once, and accounts it to w and to kind's total.
func (w *worker) measure(op func()) {
	t0 := time.Now()
	op()
	d := time.Since(t0)
	w.Count++
	w.BlockedNs += int64(d)
	if int64(d) > w.MaxNs {
		w.MaxNs = int64(d)
	}
	account(w.Kind, d)
}

// nap waits without parking the goroutine (a raw system call).
func nap(d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	syscall.Nanosleep(&ts, nil)
}

func goid() int64 {
	var buf [64]byte
	s := string(buf[:runtime.Stack(buf[:], false)])
	id, _ := strconv.ParseInt(strings.Fields(s)[1], 10, 64)
	return id
}

// caller is the location of the line after the call to caller: put it right above the
// statement whose location is wanted.
func caller() site {
	pc, file, line, _ := runtime.Caller(1)
	return site{Function: runtime.FuncForPC(pc).Name(), File: file, Line: line + 1}
}

func main() {
	flag.Parse()
	in := bufio.NewReader(os.Stdin)
	out := json.NewEncoder(os.Stdout)

	// Loopback connections for IO wait, set up before gort attaches.
	ioConns := make([][2]net.Conn, *workers+1) // one per IO worker, and one never written
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	for i := range ioConns {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			panic(err)
		}
		s, err := ln.Accept()
		if err != nil {
			panic(err)
		}
		ioConns[i] = [2]net.Conn{c, s}
	}
	ln.Close()

	out.Encode(map[string]any{"ready": true, "pid": os.Getpid()})
	if _, err := in.ReadString('\n'); err != nil {
		return
	}

	var all []*worker
	var running atomic.Int32
	// run starts *workers goroutines running body; the i-th gets i.
	run := func(kind string, body func(w *worker, i int)) {
		for i := 0; i < *workers; i++ {
			w := &worker{Kind: kind}
			all = append(all, w)
			running.Add(1)
			i := i
			// No arguments to the go statement: Go 1.22+ would start the goroutine in a
			// generated wrapper (gowrap) rather than in this function literal.
			w.CreatedBy = caller()
			go func() {
				defer running.Add(-1)
				w.Goid = goid()
				pc, _, _, _ := runtime.Caller(0)
				w.StartFunction = runtime.FuncForPC(pc).Name()
				body(w, i)
			}()
		}
	}

	run("chan receive", func(w *worker, _ int) {
		ch := make(chan int)
		go func() {
			for i := 0; i < *ops; i++ {
				sleep(*block)
				ch <- i // the receiver is already parked: no park here
			}
		}()
		for i := 0; i < *ops; i++ {
			w.BlockSite = caller()
			w.measure(func() { <-ch })
		}
	})
	run("chan send", func(w *worker, _ int) {
		ch := make(chan int)
		go func() {
			for i := 0; i < *ops; i++ {
				sleep(*block)
				<-ch // the sender is already parked: no park here
			}
		}()
		for i := 0; i < *ops; i++ {
			w.BlockSite = caller()
			w.measure(func() { ch <- i })
		}
	})
	run("select", func(w *worker, _ int) {
		a, b := make(chan int), make(chan int)
		go func() {
			for i := 0; i < *ops; i++ {
				sleep(*block)
				if i%2 == 0 {
					a <- i
				} else {
					b <- i
				}
			}
		}()
		for i := 0; i < *ops; i++ {
			w.measure(func() {
				w.BlockSite = caller()
				select {
				case <-a:
				case <-b:
				}
			})
		}
	})
	run("sync.Mutex.Lock", func(w *worker, _ int) {
		var m sync.Mutex
		var held, done atomic.Int32
		go func() {
			for i := 1; i <= *ops; i++ {
				m.Lock() // uncontended: the worker unlocked before saying done
				held.Store(int32(i))
				sleep(*block)
				m.Unlock()
				for done.Load() != int32(i) {
					nap(50 * time.Microsecond)
				}
			}
		}()
		for i := 1; i <= *ops; i++ {
			for held.Load() != int32(i) {
				nap(50 * time.Microsecond)
			}
			w.BlockSite = caller()
			w.measure(func() { m.Lock() })
			m.Unlock()
			done.Store(int32(i))
		}
	})
	run("sync.Cond.Wait", func(w *worker, _ int) {
		var m sync.Mutex
		c := sync.NewCond(&m)
		ready := false
		go func() {
			for i := 0; i < *ops; i++ {
				sleep(*block)
				m.Lock()
				ready = true
				m.Unlock()
				c.Signal()
			}
		}()
		for i := 0; i < *ops; i++ {
			m.Lock()
			w.measure(func() {
				for !ready {
					w.BlockSite = caller()
					c.Wait()
				}
			})
			ready = false
			m.Unlock()
		}
	})
	run("sync.WaitGroup.Wait", func(w *worker, _ int) {
		for i := 0; i < *ops; i++ {
			var g sync.WaitGroup
			g.Add(1)
			go func() {
				sleep(*block)
				g.Done()
			}()
			w.BlockSite = caller()
			w.measure(func() { g.Wait() })
		}
	})
	run("time.Sleep", func(w *worker, _ int) {
		for i := 0; i < *ops; i++ {
			w.BlockSite = caller()
			w.measure(func() { time.Sleep(*block) })
		}
	})
	run("IO wait", func(w *worker, i int) {
		conn := ioConns[i]
		go func() {
			for i := 0; i < *ops; i++ {
				sleep(*block)
				conn[1].Write([]byte{1})
			}
		}()
		var buf [1]byte
		for i := 0; i < *ops; i++ {
			w.BlockSite = caller()
			w.measure(func() { conn[0].Read(buf[:]) })
		}
	})

	for running.Load() > 0 {
		nap(time.Millisecond)
	}

	// One goroutine of each kind parked for good, then the runtime's own view of them.
	// Each parker stores its goid in its own slot: no lock that could itself park.
	parkers := make([]atomic.Int64, 8)
	parkerKinds := make([]string, 0, 8)
	park := func(kind string, f func()) {
		slot := &parkers[len(parkerKinds)]
		parkerKinds = append(parkerKinds, kind)
		go func() {
			slot.Store(goid())
			f()
		}()
	}
	var never sync.Mutex
	never.Lock()
	var neverWG sync.WaitGroup
	neverWG.Add(1)
	neverCond := sync.NewCond(&sync.Mutex{})
	park("chan receive", func() { <-make(chan int) })
	park("chan send", func() { make(chan int) <- 1 })
	park("select", func() {
		select {
		case <-make(chan int):
		case <-make(chan int):
		}
	})
	park("sync.Mutex.Lock", func() { never.Lock() })
	park("sync.Cond.Wait", func() {
		neverCond.L.Lock()
		neverCond.Wait()
	})
	park("sync.WaitGroup.Wait", func() { neverWG.Wait() })
	park("time.Sleep", func() { time.Sleep(time.Hour) })
	idle := ioConns[len(ioConns)-1]
	park("IO wait", func() {
		var b [1]byte
		idle[0].Read(b[:])
	})

	rep := report{GoVersion: runtime.Version(), Workers: all, Totals: map[string]*total{}, Reasons: map[string]string{}}
	for _, k := range kinds {
		rep.Totals[k] = &total{Count: int(counts[k].Load()), BlockedNs: sums[k].Load()}
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); nap(10 * time.Millisecond) {
		rep.Parked = rep.Parked[:0]
		reasons := waitReasons()
		rep.Waiting = map[string]int{}
		for _, r := range reasons {
			rep.Waiting[r]++
		}
		for i, kind := range parkerKinds {
			id := parkers[i].Load()
			if reason, ok := reasons[id]; ok && id != 0 {
				rep.Parked = append(rep.Parked, parked{Kind: kind, Goid: id, Reason: reason})
				rep.Reasons[kind] = reason
			}
		}
		if len(rep.Parked) == len(parkerKinds) {
			break
		}
	}
	// "sleep" accounts the helper goroutines' sleeps; measured sleeps are "time.Sleep".
	rep.Reasons["sleep"] = rep.Reasons["time.Sleep"]
	sample := []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	metrics.Read(sample)
	h := sample[0].Value.Float64Histogram()
	rep.SchedLatencies.Counts = h.Counts
	for _, b := range h.Buckets {
		b := b
		if math.IsInf(b, 0) {
			rep.SchedLatencies.Buckets = append(rep.SchedLatencies.Buckets, nil)
		} else {
			rep.SchedLatencies.Buckets = append(rep.SchedLatencies.Buckets, &b)
		}
	}
	out.Encode(rep)
	in.ReadString('\n')
	fmt.Fprintln(os.Stderr, "parks: done")
}

// waitReasons reads every parked goroutine's wait reason from the runtime's own dump.
func waitReasons() map[int64]string {
	buf := make([]byte, 1<<20)
	dump := string(buf[:runtime.Stack(buf, true)])
	out := map[int64]string{}
	for _, line := range strings.Split(dump, "\n") {
		// goroutine 19 [chan receive]:   or   goroutine 19 [chan receive, 2 minutes]:
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
		state := strings.TrimSuffix(strings.TrimPrefix(f[2], "["), "]:")
		state = strings.SplitN(state, ",", 2)[0]
		switch state {
		case "running", "runnable", "syscall":
			continue
		}
		out[id] = state
	}
	return out
}
