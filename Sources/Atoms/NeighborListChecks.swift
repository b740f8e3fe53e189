import Foundation
import Tape

/// A Double as an Int for bin and image indices: NaN gives 0 and values beyond ±2⁵² are clamped, so a
/// conversion never traps (the inputs that would need clamping are refused by `NeighborList.check` first).
@inline(__always)
func clampedInt(_ x: Double) -> Int {
    guard x == x else { return 0 }
    return Int(Swift.min(Swift.max(x, -4.5e15), 4.5e15))
}

/// Why a structure's neighbour list cannot be built: a number that cannot become a bin index, a cell that
/// cannot be used, or a list larger than the memory there is.
public struct NeighborListError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { message }
}

extension NeighborList {
    /// Largest |coordinate| (Å) binned: one centimetre. Beyond it a position is not an atomistic one, and
    /// its fractional coordinate would lose every digit that places it within a cell.
    public static let maximumCoordinate = 1e8

    /// Memory of one directed pair while the list is built and held (indices, shifts, scratch), bytes.
    public static let bytesPerPair = 160.0

    /// The first problem that stops a list from being built for these inputs, or nil: a cutoff that is not a
    /// positive finite length, a non-finite or singular cell along periodic axes, a position that is not
    /// finite or lies beyond ±`maximumCoordinate`. O(N); `atomName` names atom k (0-based) in the message.
    public static func problem(positions: Tensor, cell: Tensor, pbc: [Bool], cutoff: Double,
                               atomName: (Int) -> String = { "atom \($0 + 1)" }) -> String? {
        guard cutoff > 0 && cutoff.isFinite else { return "the cutoff \(cutoff) Å is not a positive finite length" }
        guard cell.isFinite else { return "the cell has a non-finite entry" }
        if pbc.contains(true) && !(Swift.abs(cell.determinant3x3) > 1e-12) {
            return "a periodic structure needs a non-singular cell (volume \(Swift.abs(cell.determinant3x3)) Å³)"
        }
        if let (atom, value) = Self.unboundedCoordinate(positions) {
            return value.isFinite
                ? "\(atomName(atom)) is at \(value) Å, beyond ±\(maximumCoordinate) Å (not an atomistic position)"
                : "\(atomName(atom)) has a non-finite coordinate (\(value))"
        }
        return nil
    }

    /// The first atom with a coordinate that is not finite or beyond ±`maximumCoordinate`, and that coordinate.
    public static func unboundedCoordinate(_ positions: Tensor) -> (atom: Int, value: Double)? {
        positions.withUnsafeBufferPointer { p in
            for i in 0..<p.count where !(Swift.abs(p[i]) <= maximumCoordinate) { return (i / 3, p[i]) }
            return nil
        }
    }

    /// Estimated number of directed pairs within `cutoff`, for atoms spread evenly over the cell (periodic axes)
    /// or over their extent (other axes): N²·Π_k min(2r_c/L_k, 1 for non-periodic axes)·π/6, with L_k the cell's
    /// height along a periodic axis (the factor exceeds 1 when the cutoff spans several images) and the atoms'
    /// extent along a non-periodic one. Used to refuse lists that could not be held, before building them.
    public static func estimatedPairs(positions: Tensor, cell: Tensor, pbc: [Bool], cutoff: Double) -> Double {
        let n = positions.shape[0]
        guard n > 0 else { return 0 }
        let hasCell = Swift.abs(cell.determinant3x3) > 1e-12
        let frame = hasCell ? cell : Tensor.identity(3)
        let periodic = hasCell ? pbc : [false, false, false]
        guard let inv = frame.inverse3x3() else { return .infinity }
        let L = frame.array, Li = inv.array, x = positions.array
        let vol = Swift.abs(frame.determinant3x3)
        var factor = 1.0
        for k in 0..<3 {
            let a = (k + 1) % 3, b = (k + 2) % 3
            let c0 = L[a * 3 + 1] * L[b * 3 + 2] - L[a * 3 + 2] * L[b * 3 + 1]
            let c1 = L[a * 3 + 2] * L[b * 3 + 0] - L[a * 3 + 0] * L[b * 3 + 2]
            let c2 = L[a * 3 + 0] * L[b * 3 + 1] - L[a * 3 + 1] * L[b * 3 + 0]
            let height = vol / (c0 * c0 + c1 * c1 + c2 * c2).squareRoot()
            if periodic[k] {
                factor *= 2 * cutoff / height
            } else {
                var lo = Double.infinity, hi = -Double.infinity
                for i in 0..<n {
                    let f = x[3 * i] * Li[k] + x[3 * i + 1] * Li[3 + k] + x[3 * i + 2] * Li[6 + k]
                    lo = Swift.min(lo, f)
                    hi = Swift.max(hi, f)
                }
                let extent = (hi - lo) * height
                factor *= extent > 2 * cutoff ? 2 * cutoff / extent : 1
            }
        }
        let nn = Double(n)
        return Swift.max(nn * nn * factor * Double.pi / 6, 0)
    }

    /// Checks that the list for these inputs can be built and held: `problem` is nil and the estimated pairs
    /// times (`bytesPerPair` + `extraBytesPerPair`, the potential's own per-pair memory) fit `MemoryBudget`.
    /// Returns the estimated pair count. `name` names the structure in messages.
    @discardableResult
    public static func validate(positions: Tensor, cell: Tensor, pbc: [Bool], cutoff: Double, name: String,
                                extraBytesPerPair: Double = 0) throws -> Double {
        if let p = problem(positions: positions, cell: cell, pbc: pbc, cutoff: cutoff) {
            throw NeighborListError(message: "\(name): \(p)")
        }
        let pairs = estimatedPairs(positions: positions, cell: cell, pbc: pbc, cutoff: cutoff)
        do {
            try MemoryBudget.require(pairs * (bytesPerPair + extraBytesPerPair),
                                     for: "\(name): the neighbour list within \(cutoff) Å (about \(String(format: "%.3g", pairs)) pairs for \(positions.shape[0]) atoms)")
        } catch let e as ResourceError {
            throw NeighborListError(message: e.message)
        }
        return pairs
    }

    /// `validate` for a structure.
    @discardableResult
    public static func validate(_ s: Structure, cutoff: Double, name: String, extraBytesPerPair: Double = 0) throws -> Double {
        try validate(positions: s.positions, cell: s.cell, pbc: s.pbc, cutoff: cutoff, name: name, extraBytesPerPair: extraBytesPerPair)
    }
}
