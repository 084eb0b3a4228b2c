package main

import "reflect"

// funcPC is the entry PC of a function value.
func funcPC(f any) uintptr {
	return reflect.ValueOf(f).Pointer()
}
