import Atoms
import Foundation
import Tape

/// Bonding topology of a structure: the graph of atom pairs closer than `scale` × (r_cov,i + r_cov,j), with
/// Cordero's covalent radii (Si–Si 2.66 Å at the default scale 1.2, between diamond Si's first shell at
/// 2.35 Å and its second at 3.84 Å; Si–C 2.24 Å, C–C 1.82 Å). Used to decide whether a relaxation ended in the
/// same basin as the reference: two geometries in one basin differ by small displacements and have the same
/// bonds, while a relaxation into another local minimum (a split interstitial instead of a tetrahedral one, a
/// reconstructed vacancy instead of an open one) breaks or makes bonds.
public enum BondingTopology {
    public static let defaultScale = 1.2

    /// A bond: atoms i and j with the lattice image shift of j, as directed pairs (i, j, S) and (j, i, −S).
    public struct Bond: Hashable, Sendable {
        public var i: Int
        public var j: Int
        public var shift: [Int]
    }

    /// The bonds at `positions` (cell and pbc of `structure`), pair cut-offs `scale` × (r_cov,i + r_cov,j).
    public static func bonds(_ structure: Structure, positions: Tensor, scale: Double = defaultScale) -> Set<Bond> {
        let radii = structure.numbers.map { $0 < Elements.covalentRadii.count ? Elements.covalentRadii[$0] : 2.0 }
        let rmax = 2 * scale * (radii.max() ?? 0)
        let list = NeighborList.build(positions: positions, cell: structure.cell, pbc: structure.pbc, cutoff: rmax)
        let r = list.pairVectors(positions: positions, cell: structure.cell)
        var out = Set<Bond>()
        for p in 0..<list.pairCount {
            let (i, j) = (list.first[p], list.second[p])
            let d = (r[p, 0] * r[p, 0] + r[p, 1] * r[p, 1] + r[p, 2] * r[p, 2]).squareRoot()
            if d < scale * (radii[i] + radii[j]) {
                out.insert(Bond(i: i, j: j, shift: Array(list.shifts[(3 * p)..<(3 * p + 3)])))
            }
        }
        return out
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
