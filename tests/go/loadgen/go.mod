module gort.test/loadgen

go 1.21
