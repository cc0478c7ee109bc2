/// The messages between an ``MP/ActorSystem`` and a host, each one message
/// of an authenticated ``MP/Connection``; the first byte says what it is.
/// Both ends are the same build (the hello checks it), so the layout is
/// private to it.
///
/// Client to host: ``Request``. Host to client: a reply,
/// `[u64 call][u8 status][payload]`; a hold sends none.
enum ActorFrames {
    enum Request: UInt8 {
        /// `[build]`: the first message; the reply's payload is `[u64 incarnation]`.
        case hello = 1
        /// `[u64 call][u64 actor][target][u32 n][n × generic type name][u32 m][m × argument]`.
        case call = 2
        /// `[u64 call][actor type's mangled name]`: the reply's payload is `[u64 actor]`.
        case place = 3
        /// `[u64 actor]`: this process holds a reference (no reply).
        case hold = 4
        /// `[u64 call][u64 actor]`: this process holds it no more.
        case release = 5
        /// `[u64 call]`: the reply's payload is `[u64 actors hosted]`.
        case count = 6
    }

    enum Status: UInt8 {
        /// The payload: the result in the wire format (empty for `Void`).
        case ok = 0
        /// `[type][description]`: the function threw.
        case threw = 1
        /// `[code][message]`: the library's error (no such actor, undecodable arguments).
        case failed = 2
    }
}
