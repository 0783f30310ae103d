package instrument

// headerCarrier lets a propagator read and write AMQP headers (string
// values; the W3C headers are strings).
type headerCarrier map[string]any

func (c headerCarrier) Get(key string) string {
	switch v := c[key].(type) {
	case string:
		return v
	case []byte:
		return string(v)
	}
	return ""
}

func (c headerCarrier) Set(key, value string) { c[key] = value }

func (c headerCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// lazyHeaderCarrier writes AMQP headers through a pointer, making the
// table on the first write: a message without headers gets none unless
// there is trace context to carry.
type lazyHeaderCarrier struct{ h *map[string]any }

func (c lazyHeaderCarrier) Get(key string) string { return headerCarrier(*c.h).Get(key) }
func (c lazyHeaderCarrier) Set(key, value string) {
	if *c.h == nil {
		*c.h = map[string]any{}
	}
	(*c.h)[key] = value
}
func (c lazyHeaderCarrier) Keys() []string { return headerCarrier(*c.h).Keys() }

// MetadataCarrier lets a propagator read and write Watermill metadata (for
// messages that did not come from a warren Subscriber).
type MetadataCarrier map[string]string

func (c MetadataCarrier) Get(key string) string { return c[key] }
func (c MetadataCarrier) Set(key, value string) { c[key] = value }
func (c MetadataCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}
