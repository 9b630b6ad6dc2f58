// Package netnstest gives tests network namespaces of their own, so that
// they can change firewalls and send real packets without touching the
// host's: each namespace is deleted when its test ends.
package netnstest
