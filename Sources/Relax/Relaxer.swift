import Atoms
import Potentials
import Tape

/// Energy and forces at given positions (forces already zeroed on fixed atoms).
public typealias ForceFunction = (Variable) -> (energy: Variable, forces: Variable)

/// State of a relaxer. The differentiable part is a fixed-order list of Variables (`tensors`), so that a
/// segment of steps can be checkpointed by storing only those; discrete bookkeeping (step counters, flags)
/// lives in plain stored properties and is copied with the value.
public protocol RelaxerState {
    /// Positions (generalised coordinates for cell relaxation), shape [N, 3].
    var positions: Variable { get }
    var tensors: [Variable] { get set }
    /// Energy and forces at `positions`, when already evaluated.
    var energy: Variable? { get set }
    var forces: Variable? { get set }
}

extension RelaxerState {
    /// The forces at `positions`: the cached ones, else evaluated now (energy too) and cached.
    public mutating func currentForces(_ evaluate: ForceFunction) -> Variable {
        if let f = forces { return f }
        let (e, f) = evaluate(positions)
        energy = e
        forces = f
        return f
    }
}

/// The continuous hyperparameters of a relaxer as a typed struct (`FIRE.Hyper<Double>`), with names for the
/// command line, model files and training. A relaxer's `Hyper<T>` maps field by field (`map`), which gives
/// the same struct of tape variables for a recorded relaxation.
public protocol RelaxerHyperparameters: Sendable, Equatable {
    /// The struct with every value replaced by `f(name, value)`, in the fixed field order.
    func mapValues(_ f: (String, Double) -> Double) -> Self
}

extension RelaxerHyperparameters {
    /// (name, value) pairs in the field order.
    public var named: [(name: String, value: Double)] {
        var out: [(name: String, value: Double)] = []
        _ = mapValues { out.append(($0, $1)); return $1 }
        return out
    }

    public var names: [String] { named.map(\.name) }

    public var dictionary: [String: Double] {
        Dictionary(uniqueKeysWithValues: named.map { ($0.name, $0.value) })
    }

    public subscript(name: String) -> Double? { named.first { $0.name == name }?.value }
}

/// An optimizer in init/apply style (as JAX-MD's minimizers): `start` builds the state, `step` advances
/// it by one iteration. The same code runs on constants (fast, nothing recorded) or on tracked variables
/// (recorded on the tape for backpropagation through the relaxation). Decisions that depend on values —
/// branches, resets, the stopping rule — are taken on values and not differentiated; the arithmetic in
/// every branch, including max-step clamps, is.
public protocol Relaxer: Sendable {
    associatedtype State: RelaxerState
    /// The hyperparameters' values (`Hyper<Double>`).
    associatedtype Hyperparameters: RelaxerHyperparameters
    /// The same struct of tape variables (`Hyper<Variable>`), constants or tracked.
    associatedtype Inputs
    /// Name as used on the command line (fire, fire-jaxmd, bfgs, lbfgs, frame).
    var name: String { get }
    /// Continuous hyperparameters (all of them can be differentiated and trained).
    var hyperparameters: Hyperparameters { get set }
    /// The hyperparameters as variables: `variable(name, value)` per field.
    func inputs(_ variable: (String, Double) -> Variable) -> Inputs
    func start(positions: Variable, hyper: Inputs, evaluate: ForceFunction) -> State
    func step(_ state: State, hyper: Inputs, evaluate: ForceFunction) -> State
}

extension Relaxer {
    /// Hyperparameters as constants.
    public var constantHyper: Inputs { inputs { Variable(constant: $1) } }

    /// Sets hyperparameters by name; unknown names are an error that lists the known ones.
    public mutating func set(_ values: [String: Double]) throws {
        let known = hyperparameters.names
        for name in values.keys.sorted() where !known.contains(name) {
            throw RelaxerError(message: "relaxer \(self.name) has no hyperparameter '\(name)' (has: \(known.joined(separator: ", ")))")
        }
        hyperparameters = hyperparameters.mapValues { values[$0] ?? $1 }
    }

    /// `name (k=v, …)`, as logs print a relaxer.
    public var summary: String {
        "\(name) (" + hyperparameters.named.map { "\($0.name)=\($0.value)" }.joined(separator: ", ") + ")"
    }
}

public struct RelaxerError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// Largest per-atom norm of a [N, 3] tensor (ASE's fmax for forces).
public func maxRowNorm(_ t: Tensor) -> Double {
    t.withUnsafeBufferPointer { p in
        var m = 0.0
        var i = 0
        while i + 2 < p.count {
            m = Swift.max(m, p[i] * p[i] + p[i + 1] * p[i + 1] + p[i + 2] * p[i + 2])
            i += 3
        }
        return m.squareRoot()
    }
}

/// A relaxer as run directories and model files store it: {"relaxer": name, "hyperparameters": {name: value}}.
public struct StoredRelaxer: Codable, Sendable {
    public var relaxer: any Relaxer

    public init(_ relaxer: any Relaxer) { self.relaxer = relaxer }

    enum CodingKeys: String, CodingKey { case relaxer, hyperparameters }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let name = try c.decode(String.self, forKey: .relaxer)
        let hyper = try c.decodeIfPresent([String: Double].self, forKey: .hyperparameters) ?? [:]
        do { relaxer = try RelaxerFactory.make(name, overrides: hyper) } catch let e as RelaxerError {
            throw DecodingError.dataCorruptedError(forKey: .relaxer, in: c, debugDescription: e.message)
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(relaxer.name, forKey: .relaxer)
        try c.encode(relaxer.hyperparameters.dictionary, forKey: .hyperparameters)
    }
}

/// Relaxers by command-line name: the one place a name becomes a typed relaxer.
public enum RelaxerFactory {
    public static let names = ["fire", "fire-jaxmd", "bfgs", "lbfgs", "frame"]

    /// The relaxer `name` with its default hyperparameters, then `overrides` (by hyperparameter name).
    public static func make(_ name: String, overrides: [String: Double] = [:]) throws -> any Relaxer {
        var r: any Relaxer
        switch name {
        case "fire": r = FIRE()
        case "fire-jaxmd": r = FIREJaxMD()
        case "bfgs": r = BFGS()
        case "lbfgs": r = LBFGS()
        case "frame": r = ForceFollowing()
        default: throw RelaxerError(message: "unknown relaxer '\(name)' (known: \(names.joined(separator: ", ")))")
        }
        try r.set(overrides)
        return r
    }

    /// Whether two relaxers are the same kind with the same hyperparameters.
    public static func equal(_ a: any Relaxer, _ b: any Relaxer) -> Bool {
        a.name == b.name && a.hyperparameters.dictionary == b.hyperparameters.dictionary
    }
}
