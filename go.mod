module github.com/mailban/mailban

go 1.26.8

require (
	github.com/fsnotify/fsnotify v1.6.0 // indirect
	github.com/nxadm/tail v1.4.11 // indirect
	go.etcd.io/bbolt v1.5.0 // indirect
	golang.org/x/sys v0.45.0 // indirect
	gopkg.in/tomb.v1 v1.0.0-20141024135613-dd632973f1e7 // indirect
	gopkg.in/yaml.v3 v3.0.1 // indirect
)
