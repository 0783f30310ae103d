package broker

// ConsumerCount is how many consumers r would restore.
func ConsumerCount(r *Registry) int { return len(r.consumerList()) }
