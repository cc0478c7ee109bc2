import Distributed
import MultiprocessingPlatform

extension MP {
    /// Records a `distributed func` call's generic substitutions and
    /// arguments in the library's wire format (Swift calls it; users do not).
    public struct ActorInvocationEncoder: DistributedTargetInvocationEncoder {
        public typealias SerializationRequirement = Codable
        var generics: [String] = []
        var arguments: [[UInt8]] = []
        /// The first argument that did not encode: the call throws it, sending nothing.
        var failure: MP.Error?

        public mutating func recordGenericSubstitution<T>(_ type: T.Type) throws {
            guard let name = _mangledTypeName(T.self) else {
                throw MP.Error.encodingFailed(type: "\(T.self)", reason: "the type has no mangled name to send")
            }
            generics.append(name)
        }

        public mutating func recordArgument<Value: Codable>(_ argument: RemoteCallArgument<Value>) throws {
            do throws(MP.Error) {
                arguments.append(try WireFormat.encode(argument.value))
            } catch {
                failure = failure ?? error
                throw error
            }
        }

        public mutating func recordReturnType<R: Codable>(_ type: R.Type) throws {}
        public mutating func recordErrorType<E: Swift.Error>(_ type: E.Type) throws {}
        public mutating func doneRecording() throws {}
    }

    /// Reads a call's generic substitutions and arguments in the host.
    public struct ActorInvocationDecoder: DistributedTargetInvocationDecoder {
        public typealias SerializationRequirement = Codable
        let generics: [String]
        let arguments: [[UInt8]]
        var next = 0

        public mutating func decodeGenericSubstitutions() throws -> [Any.Type] {
            try generics.map { name in
                guard let type = _typeByName(name) else {
                    throw MP.Error.malformed(type: "actor call", reason: "no type \(name) in this build")
                }
                return type
            }
        }

        public mutating func decodeNextArgument<Argument: Codable>() throws -> Argument {
            guard next < arguments.count else {
                throw MP.Error.malformed(type: "actor call", reason: "\(arguments.count) argument(s) sent, more asked for")
            }
            defer { next += 1 }
            return try ActorWire.decode(Argument.self, from: arguments[next])
        }

        public mutating func decodeErrorType() throws -> Any.Type? { nil }
        public mutating func decodeReturnType() throws -> Any.Type? { nil }
    }

    /// Takes what a `distributed func` returned or threw in the host, for the reply.
    public final class ActorResultHandler: DistributedTargetInvocationResultHandler, @unchecked Sendable {
        public typealias SerializationRequirement = Codable
        /// `[status][payload]` of the reply.
        var reply: [UInt8] = [ActorFrames.Status.ok.rawValue]

        public func onReturn<Success: Codable>(value: Success) async throws {
            do throws(MP.Error) {
                reply = [ActorFrames.Status.ok.rawValue] + (try WireFormat.encode(value))
            } catch {
                failed(error)
            }
        }

        public func onReturnVoid() async throws {
            reply = [ActorFrames.Status.ok.rawValue]
        }

        public func onThrow<Err: Swift.Error>(error: Err) async throws {
            var writer = ByteWriter()
            writer.write(ActorFrames.Status.threw.rawValue)
            writer.write(error is MP.Error ? "MP.Error" : String(reflecting: Swift.type(of: error as Any)))
            writer.write("\(error)")
            reply = writer.bytes
        }

        func failed(_ error: MP.Error) {
            var writer = ByteWriter()
            writer.write(ActorFrames.Status.failed.rawValue)
            writer.write(error.code.name)
            writer.write(error.message)
            reply = writer.bytes
        }
    }
}

/// Values of actor calls, in the wire format.
enum ActorWire {
    /// A value of a call or a reply. An actor reference among it resolves in
    /// this process's ``MP/ActorSystem/shared`` (the decoder finds it through
    /// the hook the entry hook sets; it is the only system there is).
    static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws(MP.Error) -> T {
        try WireFormat.decode(T.self, from: bytes)
    }

    /// A reply's payload that is one number (a placed actor's, a count).
    static func number(_ payload: [UInt8]) throws(MP.Error) -> UInt64 {
        guard payload.count == 8 else { throw .malformed(type: "actor reply", reason: "\(payload.count) bytes for a number") }
        return payload.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
    }

    /// The error a reply's failure stands for.
    static func failure(_ status: UInt8, _ reader: inout ByteReader) throws(MP.Error) -> MP.Error {
        switch ActorFrames.Status(rawValue: status) {
        case .threw?:
            return .actorThrew(type: try reader.readString(), description: try reader.readString())
        case .failed?:
            let code = try reader.readString()
            return MP.Error(MP.Error.Code(code), try reader.readString())
        default:
            return .malformed(type: "actor reply", reason: "status \(status)")
        }
    }
}
