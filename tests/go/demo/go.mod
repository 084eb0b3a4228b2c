module gort.test/demo

go 1.21
