// Command tiny is the seed of the gobinary fuzz target: a small Go program whose binary
// holds what gort reads (build info, .gopclntab, DWARF, goroutines that park).
package main

import (
	"fmt"
	"time"
)

func main() {
	c := make(chan int)
	go func() { c <- 1 }()
	select {
	case v := <-c:
		fmt.Println(v)
	case <-time.After(time.Second):
	}
}
