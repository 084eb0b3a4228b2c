module gort.test/parks

go 1.21
