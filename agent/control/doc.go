// Package control is mailban's control socket: HTTP with JSON on a unix
// socket that only root (or one named group) can open, the server the agent
// runs on it, and the client the CLI speaks it with.
package control
