// Package rulestest holds the rules engine's behavioural tests, written
// against its exported API only, so that they run against every
// rules.Store: the engine's own maps (package rules' tests) and Redis
// (package fleet's tests). A Store that passes them decides as the
// in-memory engine does.
package rulestest
