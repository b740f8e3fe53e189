import Potentials
import Tape

/// The check after every optimizer step: parameters that went non-finite or out of their physical range (a
/// negative σ, a cutoff beyond the limit) are not taken. Trainers call `rejection` with the updated values
/// before installing them; a non-nil reason means: keep the previous parameters (and optimizer state), count
/// the step as rejected.
public enum ParameterGuard {
    /// Rejected updates in a row after which a trainer stops, unless the run sets another limit.
    public static let defaultMaxRejectedSteps = 10

    /// Why `values` (parameter name → tensor, a subset of the potential's) cannot be installed in
    /// `potential`, or nil when they can.
    public static func rejection(of values: [String: Tensor], for potential: any Potential) -> String? {
        var p = potential
        for (k, v) in values.sorted(by: { $0.key < $1.key }) {
            guard let old = p.parameters[k] else { return "unknown parameter \(k)" }
            guard old.shape == v.shape else { return "parameter \(k) changed shape from \(old.shape) to \(v.shape)" }
            guard v.isFinite else { return "parameter \(k) became non-finite" }
            p.parameters[k] = v
        }
        do { try p.checkParameters() } catch { return "\(error)" }
        return nil
    }
}

/// Training stopped because `limit` optimizer updates in a row were rejected (non-finite gradients, or
/// parameters the guard refused). The run directory keeps the last good model; the CLI exits with code 1.
public struct TrainingStopped: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// Counts rejected optimizer updates, in all and in a row (part of a trainer's resumable state).
public struct UpdateRejections: Codable, Sendable, Equatable {
    public var total = 0
    public var inARow = 0
    /// The reason of the last rejection.
    public var last: String? = nil

    public init() {}

    public mutating func accept() { inARow = 0 }

    /// Records a rejected update; throws `TrainingStopped` (naming `what` was kept) when `limit` (> 0) updates
    /// in a row have now been rejected.
    public mutating func reject(_ reason: String, limit: Int, kept what: String) throws {
        total += 1
        inARow += 1
        last = reason
        if limit > 0 && inARow >= limit {
            throw TrainingStopped(message: "stopped: \(inARow) optimizer updates in a row were rejected (the last: \(reason)); "
                                  + "the last good model is kept: \(what) (see --max-rejected-steps)")
        }
    }
}
