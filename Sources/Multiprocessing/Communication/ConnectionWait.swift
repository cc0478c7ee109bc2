import Glibc
import MultiprocessingPlatform

extension MP {
    /// Python's `multiprocessing.connection.wait(object_list, timeout)` for
    /// descriptors such as ``MP/Process/sentinel``: blocks until at least one is
    /// readable or `timeout` seconds pass, and returns the readable ones.
    public static func wait(for descriptors: [Int32], timeout: Double? = nil) throws -> [Int32] {
        let deadline = try Deadline.after(timeout) { MP.Error.negativeTimeout($0) }
        if descriptors.isEmpty { return [] }
        return try Sys.pollReadable(descriptors, until: deadline)
    }
}
