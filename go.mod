module github.com/mailban/mailban

go 1.26.8
