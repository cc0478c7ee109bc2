import Tracing

/// The span of one order sent to another process (a pool's task or chunk,
/// a manager's call, a cluster row), and the fields that carry it there.
///
/// ``begin(_:kind:)`` is the only cost a submission pays when there is no
/// trace: one read of the task-local `ServiceContext.current`.
package struct TaskSpan: @unchecked Sendable {
    /// The span in this process; nil when there is no tracer here, only fields to pass on.
    package let span: (any Span)?
    /// What goes with the order.
    package let headers: MP.TraceHeaders

    /// Starts the span of an order named `name`, a child of the current
    /// context; nil when the submission is outside any trace.
    @inline(__always)
    package static func begin(_ name: @autoclosure () -> String, kind: SpanKind) -> TaskSpan? {
        guard let context = ServiceContext.current else { return nil }
        return begin(name(), kind: kind, in: context)
    }

    package static func begin(_ name: String, kind: SpanKind, in context: ServiceContext,
                              tracer: any Tracer = InstrumentationSystem.tracer) -> TaskSpan? {
        let inherited = context[TraceHeadersKey.self]
        if tracer is NoOpTracer {
            // No tracer here (a worker started by spawn): carry the trace on as it came.
            return inherited.map { TaskSpan(span: nil, headers: $0) }
        }
        let span = tracer.startSpan(name, context: context, ofKind: kind)
        var fields: [String: String] = [:]
        tracer.inject(span.context, into: &fields, using: FieldsInjector())
        if fields.isEmpty, let inherited { fields = inherited.fields }
        return TaskSpan(span: span, headers: MP.TraceHeaders(fields: fields))
    }

    /// The context work done for this order runs in: the span's, with its fields.
    package var context: ServiceContext {
        var context = span?.context ?? headers.context
        context[TraceHeadersKey.self] = headers
        return context
    }

    /// Ends the span: `error` recorded when the order failed; `attributes` set first.
    package func end(error: (any Swift.Error)? = nil, _ attributes: (inout SpanAttributes) -> Void = { _ in }) {
        guard let span else { return }
        span.updateAttributes(attributes)
        if let error {
            span.recordError(error)
            span.setStatus(SpanStatus(code: .error))
        }
        span.end()
    }

    /// The fields as bytes for an order: the header lines in UTF-8.
    package var encoded: [UInt8] { Swift.Array(headers.description.utf8) }

    /// Fields read back from ``encoded``; nil when they do not parse.
    package static func decode(_ bytes: some Collection<UInt8>) -> MP.TraceHeaders? {
        MP.TraceHeaders(headerLines: String(decoding: bytes, as: UTF8.self))
    }
}
