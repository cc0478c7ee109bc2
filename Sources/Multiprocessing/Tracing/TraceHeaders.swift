import Tracing

extension MP {
    /// The trace context that travels with a task to the process that runs it.
    ///
    /// When a task is submitted inside a span (swift-distributed-tracing's
    /// `withSpan`), the pool, the manager's proxy and the cluster pool start a
    /// child span for it and send that span's context with the order, as the
    /// fields the bootstrapped tracer injects: `traceparent` and `tracestate`
    /// in the W3C form for an OpenTelemetry tracer. The process that runs the
    /// task runs it with `ServiceContext.current` set to that context, so a
    /// span the task starts is a child of the task's span, and a task it
    /// submits in turn carries the trace on. A worker without a tracer of its
    /// own (one started by spawn or forkserver, which runs no `main`) still
    /// sees the fields here, and passes them on unchanged.
    ///
    /// With no tracer bootstrapped and no span around a submission, nothing
    /// is sent and nothing is started.
    ///
    /// ```swift
    /// struct Work: MP.NamedTask {
    ///     func run() -> String { MP.TraceHeaders.current?.traceparent ?? "untraced" }
    /// }
    /// ```
    public struct TraceHeaders: Sendable, Hashable, CustomStringConvertible {
        /// The propagated fields by name, as the tracer injected them.
        public var fields: [String: String]

        /// Fields as a tracer injects them.
        public init(fields: [String: String]) { self.fields = fields }

        /// The W3C `traceparent` field (`00-<trace id>-<span id>-<flags>`), when the tracer propagates in that form.
        public var traceparent: String? { fields["traceparent"] }

        /// The fields the task running in this process was submitted with, or nil when it carried none.
        public static var current: TraceHeaders? { ServiceContext.current?[TraceHeadersKey.self] }

        /// The fields as HTTP-style header lines (`name: value`, one a line, sorted by name):
        /// the form the cluster stores in its rows.
        public var description: String {
            fields.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: "\n")
        }

        /// Parses ``description``'s form; nil when a line is not `name: value` or a name is empty.
        public init?(headerLines: String) {
            var fields: [String: String] = [:]
            for line in headerLines.split(separator: "\n", omittingEmptySubsequences: true) {
                guard let colon = line.firstIndex(of: ":") else { return nil }
                let name = line[..<colon]
                guard !name.isEmpty, !name.contains(" ") else { return nil }
                var value = line[line.index(after: colon)...]
                while value.first == " " { value = value.dropFirst() }
                fields[String(name)] = String(value)
            }
            guard !fields.isEmpty else { return nil }
            self.fields = fields
        }

        /// The context a process runs a task in: these fields, and what the
        /// process's own tracer extracts from them.
        package var context: ServiceContext { context(using: InstrumentationSystem.instrument) }

        package func context(using instrument: any Instrument) -> ServiceContext {
            var context = ServiceContext.topLevel
            context[TraceHeadersKey.self] = self
            instrument.extract(fields, into: &context, using: FieldsExtractor())
            return context
        }
    }
}

/// Where ``MP/TraceHeaders`` sit in a `ServiceContext`.
enum TraceHeadersKey: ServiceContextKey {
    typealias Value = MP.TraceHeaders
    static var nameOverride: String? { "mp-trace-headers" }
}

struct FieldsExtractor: Extractor {
    func extract(key: String, from carrier: [String: String]) -> String? { carrier[key] }
}

struct FieldsInjector: Injector {
    func inject(_ value: String, forKey key: String, into carrier: inout [String: String]) { carrier[key] = value }
}
