// A connection's (pipes, Listener and Client) kinds of failure, as MP.Error values, one factory each (internal:
// users match the code; tests compare whole values, messages included).
extension MP.Error {
    /// The peer closed its end and every message was read: Python's `EOFError`.
    @usableFromInline
    static var endOfFile: MP.Error { MP.Error(.endOfFile, "end of file: the peer closed its end") }

    /// This end was closed with `close()`.
    @usableFromInline
    static var connectionClosed: MP.Error { MP.Error(.closed, "the connection is closed") }

    /// The peer's end is gone; nothing more can be sent: Python's `BrokenPipeError`.
    @usableFromInline
    static var brokenPipe: MP.Error { MP.Error(.brokenPipe, "broken pipe: the peer's end is closed") }

    /// This end cannot do that (a one-way pipe's reading end cannot send).
    @usableFromInline
    static func wrongDirection(_ what: String) -> MP.Error {
        MP.Error(.invalidState, what)
    }

    /// A frame over the size limit. A received one was skipped: the connection stays usable.
    @usableFromInline
    static func messageTooLarge(size: Int, limit: Int) -> MP.Error {
        MP.Error(.tooLarge, "message of \(size) bytes exceeds the limit of \(limit) bytes")
    }

    /// The stream ended in the middle of a frame.
    @usableFromInline
    static func truncatedFrame(expected: Int, received: Int) -> MP.Error {
        MP.Error(.malformed, "stream ended inside a frame: \(received) of \(expected) bytes")
    }

    /// The bytes on the connection are not frames (garbage, or a peer that is not this library).
    /// The connection cannot find the next frame and is unusable.
    @usableFromInline
    static func corruptStream(_ why: String) -> MP.Error {
        MP.Error(.malformed, "corrupt stream: \(why)")
    }

    /// The message was sent as another type; it was consumed.
    @usableFromInline
    static func typeMismatch(expected: String) -> MP.Error {
        MP.Error(.typeMismatch, "message was sent as another type than \(expected)")
    }

    /// The message was sent with another method (`send`, `sendBytes` or `sendBitwise`).
    @usableFromInline
    static func kindMismatch(sent: String, expected: String) -> MP.Error {
        MP.Error(.typeMismatch, "message was sent with \(sent); receive it with \(expected)")
    }

    /// The authentication handshake failed (a wrong key, a peer that
    /// does not follow the protocol, a digest not accepted): Python's
    /// `multiprocessing.AuthenticationError`. The connection is closed.
    @usableFromInline
    static func authentication(_ why: String) -> MP.Error {
        MP.Error(.authentication, "authentication failed: \(why)")
    }

    /// The peer did not finish the handshake in time: Python's `TimeoutError`.
    @usableFromInline
    static var timeout: MP.Error { MP.Error(.timeout, "timed out") }

    /// The address cannot be used (a name that does not resolve, a path too long).
    @usableFromInline
    static func address(_ why: String) -> MP.Error {
        MP.Error(.address, "bad address: \(why)")
    }

    /// A pickled message could not be read as the requested type, or the
    /// value could not be pickled (a connection whose ``MP/Connection/codec``
    /// is `.pickle`); the message was consumed, or nothing was sent.
    @usableFromInline
    static func pickle(_ error: MP.Error) -> MP.Error {
        error
    }

    /// Python's `BufferTooShort`: the message did not fit the buffer given
    /// to `recvBytes(into:offset:)`. It carries the whole
    /// message: nothing is lost.
    @usableFromInline
    static func bufferTooShort(_ message: [UInt8]) -> MP.Error {
        MP.Error(.bufferTooShort, "the buffer is too short for the message of \(message.count) bytes (the error carries it)", bytes: message)
    }
}
