// Package ack says what happens to a delivery: dispositions (ack, requeue,
// reject to the dead-letter exchange), error kinds and delivery information.
package ack
