// Command panics panics in known ways, recovers, and reports each panic as Go itself shows
// it (the message recover() returns, as `panic: ` would print it, and the line that
// panicked), then, when told, dies of one more: an unrecovered panic, or a fatal error.
//
// Protocol (stdin/stdout, one JSON object per line): prints {"ready":true,...}, waits for a
// line; makes four panics, each recovered, and prints {"panics":[...]}; then reads one more
// line, "crash error" or "crash deadlock", prints what it is about to do, and dies of it.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
)

type panicked struct {
	Kind     string `json:"kind"`
	Goid     int64  `json:"goid"`
	Message  string `json:"message"`
	Function string `json:"function"`
	File     string `json:"file"`
	Line     int    `json:"line"`
}

func goid() int64 {
	var buf [64]byte
	s := string(buf[:runtime.Stack(buf[:], false)])
	id, _ := strconv.ParseInt(strings.Fields(s)[1], 10, 64)
	return id
}

// next returns where the statement after the call to next is.
func next() (string, string, int) {
	pc, file, line, _ := runtime.Caller(1)
	return runtime.FuncForPC(pc).Name(), file, line + 1
}

var sink int

// message is what `panic: ` prints for a recovered value.
func message(r any) string {
	if e, ok := r.(error); ok {
		return e.Error()
	}
	return fmt.Sprint(r)
}

func try(kind string, f func(p *panicked)) (p panicked) {
	p.Kind = kind
	p.Goid = goid()
	defer func() {
		p.Message = message(recover())
	}()
	f(&p)
	return p
}

func panicString(p *panicked) {
	p.Function, p.File, p.Line = next()
	panic("boom: a string")
}

func panicError(p *panicked) {
	p.Function, p.File, p.Line = next()
	panic(errors.New("boom: an error"))
}

func nilMapWrite(p *panicked) {
	var m map[string]int
	p.Function, p.File, p.Line = next()
	m["key"] = 1
}

func indexOutOfRange(p *panicked) {
	s := []int{1, 2, 3}
	i := len(os.Args) + 4
	p.Function, p.File, p.Line = next()
	sink = s[i]
}

func main() {
	out := json.NewEncoder(os.Stdout)
	in := bufio.NewReader(os.Stdin)
	out.Encode(map[string]any{"ready": true, "pid": os.Getpid()})
	if _, err := in.ReadString('\n'); err != nil {
		return
	}
	report := []panicked{
		try("string", panicString),
		try("error", panicError),
		try("nil map", nilMapWrite),
		try("index", indexOutOfRange),
	}
	out.Encode(map[string]any{"panics": report})
	line, _ := in.ReadString('\n')
	var p panicked
	switch strings.TrimSpace(line) {
	case "crash error":
		p.Kind, p.Goid, p.Message = "error", goid(), "fatal: an error nobody recovers"
		p.Function, p.File, p.Line = "main.crashError", thisFile(), crashErrorLine()
		out.Encode(map[string]any{"crash": p})
		crashError()
	case "crash deadlock":
		p.Kind, p.Goid, p.Message = "deadlock", goid(), "all goroutines are asleep - deadlock!"
		out.Encode(map[string]any{"crash": p})
		select {}
	}
}

func crashError() {
	panic(errors.New("fatal: an error nobody recovers"))
}

func thisFile() string {
	_, file, _, _ := runtime.Caller(0)
	return file
}

// crashErrorLine is the line of the panic in crashError (the line after its func line).
func crashErrorLine() int {
	f := runtime.FuncForPC(funcPC(crashError))
	_, line := f.FileLine(f.Entry())
	return line + 1
}
