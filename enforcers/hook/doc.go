// Package hook is the one place mail servers ask "may this address, or this
// login from this address, go on?", answered from the rules engine in well
// under a millisecond, over mailban's own line protocol and over the
// protocols mail software already speaks: Postfix policy delegation,
// Dovecot's auth policy, nginx's mail auth_http and the milter protocol
// (Postfix, Sendmail, Stalwart). It also feeds the failures and successes
// those servers report back into the pipeline, and streams ban and lock
// changes to servers that keep their own list.
//
// A Server is an agent enforcer: Apply publishes each batch of decisions to
// WATCH subscribers; refusals themselves are answered live from the engine,
// so a ban is in force at the hook the moment the rules decide it.
//
// Every protocol is bounded: line length, request size, idle and request
// timeouts, connection age and a cap on concurrent connections per
// listener. A malformed request gets a protocol-level error or a closed
// connection, never a panic and never an effect on another client. Where
// the mail server can be told to carry on without mailban (Postfix's
// default_action and milter_default_action, Dovecot's default of allowing
// when the policy server fails), the documented configuration does so.
package hook
