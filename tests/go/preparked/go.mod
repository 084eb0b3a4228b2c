module gort.test/preparked

go 1.21
