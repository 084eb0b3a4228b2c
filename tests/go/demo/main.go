// Command demo is a small shop service that blocks the way real services do, and loads
// itself so there is always something to see: a contended mutex (/checkout), a worker pool
// behind a channel (/inventory), a slow dependency (/recommend), and its own HTTP clients
// (IO wait on both sides).
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand"
	"net"
	"net/http"
	"sync"
	"time"
)

var (
	clients = flag.Int("clients", 4, "self-load client goroutines (0: none)")
	addr    = flag.String("listen", "127.0.0.1:0", "listen address")
)

var (
	cartMu sync.Mutex // one lock for every cart: contended under load
	stock  = map[string]int{"gopher": 100}
)

type stockQuery struct {
	item  string
	reply chan int
}

var inventory = make(chan stockQuery)

func inventoryWorker() {
	for q := range inventory {
		time.Sleep(2 * time.Millisecond) // a database round trip
		q.reply <- 42
	}
}

func checkout(w http.ResponseWriter, r *http.Request) {
	cartMu.Lock()
	time.Sleep(3 * time.Millisecond) // work under the lock
	stock["gopher"]--
	cartMu.Unlock()
	fmt.Fprintln(w, "ok")
}

func inventoryHandler(w http.ResponseWriter, r *http.Request) {
	q := stockQuery{item: "gopher", reply: make(chan int)}
	inventory <- q
	fmt.Fprintln(w, <-q.reply)
}

func recommend(w http.ResponseWriter, r *http.Request) {
	time.Sleep(time.Duration(5+rand.Intn(20)) * time.Millisecond) // a slow dependency
	fmt.Fprintln(w, "gopher plush")
}

func main() {
	flag.Parse()
	for i := 0; i < 2; i++ {
		go inventoryWorker()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/checkout", checkout)
	mux.HandleFunc("/inventory", inventoryHandler)
	mux.HandleFunc("/recommend", recommend)
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("demo shop listening on http://%s\n", ln.Addr())
	for i := 0; i < *clients; i++ {
		go client(ln.Addr().String())
	}
	log.Fatal(http.Serve(ln, mux))
}

func client(addr string) {
	paths := []string{"/checkout", "/inventory", "/recommend"}
	c := &http.Client{Timeout: 5 * time.Second}
	for i := 0; ; i++ {
		resp, err := c.Get("http://" + addr + paths[i%len(paths)])
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		time.Sleep(time.Duration(rand.Intn(5)) * time.Millisecond)
	}
}
