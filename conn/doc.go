// Package conn owns one logical AMQP connection to RabbitMQ that survives
// whatever the network or the broker does.
//
// A [Conn] is made by [New] (which only checks the URL and [Config]) and
// connected by [Conn.Open]. From then on it keeps itself connected: when the
// connection is lost it reconnects by its retry policy, runs every restore
// hook on the new connection, and only then releases the callers waiting in
// [Conn.WaitConnected], [Conn.Channel] or [Conn.NewChannel]. [Conn.Close]
// ends it for good.
//
// # States
//
// Initial, Connecting, Reconnecting, Connected, Refreshing, Closing, Closed.
// Closing and Closed are terminal: Open after Close returns [ErrClosed], and
// a dial that completes after Close is closed, never used. Giving up (the
// retry policy exhausted, or an error it does not retry, such as a wrong
// password) also ends in Closed, with the cause in [Conn.Err] and in the last
// [StateChange]. Changes reach callbacks registered with
// [Conn.OnStateChange] in order, on one goroutine owned by the connection: a
// slow or panicking callback never stalls reconnecting.
//
// # Reconnection
//
// [Config.FirstConnect] governs Open (default: one attempt, so a wrong URL
// fails fast) and [Config.Reconnect] everything after (default: forever, the
// first retry immediate, then exponential backoff with jitter capped at 5s).
// A [RetryPolicy] is attempts spaced by a retry.Backoff, bounded by count or
// time, with a filter deciding what is retryable (the default refuses a login
// the broker refused with 403 ACCESS_REFUSED or 530 NOT_ALLOWED, but retries
// a reached connection limit, [ErrConnectionLimit], and a connection lost
// during a restore hook); a login no node offers a mechanism for ends the
// retries whatever the filter says (below, "Logging in"). Several
// hosts (amqp://u:p@h1,h2,h3/vhost, or [Config.AlternateURLs]) are tried in
// turn, each failed attempt moving to the next. Heartbeats (default 10s)
// notice half-open TCP connections.
//
// # Logging in
//
// A connection logs in with PLAIN and the URL's user and password, or a
// [CredentialsProvider]'s. The URL's auth_mechanism names others, in the
// order of preference: amqplain, or external, the TLS client certificate
// (RabbitMQ's rabbitmq_auth_mechanism_ssl plugin; the user is the one the
// certificate names, and no password is sent). New refuses external without
// amqps and a client certificate. A broker that offers none of the URL's
// mechanisms (it offers EXTERNAL only to a client that presented a
// certificate it verified) refuses the login as an [AuthError]; the retries
// end once every node of the URL has refused so (a node's plugins and
// auth_mechanisms are its own: another may offer them).
//
// # Channels and generations
//
// Every underlying connection is a generation; every [Channel] knows its
// generation and has a Done channel that fires when the channel or its
// connection dies. Delivery tags are per channel, so an ack for a delivery of
// an older generation must be dropped, never sent on a new channel.
// [Conn.Channel] returns a cached channel for short calls (declares, deletes)
// and replaces it when the server closes it (404, 406) without reconnecting;
// [Conn.NewChannel] opens one of the caller's own. [Channel.LostWith] tells
// whether an error from a call means the connection is gone (amqp091 reports
// a failed socket write before it marks the connection closed).
//
// amqp091-go's calls have no timeout. Every AMQP method of [Channel] takes a
// ctx and is bounded by it and by [Config.OperationTimeout]; a call that
// outlives its bound closes the channel (the broker may still apply it
// later), and a channel open or close that times out marks the connection
// broken. Confirm mode and amqp091's Notify* registrations are not handed
// out: an unread notification channel blocks amqp091's reader, and with it
// the whole connection (PITFALLS 1).
//
// # Restore hooks
//
// [Conn.OnRestore] registers a function run on every new connection
// before waiting callers are released; the broker's registry uses it so that
// nobody publishes into an exchange that is not there yet. A hook's ctx is
// bound to the new connection: Channel and NewChannel called with it do not
// wait for Connected.
//
// # Blocked connections
//
// During a memory or disk alarm the broker blocks publishing connections; a
// write then blocks inside the socket, where no context reaches it.
// [Conn.Blocked] and [Conn.WaitUnblocked] let writers wait (or fail with
// [ErrBlocked] when their ctx ends) before writing. Every new connection
// starts unblocked.
//
// # Writes
//
// amqp091-go makes one socket write per publish, ack or heartbeat, each
// under the connection's send lock. By default a Conn coalesces them: a
// write only hands its bytes to one flusher goroutine, which sends whatever
// accumulated while its previous write was in the kernel. Idle, nothing
// waits; under load many frames leave in one write, and the broker receives
// concurrent publishes together and confirms them after one disk sync. At
// most 256 KiB wait, so a broker that stops reading still stops writers.
// [Config.DirectWrites] restores amqp091-go's own behaviour.
//
// Either way, nothing leaves on a channel after the client has closed it or
// answered the broker's close, until that channel is opened again.
// amqp091-go can let such a frame out when a send on the channel races the
// broker's close (a NoWait declaration, say), and the broker closes the
// whole connection for it (504 CHANNEL_ERROR "expected 'channel.open'").
// That is also why a Conn does the TLS handshake of an amqps host itself:
// the frames must be seen before they are encrypted.
//
// # Sharing
//
// [Shared] hands out reference-counted handles on one connection per URL and
// options; the last handle to close closes it.
//
// # What the layers above borrow
//
// Confirmed publishing, the registry and the consumers are package broker's.
// What it needs of a connection and no user does (one object per
// connection, goroutines the connection's Close waits for, whether a ctx is
// a restore hook's, the raw channel for confirm mode) is lent through an
// internal package, not exported here.
//
// # Concurrency
//
// Every method of Conn and SharedConn is safe for concurrent use. A caller's
// ctx bounds only that caller's wait, never shared work such as a reconnect.
// Close waits for every goroutine the connection started. Credentials never
// appear in logs, errors or String.
package conn
