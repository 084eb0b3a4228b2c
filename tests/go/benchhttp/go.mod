module benchhttp

go 1.21
