// Package payload transforms message bodies between the handler and the
// wire: compression, encryption with rotating keys, and a claim check for
// bodies too large for the broker. It is a warren.Marshaler that wraps
// another (NewMarshaler), so it is configured once per Publisher,
// Subscriber or route (its Marshaler) and applies to everything that
// marshaler encodes: a route's delayed retries and dead letters are encoded
// like its messages (a dead letter of an encrypted message stays
// encrypted, and is replayable as it is), and handlers see the original
// body.
//
// The order is fixed: compress, then encrypt, then check the claim; a
// delivery is decoded in reverse. Each step writes what it did into the
// message's AMQP properties, so a consumer knows what to undo:
//
//   - compression: content-encoding "gzip" (the AMQP property other clients
//     read), above Compression.Threshold bytes;
//   - encryption: headers warren-encryption ("aes-256-gcm") and
//     warren-key-id; the body is nonce and ciphertext. Headers and
//     properties stay in the clear: put nothing secret in them;
//   - claim check: header warren-claim-check (the blob's id in the store)
//     and warren-claim-size; the body is empty.
//
// A delivery this marshaler cannot decode (an encoding it does not know, a
// key it is not given, a blob that is gone, a body that does not
// authenticate) is a typed, permanent error: the Subscriber treats it as
// poison (dead-lettered once, as it is, never retried in a loop), and
// `warren dlq show` says what it is instead of printing ciphertext.
package payload
