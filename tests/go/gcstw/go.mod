module gort.test/gcstw

go 1.21
