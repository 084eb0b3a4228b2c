// Command httpserver serves HTTP with handlers that park for known durations, and is its own
// client: it sends requests with known random traceparent values over several keep-alive
// connections, and records per trace id what each handler measured itself.
//
// Protocol (stdin/stdout, one JSON object per line): starts the server, prints
// {"ready":true,...}, waits for a line on stdin, sends the requests, prints the report
// {"requests":[...]}, waits for stdin to close.
package main

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

type handled struct {
	Goid      int64 `json:"goid"`
	BlockedNs int64 `json:"blocked_ns"`
	// The blocked time above by what the handler waited on.
	SleepNs   int64 `json:"sleep_ns"`
	ReceiveNs int64 `json:"receive_ns"`
	Sleeps    int   `json:"sleeps"`
	Receives  int   `json:"receives"`
}

type sent struct {
	// "valid", "none", "invalid" or "hostile".
	Kind         string   `json:"kind"`
	Traceparent  string   `json:"traceparent,omitempty"`
	TraceID      string   `json:"trace_id,omitempty"`
	ParentSpanID string   `json:"parent_span_id,omitempty"`
	Handled      *handled `json:"handled"`
}

var (
	mu         sync.Mutex
	byTrace    = map[string]*handled{}
	panicGoids = map[string]int64{}
)

func goid() int64 {
	var buf [64]byte
	s := string(buf[:runtime.Stack(buf[:], false)])
	id, _ := strconv.ParseInt(strings.Fields(s)[1], 10, 64)
	return id
}

// work parks a known number of times for known lengths, timing itself. Its request is
// recognized by the X-Request-Id header the client sets.
func work(w http.ResponseWriter, r *http.Request) {
	h := &handled{Goid: goid()}
	id, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/work/"))
	measure := func(into *int64, f func()) {
		t0 := time.Now()
		f()
		d := int64(time.Since(t0))
		*into += d
		h.BlockedNs += d
	}
	for i := 0; i < 1+id%3; i++ {
		measure(&h.SleepNs, func() { time.Sleep(10 * time.Millisecond) })
		h.Sleeps++
	}
	ch := make(chan int)
	go func() {
		time.Sleep(10 * time.Millisecond)
		ch <- 1 // the handler is already parked: this does not park
	}()
	measure(&h.ReceiveNs, func() { <-ch })
	h.Receives++
	// Every park of the handler is one it measures: a contended Lock would park unmeasured,
	// so wait for the lock by yielding (runtime.Gosched does not park).
	for !mu.TryLock() {
		runtime.Gosched()
	}
	byTrace[r.Header.Get("X-Request-Id")] = h
	mu.Unlock()
	fmt.Fprintln(w, "ok")
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func main() {
	n := flag.Int("requests", 60, "requests to send")
	conns := flag.Int("conns", 4, "keep-alive connections")
	panics := flag.Int("panics", 0, "requests, after the others, whose handler panics")
	flag.Parse()
	out := json.NewEncoder(os.Stdout)
	in := bufio.NewReader(os.Stdin)

	mux := http.NewServeMux()
	mux.HandleFunc("/work/", work)
	mux.HandleFunc("/panic/", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		panicGoids[r.Header.Get("X-Request-Id")] = goid()
		mu.Unlock()
		panic("handler failed") // net/http recovers, logs, and closes the connection
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	srv := &http.Server{Handler: mux, ErrorLog: log.New(io.Discard, "", 0)}
	go srv.Serve(ln)
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: *conns, MaxIdleConnsPerHost: *conns}}
	out.Encode(map[string]any{"ready": true, "pid": os.Getpid(), "addr": ln.Addr().String()})
	if _, err := in.ReadString('\n'); err != nil {
		return
	}

	reqs := make([]*sent, *n)
	for i := range reqs {
		s := &sent{Kind: "valid"}
		switch {
		case i%10 == 7:
			s.Kind = "none"
		case i%10 == 8:
			s.Kind = "invalid"
			s.Traceparent = []string{
				"00-" + randomHex(16) + "-" + randomHex(8),         // too short
				"ff-" + randomHex(16) + "-" + randomHex(8) + "-01", // version ff
				"00-00000000000000000000000000000000-" + randomHex(8) + "-01",
				"00-" + strings.ToUpper(randomHex(16)) + "-" + randomHex(8) + "-01",
			}[i%4]
		case i%10 == 9:
			s.Kind = "hostile"
		default:
			s.TraceID, s.ParentSpanID = randomHex(16), randomHex(8)
			s.Traceparent = "00-" + s.TraceID + "-" + s.ParentSpanID + "-01"
		}
		reqs[i] = s
	}
	var wg sync.WaitGroup
	next := make(chan int)
	for c := 0; c < *conns; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				s := reqs[i]
				req, _ := http.NewRequest("GET", "http://"+ln.Addr().String()+"/work/"+strconv.Itoa(i), nil)
				req.Header.Set("X-Request-Id", strconv.Itoa(i))
				req.Header.Set("Cookie", "secret=do-not-leak")
				if s.Traceparent != "" {
					req.Header.Set("Traceparent", s.Traceparent)
				}
				if s.Kind == "hostile" {
					// Many headers, a huge one, binary bytes, duplicate traceparents.
					for k := 0; k < 150; k++ {
						req.Header.Set(fmt.Sprintf("X-Junk-%d", k), strings.Repeat("j", k))
					}
					req.Header.Set("X-Huge", strings.Repeat("h", 8000))
					req.Header.Set("X-Binary", "\x80\xfe\xff\t")
					s.TraceID = randomHex(16) // the first value: what gort reads, if it finds it
					req.Header.Add("Traceparent", "00-"+s.TraceID+"-"+randomHex(8)+"-01")
					req.Header.Add("Traceparent", "garbage")
				}
				resp, err := client.Do(req)
				if err != nil {
					panic(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	for i := range reqs {
		next <- i
	}
	close(next)
	wg.Wait()
	mu.Lock()
	for i, s := range reqs {
		s.Handled = byTrace[strconv.Itoa(i)]
	}
	mu.Unlock()
	// Requests whose handler panics, each on its own connection (net/http closes it).
	type panicked struct {
		TraceID string `json:"trace_id"`
		Goid    int64  `json:"goid"`
	}
	var panicReqs []panicked
	for i := 0; i < *panics; i++ {
		traceID := randomHex(16)
		req, _ := http.NewRequest("GET", "http://"+ln.Addr().String()+"/panic/"+strconv.Itoa(i), nil)
		req.Header.Set("X-Request-Id", "p"+strconv.Itoa(i))
		req.Header.Set("Traceparent", "00-"+traceID+"-"+randomHex(8)+"-01")
		req.Close = true
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			panic("a panicking handler answered")
		}
		mu.Lock()
		panicReqs = append(panicReqs, panicked{TraceID: traceID, Goid: panicGoids["p"+strconv.Itoa(i)]})
		mu.Unlock()
	}
	out.Encode(map[string]any{"requests": reqs, "panicked": panicReqs})
	in.ReadString('\n')
}
