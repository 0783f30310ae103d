package topology

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Target is a RabbitMQ version that specs are checked against
// (ValidateFor): what a version refuses, or does differently, is an error
// before anything reaches it. The zero Target checks nothing beyond
// Validate.
type Target struct{ Major, Minor int }

// The versions warren knows the rules of. warren's own tests run against
// 3.10; the 4.x rules come from the release notes each names.
var (
	RabbitMQ310 = Target{3, 10}
	RabbitMQ312 = Target{3, 12}
	RabbitMQ313 = Target{3, 13}
	RabbitMQ40  = Target{4, 0}
	RabbitMQ43  = Target{4, 3}
)

func (t Target) String() string { return fmt.Sprintf("RabbitMQ %d.%d", t.Major, t.Minor) }

// ParseTarget reads a version as "4.3" or as a broker reports it
// ("3.10.7", "4.1.0-rc.1", "3.13.7+1.g5bc9ea8"): its major and minor.
// ok is false for anything else (an empty string, a version before 3).
func ParseTarget(version string) (t Target, ok bool) {
	major, rest, found := strings.Cut(version, ".")
	if !found {
		return Target{}, false
	}
	minor := rest
	if i := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		minor = rest[:i]
	}
	var err1, err2 error
	t.Major, err1 = strconv.Atoi(major)
	t.Minor, err2 = strconv.Atoi(minor)
	if err1 != nil || err2 != nil || t.Major < 3 {
		return Target{}, false
	}
	return t, true
}

// atLeast reports whether t is v or later.
func (t Target) atLeast(v Target) bool {
	return t.Major > v.Major || (t.Major == v.Major && t.Minor >= v.Minor)
}

// ValidateFor is Validate, then the rules of target.
func (s QueueSpec) ValidateFor(target Target) error {
	errs := []error{s.Validate()}
	if target.Major == 0 { // no target
		return errors.Join(errs...)
	}
	spec := s.String()
	bad := func(field, reason string) { errs = append(errs, &SpecError{Spec: spec, Field: field, Reason: reason}) }
	a := s.Args
	if target.atLeast(RabbitMQ43) {
		// Release notes 4.3.0, "Deprecated Features are Now Disabled by
		// Default": transient_nonexcl_queues is denied by default.
		if !s.Durable && !s.Exclusive && s.Name != "" {
			bad("Durable", "RabbitMQ 4.3 refuses non-durable non-exclusive queues by default (deprecated feature transient_nonexcl_queues): make it durable (with Args.Expires to clean it up), or exclusive")
		}
		// Release notes 4.3.0, "Classic Queues v1 Storage (CQv1) is
		// Removed": x-queue-mode (any value) and x-queue-version 1 fail.
		if a.QueueMode != "" {
			bad("Args.QueueMode", "RabbitMQ 4.3 refuses x-queue-mode (CQv1 was removed); leave it empty")
		}
		if v, ok := a.Extra["x-queue-version"]; ok && fmt.Sprint(v) == "1" {
			bad("Args.Extra", "RabbitMQ 4.3 refuses x-queue-version 1 (CQv1 was removed)")
		}
		// Release notes 4.3.0, "Deprecated Features": queue_master_locator
		// is denied by default; 4.0.1 deprecated it for
		// queue_leader_locator.
		if _, ok := a.Extra["x-queue-master-locator"]; ok {
			bad("Args.Extra", "RabbitMQ 4.3 refuses x-queue-master-locator by default; use Args.LeaderLocator (x-queue-leader-locator)")
		}
	}
	if !target.atLeast(RabbitMQ40) && a.DeliveryLimit == -1 {
		// Release notes 4.0.1, "Quorum Queues Now Have a Default
		// Redelivery Limit": 20 by default, -1 disables it.
		bad("Args.DeliveryLimit", fmt.Sprintf("-1 (no limit) is RabbitMQ 4.0's; %s has no limit unless one is set: leave it 0", target))
	}
	if !target.atLeast(RabbitMQ312) && a.ConsumerTimeout > 0 {
		bad("Args.ConsumerTimeout", fmt.Sprintf("x-consumer-timeout as a queue argument needs RabbitMQ 3.12; %s ignores it", target))
	}
	if !target.atLeast(RabbitMQ313) && a.StreamFilterSizeBytes > 0 {
		bad("Args.StreamFilterSizeBytes", fmt.Sprintf("stream filtering needs RabbitMQ 3.13; %s refuses x-stream-filter-size-bytes", target))
	}
	return errors.Join(errs...)
}

// ValidateFor is Validate with the rules of target for every spec.
func (t Topology) ValidateFor(target Target) error {
	errs := []error{}
	for _, s := range t.Exchanges {
		errs = append(errs, s.Validate())
	}
	for _, s := range t.Queues {
		errs = append(errs, s.ValidateFor(target))
	}
	for _, s := range t.Bindings {
		errs = append(errs, s.Validate())
	}
	return errors.Join(errs...)
}

// Warnings are what is valid for target but likely not what was meant.
func (s QueueSpec) Warnings(target Target) []string {
	var out []string
	if s.Args.Type == Quorum && !s.HasDeadLetter() {
		limit := "a delivery limit you set"
		if target.atLeast(RabbitMQ40) && s.Args.DeliveryLimit == 0 {
			limit = "the default delivery limit (20 since RabbitMQ 4.0)"
		}
		if s.Args.DeliveryLimit > 0 || (target.atLeast(RabbitMQ40) && s.Args.DeliveryLimit == 0) {
			out = append(out, fmt.Sprintf("quorum queue %q has no dead-letter target: messages past %s are dropped", s.Name, limit))
		}
	}
	return out
}
