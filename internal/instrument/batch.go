package instrument

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/warrenmq/warren/internal/errkind"
)

// StartBatchProcess starts the span of a batch handler's call, as the
// messaging conventions shape batch processing: one "process {queue}" span
// (CONSUMER) with messaging.batch.message_count, linked to the send (or
// create) span of each message, whose context metadata carries. Each
// message keeps its own process span too (its settlement is its own). The
// returned func ends the span with the call's error.
func (t *Instruments) StartBatchProcess(ctx context.Context, queue string, metadata []map[string]string) (context.Context, func(error)) {
	if t.off {
		return ctx, func(error) {}
	}
	links := make([]trace.Link, 0, len(metadata))
	for _, md := range metadata {
		if sc := trace.SpanContextFromContext(t.propagator.Extract(context.Background(), MetadataCarrier(md))); sc.IsValid() {
			links = append(links, trace.Link{SpanContext: sc})
		}
	}
	ctx, span := t.tracer.Start(ctx, "process "+queue, consumerKind, trace.WithLinks(links...), trace.WithAttributes(
		attribute.String("messaging.system", "rabbitmq"),
		attribute.String("messaging.operation.name", "process"),
		attribute.String("messaging.operation.type", "process"),
		attribute.String("messaging.destination.name", queue),
		attribute.String("messaging.consumer.group.name", queue),
		attribute.Int("messaging.batch.message_count", len(metadata)),
	))
	return ctx, func(err error) {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
			span.SetAttributes(attribute.String("error.type", errkind.Type(err)))
		}
		span.End()
	}
}
