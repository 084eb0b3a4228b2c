module gort.test/panics

go 1.21
