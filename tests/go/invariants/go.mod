module invariants

go 1.21
