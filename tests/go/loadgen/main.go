// Command loadgen is the open-loop load of `cargo xtask bench`: it sends GET requests at a
// fixed rate, whether or not earlier ones have been answered (as a service's users do; wrk
// is a closed loop, which slows down with the server), and reports what was answered and
// how long it took, measured from when each request was due (no coordinated omission).
//
// Prints {"sent":N,"ok":N,"errors":N,"seconds":S,"p50_ms":X,"p99_ms":Y,"max_ms":Z}.
package main

import (
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"os"
	"sort"
	"sync"
	"time"
)

func main() {
	url := flag.String("url", "", "what to GET")
	rate := flag.Int("rate", 5000, "requests per second")
	duration := flag.Duration("duration", 5*time.Second, "how long to send")
	conns := flag.Int("conns", 64, "keep-alive connections at most")
	flag.Parse()
	client := &http.Client{
		Transport: &http.Transport{MaxIdleConnsPerHost: *conns, MaxConnsPerHost: *conns},
		Timeout:   10 * time.Second,
	}
	var (
		mu        sync.Mutex
		latencies []time.Duration
		errors    int
		wg        sync.WaitGroup
	)
	interval := time.Second / time.Duration(*rate)
	start := time.Now()
	n := int(duration.Seconds() * float64(*rate))
	for i := 0; i < n; i++ {
		due := start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get(*url)
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			took := time.Since(due)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errors++
			} else {
				latencies = append(latencies, took)
			}
		}()
	}
	wg.Wait()
	seconds := time.Since(start).Seconds()
	sort.Slice(latencies, func(a, b int) bool { return latencies[a] < latencies[b] })
	pct := func(p float64) float64 {
		if len(latencies) == 0 {
			return 0
		}
		return float64(latencies[int(p*float64(len(latencies)-1))]) / 1e6
	}
	json.NewEncoder(os.Stdout).Encode(map[string]any{
		"sent": n, "ok": len(latencies), "errors": errors, "seconds": seconds,
		"p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": pct(1),
	})
}
