module gort.test/lifecycle

go 1.21
