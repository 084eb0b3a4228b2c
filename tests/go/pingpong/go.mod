module gort.test/pingpong

go 1.21
