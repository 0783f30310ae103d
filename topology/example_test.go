package topology_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/warrenmq/warren/topology"
)

// Specs are validated before any network call; every problem names its
// field.
func ExampleQueueSpec_Validate() {
	err := topology.QueueSpec{
		Name: "orders",
		Args: topology.QueueArgs{Type: topology.Quorum, MessageTTL: time.Minute, MaxPriority: 300},
	}.Validate()
	fmt.Println(errors.Is(err, topology.ErrInvalidSpec))
	fmt.Println(err)
	// Output:
	// true
	// topology: queue "orders": Args.Type: quorum queues must be durable
	// topology: queue "orders": Args.MaxPriority: 300 outside 1-255
}

// QueueArgs become the x-arguments the broker expects.
func ExampleQueueArgs_Table() {
	t := topology.QueueArgs{MessageTTL: 1500 * time.Millisecond, DeadLetterRoutingKey: "orders.dead"}.Table()
	fmt.Println(t["x-message-ttl"], t["x-dead-letter-exchange"] == "", t["x-dead-letter-routing-key"])
	// Output: 1500 true orders.dead
}
