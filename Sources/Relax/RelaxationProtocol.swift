import Foundation

/// How structures are relaxed, as one typed value: the relaxer with its hyperparameters, the step budget and
/// the stop rule. Fine-tuning trains under one (T steps, perhaps stopped early) and stores it in the model file;
/// `relaxft evaluate` relaxes test structures under one.
public struct RelaxationProtocol: Sendable, CustomStringConvertible {
    public var relaxer: any Relaxer
    /// Maximum number of steps (the unroll length T when training).
    public var steps: Int
    /// Stop when fmax is below this (eV/Å); nil runs all steps.
    public var stopFmax: Double?
    /// fmax under which a relaxation counts as converged in reports.
    public var convergedFmax: Double

    public init(relaxer: any Relaxer, steps: Int, stopFmax: Double?, convergedFmax: Double = 0.05) {
        self.relaxer = relaxer
        self.steps = steps
        self.stopFmax = stopFmax
        self.convergedFmax = convergedFmax
    }

    /// The settings of `relax` for this protocol (no stop rule: fmax 0, never reached).
    public var settings: RelaxationSettings {
        var s = RelaxationSettings()
        s.fmax = stopFmax ?? 0
        s.maxSteps = steps
        return s
    }

    /// `fire (dt=0.1, …), at most 500 steps, stop below fmax 0.01 eV/Å`.
    public var description: String {
        relaxer.summary + ", at most \(steps) steps" + (stopFmax.map { ", stop below fmax \($0) eV/Å" } ?? ", no early stop")
    }

    /// The protocol stored in a model file's metadata by fine-tuning (nil when absent or unreadable).
    public static func fromMetadata(_ m: [String: String]) -> RelaxationProtocol? {
        guard let s = m["relaxation_protocol"] else { return nil }
        return try? JSONDecoder().decode(RelaxationProtocol.self, from: Data(s.utf8))
    }

    /// The metadata value (`relaxation_protocol`): JSON with sorted keys.
    public var metadataValue: String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return String(decoding: try! e.encode(self), as: UTF8.self)
    }
}

extension RelaxationProtocol: Equatable {
    public static func == (a: RelaxationProtocol, b: RelaxationProtocol) -> Bool {
        RelaxerFactory.equal(a.relaxer, b.relaxer) && a.steps == b.steps && a.stopFmax == b.stopFmax && a.convergedFmax == b.convergedFmax
    }
}

/// Stored as {"relaxer": name, "hyperparameters": {name: value}, "steps", "stopFmax", "convergedFmax"}, the
/// format model files carry.
extension RelaxationProtocol: Codable {
    enum CodingKeys: String, CodingKey { case steps, stopFmax, convergedFmax }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        relaxer = try StoredRelaxer(from: decoder).relaxer  // "relaxer" and "hyperparameters"
        steps = try c.decode(Int.self, forKey: .steps)
        stopFmax = try c.decodeIfPresent(Double.self, forKey: .stopFmax)
        convergedFmax = try c.decodeIfPresent(Double.self, forKey: .convergedFmax) ?? 0.05
    }

    public func encode(to encoder: Encoder) throws {
        try StoredRelaxer(relaxer).encode(to: encoder)
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(steps, forKey: .steps)
        try c.encodeIfPresent(stopFmax, forKey: .stopFmax)
        try c.encode(convergedFmax, forKey: .convergedFmax)
    }
}
