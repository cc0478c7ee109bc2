import _CMultiprocessingRuntime
import MultiprocessingPlatform

/// Which build of the program this process is: the executable's GNU build id
/// (a hash the linker writes into every Swift binary on Linux), read from the
/// loaded image, not from disk. A binary without one is identified by a hash
/// of its file instead.
///
/// Named tasks travel in a positional wire format: a process refuses a task
/// from another build rather than misread its arguments.
enum BuildIdentity {
    static let current: String = {
        var bytes = [UInt8](repeating: 0, count: 64)
        let count = bytes.withUnsafeMutableBufferPointer { cmp_executable_build_id($0.baseAddress, $0.count) }
        if count > 0 { return hex(bytes[..<count]) }
        return "file-" + String(fileHash(), radix: 16)
    }()

    private static func hex(_ bytes: ArraySlice<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var text = [UInt8]()
        text.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 15)])
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// FNV-1a over `/proc/self/exe` (only for a binary linked without a build id).
    private static func fileHash() -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        guard let fd = try? Sys.openReadOnly("/proc/self/exe") else { return 0 }
        defer { Sys.close(fd) }
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let count = chunk.withUnsafeMutableBytes { Sys.readSome(fd, into: $0) }
            if count <= 0 { break }
            for byte in chunk[..<count] { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        }
        return hash
    }
}
