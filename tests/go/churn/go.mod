module gort.test/churn

go 1.21
