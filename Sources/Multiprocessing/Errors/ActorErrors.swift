// The actor system's kinds of failure, as MP.Error values.
extension MP.Error {
    /// The actor's host process ended, or its link did: every pending and
    /// later call to its actors fails with this.
    static func hostGone(_ address: some CustomStringConvertible, _ why: String) -> MP.Error {
        MP.Error(.disconnected, "the actor host at \(address) is gone: \(why)")
    }

    /// No such actor on its host: released, never placed, or a forged id.
    static func noSuchActor(_ id: some CustomStringConvertible, _ why: String) -> MP.Error {
        MP.Error(.notFound, "no actor \(id): \(why)")
    }

    /// A `distributed func` threw in the host: its error's type and description there.
    static func actorThrew(type: String, description: String) -> MP.Error {
        MP.Error(.taskFailed, "the actor's method threw \(type): \(description)", errorType: type)
    }

    /// The host runs another build of the program, whose actors and
    /// functions this one cannot name.
    static func otherBuild(_ address: some CustomStringConvertible, theirs: String, ours: String) -> MP.Error {
        MP.Error(.cannotCross, "the actor host at \(address) runs another build (\(theirs.prefix(16))…, this one \(ours.prefix(16))…): its actors cannot be called from here")
    }
}
