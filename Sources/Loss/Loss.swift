import Atoms
import Foundation
import Tape

/// Final-structure losses against reference (DFT-relaxed) geometries.
public enum StructureLoss {
    /// Displacements x − x* with the minimum image under the cell and pbc, on the tape: the lattice
    /// translation is chosen on values and added as a constant, so the gradient is that of x − x*.
    public static func displacement(_ positions: Variable, target: Tensor, cell: Tensor, pbc: [Bool]) -> Variable {
        let d = positions - target
        guard pbc.contains(true) else { return d }
        let mi = Structure.minimumImage(d.value, cell: cell, pbc: pbc)
        let correction = mi - d.value
        return correction.maxAbs == 0 ? d : d + correction
    }

    /// Mass-weighted ΔQ = sqrt(Σ_j m_j |x_j − x*_j|²) (amu^½·Å), the configuration-coordinate distance of
    /// defect physics used by Dramko et al. (2025). Its gradient is 0 (not NaN) when x = x*.
    public static func deltaQ(_ positions: Variable, target: Tensor, masses: [Double], cell: Tensor, pbc: [Bool]) -> Variable {
        let d = displacement(positions, target: target, cell: cell, pbc: pbc)
        let w = Tensor(shape: [masses.count, 1], masses.map { $0.squareRoot() })
        return (d * w).reshaped([3 * masses.count]).norm(axis: 0)
    }

    /// Root-mean-square displacement sqrt(Σ_j |x_j − x*_j|² / N) (Å), safe at zero.
    public static func rmsd(_ positions: Variable, target: Tensor, cell: Tensor, pbc: [Bool]) -> Variable {
        let n = positions.shape[0]
        let d = displacement(positions, target: target, cell: cell, pbc: pbc)
        return d.reshaped([3 * n]).norm(axis: 0) * (1 / Double(n).squareRoot())
    }

    /// Plain-value ΔQ of two structures with the same atoms.
    public static func deltaQ(_ a: Structure, _ b: Tensor) -> Double {
        deltaQ(Variable(constant: a.positions), target: b, masses: a.masses, cell: a.cell, pbc: a.pbc).scalar
    }
}

/// Summary statistics of per-structure errors, as the BPTT group recommends reporting them: mean, median,
/// fraction under thresholds, and per-structure relative improvement against a baseline.
public struct ErrorSummary: Codable, Sendable, Equatable {
    public var n: Int
    public var mean: Double
    public var median: Double
    public var max: Double
    /// Fraction of structures with error below each threshold (keys are the thresholds as strings).
    public var fractionBelow: [String: Double]

    public init(_ values: [Double], thresholds: [Double] = [0.1, 0.3]) {
        n = values.count
        let s = values.sorted()
        mean = values.isEmpty ? .nan : values.reduce(0, +) / Double(values.count)
        median = s.isEmpty ? .nan : (s.count % 2 == 1 ? s[s.count / 2] : 0.5 * (s[s.count / 2 - 1] + s[s.count / 2]))
        max = s.last ?? .nan
        var f: [String: Double] = [:]
        for t in thresholds { f["\(t)"] = values.isEmpty ? .nan : Double(values.filter { $0 < t }.count) / Double(values.count) }
        fractionBelow = f
    }

    /// Per-structure relative improvement 1 − after/before (0 where before is 0), and its mean and median.
    public static func relativeImprovement(before: [Double], after: [Double]) -> (values: [Double], mean: Double, median: Double) {
        precondition(before.count == after.count, "relative improvement needs paired values")
        let v = zip(before, after).map { b, a in b > 0 ? 1 - a / b : 0 }
        let s = ErrorSummary(v)
        return (v, s.mean, s.median)
    }
}
