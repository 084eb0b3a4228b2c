module gort.test/micro

go 1.21
