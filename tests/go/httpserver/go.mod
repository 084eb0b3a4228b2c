module gort.test/httpserver

// go 1.22: the ServeMux of Go 1.22+ patterns (a go.mod saying 1.21 keeps httpmuxgo121=1).
go 1.22
