import Atoms
import Foundation
import Tape

/// Bonding topology of a structure: its bond graph (`BondGraph` of Atoms: pairs closer than `scale` ×
/// (r_cov,i + r_cov,j)). Used to decide whether a relaxation ended in the same basin as the reference: two
/// geometries in one basin differ by small displacements and have the same bonds, while a relaxation into
/// another local minimum (a split interstitial instead of a tetrahedral one, a reconstructed vacancy instead of
/// an open one) breaks or makes bonds.
public enum BondingTopology {
    public static let defaultScale = BondGraph.defaultScale

    /// A bond: atoms i and j with the lattice image shift of j, as directed pairs (i, j, S) and (j, i, −S).
    public struct Bond: Hashable, Sendable {
        public var i: Int
        public var j: Int
        public var shift: [Int]
    }

    /// The bonds at `positions` (cell and pbc of `structure`), pair cut-offs `scale` × (r_cov,i + r_cov,j).
    public static func bonds(_ structure: Structure, positions: Tensor, scale: Double = defaultScale) -> Set<Bond> {
        Set(BondGraph.bonds(structure, positions: positions, scale: scale).map { Bond(i: $0.i, j: $0.j, shift: $0.shift) })
    }

    /// Compares the bond graphs of `positions` and `reference` (same atoms, cell and pbc as `structure`). The
    /// reference is first moved atom by atom to its image nearest to `positions` (reference files keep relaxed
    /// positions unwrapped), so image shifts are comparable. Returns the number of bonds present in only one of
    /// the two (counted once per unordered pair); 0 means the same topology.
    public static func differingBonds(_ structure: Structure, positions: Tensor, reference: Tensor, scale: Double = defaultScale) -> Int {
        let aligned = positions + Structure.minimumImage(reference - positions, cell: structure.cell, pbc: structure.pbc)
        let a = bonds(structure, positions: positions, scale: scale)
        let b = bonds(structure, positions: aligned, scale: scale)
        return a.symmetricDifference(b).count / 2
    }
}
