// Package enforcers holds the enforcers that apply mailban's decisions
// outside the process: enforcers/dryrun logs them, later ones put addresses
// into kernel sets or answer mail servers that ask. Each enforcer lives in its
// own sub-package and takes only standard-library types, so that it can be
// understood, tested and replaced on its own.
package enforcers
