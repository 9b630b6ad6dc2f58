// Package redistest starts private redis-server processes for tests: on a
// loopback port, in the test's temporary directory, stopped by pid when
// the test ends.
package redistest
