module gort.test/leaky

go 1.21
