import Atoms
import Foundation
import Tape

/// Non-finite energies on demand, for the tests that check every command's status when a potential goes
/// non-finite mid-run: with `RELAXFT_FAULT_NAN=K` (or `K:inf`) in the environment, potentials made from a
/// specification or model file return NaN (or +∞) energies, and so non-finite forces, from the K-th energy
/// evaluation of the process on (counted from 1); `K-L` limits it to evaluations K…L (a transient fault).
/// Without the variable `wrap` returns the potential itself.
public enum PotentialFaults {
    static let plan: (from: Int, through: Int, poison: Double)? = {
        guard let v = ProcessInfo.processInfo.environment["RELAXFT_FAULT_NAN"] else { return nil }
        let parts = v.split(separator: ":")
        guard parts.count == 1 || parts.count == 2 else { return nil }
        let range = parts[0].split(separator: "-")
        guard let k = Int(range.first ?? ""), k > 0, range.count <= 2 else { return nil }
        let l = range.count == 2 ? Int(range[1]) : Int.max
        guard let l, l >= k else { return nil }
        return (k, l, parts.count == 2 && parts[1] == "inf" ? .infinity : .nan)
    }()

    /// `potential`, or a wrapper that turns non-finite from the planned evaluation on.
    public static func wrap(_ potential: any Potential) -> any Potential {
        guard let p = plan, !(potential is FaultyPotential) else { return potential }
        return FaultyPotential(inner: potential, from: p.from, through: p.through, poison: p.poison)
    }
}

/// Evaluations of all faulty potentials of the process (copies share the count).
private final class EvaluationCount: @unchecked Sendable {
    static let shared = EvaluationCount()
    private let lock = NSLock()
    private var n = 0
    func next() -> Int { lock.lock(); defer { lock.unlock() }; n += 1; return n }
}

/// `inner`, whose energies are multiplied by `poison` in its `from`-th to `through`-th evaluations.
struct FaultyPotential: Potential {
    var inner: any Potential
    let from: Int
    let through: Int
    let poison: Double

    var kind: String { inner.kind }
    var cutoff: Double { inner.cutoff }
    var parameters: OrderedDictionary<Tensor> {
        get { inner.parameters }
        set { inner.parameters = newValue }
    }
    var metadata: [String: String] { inner.metadata }
    var coveredElements: Set<Int>? { inner.coveredElements }
    var bytesPerPair: Double { inner.bytesPerPair }
    func checkParameters() throws { try inner.checkParameters() }

    func energies(_ system: AtomicSystem, positions: Variable, cells: Variable, parameters: [String: Variable]) -> Variable {
        let e = inner.energies(system, positions: positions, cells: cells, parameters: parameters)
        let n = EvaluationCount.shared.next()
        return n < from || n > through ? e : e * poison
    }
}
