import MultiprocessingPlatform

/// A named task as a process target: its name, its checks, its encoding, and
/// how to run it in a forked child (no encoding needed there).
struct NamedTaskTarget: @unchecked Sendable {
    let name: String
    let check: () throws(MP.Error) -> Void
    let encode: (DescriptorTable) throws -> [UInt8]
    let runHere: () async throws -> Void

    init<T: MP.NamedTask>(_ task: T) {
        name = T.name
        check = { () throws(MP.Error) in try TaskRegistry.shared.checkSendable(T.self) }
        encode = { table in try WireFormat.encode(task, descriptors: table) }
        runHere = { _ = try await task.run() }
    }
}
