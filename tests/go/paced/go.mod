module gort.test/paced

go 1.21
