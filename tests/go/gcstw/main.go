// Command gcstw allocates at a known rate and forces GC cycles, then reports what the
// runtime itself says about its cycles and pauses, so gort's GC metrics can be checked
// against the runtime's own numbers.
//
// Protocol (stdin/stdout, one JSON object per line): prints {"ready":true,...} with the
// runtime's counters before it starts, waits for a line on stdin, allocates and collects,
// prints the counters after, waits for stdin to close.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
)

var (
	forced    = flag.Int("gcs", 10, "runtime.GC calls")
	allocMiB  = flag.Int("alloc-mib", 256, "MiB of garbage allocated in 64 KiB chunks")
	memstats  = flag.Int("memstats", 3, "runtime.ReadMemStats calls (each stops the world)")
	keepAlive [][]byte
)

type counters struct {
	NumGC        int64 `json:"num_gc"`
	PauseTotalNs int64 `json:"pause_total_ns"`
	// /gc/cycles/total:gc-cycles
	Cycles uint64 `json:"cycles"`
	// The number of stop-the-world pauses for GC, /sched/pauses/total/gc:seconds (Go 1.22+;
	// -1 before).
	GCPauses int64 `json:"gc_pauses"`
}

func read() counters {
	var s debug.GCStats
	debug.ReadGCStats(&s)
	c := counters{NumGC: s.NumGC, PauseTotalNs: int64(s.PauseTotal), GCPauses: -1}
	samples := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}, {Name: "/sched/pauses/total/gc:seconds"}}
	metrics.Read(samples)
	c.Cycles = samples[0].Value.Uint64()
	if samples[1].Value.Kind() == metrics.KindFloat64Histogram {
		c.GCPauses = 0
		for _, n := range samples[1].Value.Float64Histogram().Counts {
			c.GCPauses += int64(n)
		}
	}
	return c
}

func main() {
	flag.Parse()
	out := json.NewEncoder(os.Stdout)
	in := bufio.NewReader(os.Stdin)
	out.Encode(map[string]any{"ready": true, "pid": os.Getpid(), "before": read()})
	if _, err := in.ReadString('\n'); err != nil {
		return
	}
	chunks := *allocMiB * 16
	every := chunks / *forced
	for i := 0; i < chunks; i++ {
		b := make([]byte, 64<<10)
		b[0] = byte(i)
		keepAlive = append(keepAlive, b)
		if len(keepAlive) > 64 { // keep a small live heap, drop the rest
			keepAlive = keepAlive[1:]
		}
		if (i+1)%every == 0 {
			runtime.GC()
		}
	}
	for i := 0; i < *memstats; i++ {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
	}
	out.Encode(map[string]any{"after": read(), "memstats_calls": *memstats})
	in.ReadString('\n')
}
