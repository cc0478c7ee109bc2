import MultiprocessingPlatform

/// How keyed fields are marked: the key's name and a presence byte before each value.
enum Tag {
    static let present: UInt8 = 1

    /// A keyed field's header: the key's name (at most 255 UTF-8 bytes) and a presence byte.
    static func write(_ key: some CodingKey, present: Bool, into writer: inout ByteWriter) {
        var name = key.stringValue
        name.withUTF8 { utf8 in
            let count = min(utf8.count, 255)
            writer.bytes.append(UInt8(count))
            writer.bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[..<count]))
        }
        writer.bytes.append(present ? 1 : 0)
    }

    /// The name of the keyed field at the reader's position, without moving it.
    static func peekName(_ reader: ByteReader) -> String? {
        guard let count = reader.peekByte().map(Int.init), reader.remaining > count + 1 else { return nil }
        let start = reader.offset + 1
        return String(validating: UnsafeRawBufferPointer(rebasing: reader.base[start..<start + count]), as: UTF8.self)
    }

    /// Whether the field at the reader's position is named `key`.
    static func matches(_ key: some CodingKey, _ reader: ByteReader) -> Bool {
        guard let count = reader.peekByte().map(Int.init), reader.remaining > count + 1 else { return false }
        var name = key.stringValue
        return name.withUTF8 { utf8 in
            let expected = min(utf8.count, 255)
            guard expected == count else { return false }
            return UnsafeRawBufferPointer(rebasing: reader.base[(reader.offset + 1)..<(reader.offset + 1 + count)])
                .elementsEqual(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(utf8)[..<expected]))
        }
    }
}
