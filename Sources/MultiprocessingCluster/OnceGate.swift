import Foundation

/// True for the first caller only.
final class OnceGate: @unchecked Sendable {
    private let lock = NSLock()
    private var claimed = false

    func claim() -> Bool {
        lock.locked {
            defer { claimed = true }
            return !claimed
        }
    }
}
