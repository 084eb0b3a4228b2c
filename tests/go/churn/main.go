// Command churn is the target of gort's churn test: a program that knows exactly how many
// times it sleeps (each time.Sleep parks its goroutine once, reason "sleep"), and that can
// start itself anew on the same pid (exec) or end quickly.
//
// It prints {"ready":true,"pid":N,"generation":G}, waits for a line on stdin (unless
// -nowait), sleeps -sleeps times for -sleep each, prints {"slept":N,"generation":G}; then,
// with -exec-sleeps M, execs itself with -sleeps M (generation G+1, same pid, same stdin and
// stdout); otherwise, with -hold, waits for stdin to close; then exits.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"syscall"
	"time"
)

func main() {
	sleeps := flag.Int("sleeps", 10, "how many times to sleep")
	sleep := flag.Duration("sleep", time.Millisecond, "each sleep")
	execSleeps := flag.Int("exec-sleeps", 0, "then exec itself to sleep this many times")
	generation := flag.Int("generation", 1, "how many programs this pid has run")
	nowait := flag.Bool("nowait", false, "start at once")
	hold := flag.Bool("hold", false, "at the end, wait for stdin to close")
	flag.Parse()
	out := json.NewEncoder(os.Stdout)
	in := bufio.NewReader(os.Stdin)
	out.Encode(map[string]any{"ready": true, "pid": os.Getpid(), "generation": *generation})
	if !*nowait {
		if _, err := in.ReadString('\n'); err != nil {
			return
		}
	}
	for i := 0; i < *sleeps; i++ {
		time.Sleep(*sleep)
	}
	out.Encode(map[string]any{"slept": *sleeps, "generation": *generation})
	if *execSleeps > 0 {
		if _, err := in.ReadString('\n'); err != nil {
			return
		}
		exe, err := os.Executable()
		if err != nil {
			panic(err)
		}
		args := []string{os.Args[0], fmt.Sprintf("-sleeps=%d", *execSleeps),
			fmt.Sprintf("-sleep=%s", *sleep), fmt.Sprintf("-generation=%d", *generation+1)}
		if *hold {
			args = append(args, "-hold")
		}
		panic(syscall.Exec(exe, args, os.Environ()))
	}
	if *hold {
		in.ReadString('\n')
	}
}
