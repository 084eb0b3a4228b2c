module gort.test/spawner

go 1.21
