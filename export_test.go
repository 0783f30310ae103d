package warren

// Hooks for the external tests.

func (c *SubscriberConfig) ValidateWithDefaults() error { c.setDefaults(); return c.Validate() }
func (c *PublisherConfig) ValidateWithDefaults() error  { c.setDefaults(); return c.Validate() }
