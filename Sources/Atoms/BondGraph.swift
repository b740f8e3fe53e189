import Tape

/// The covalent bond graph of a structure, the one definition relaxft uses (the basin test of `evaluate` in
/// Loss, the instability criterion of MD in Dynamics): atoms i and j are bonded when closer than
/// `scale` × (r_cov,i + r_cov,j), with the covalent radii of Cordero et al., Dalton Trans. 2008, 2832 (as ASE's
/// `natural_cutoffs` with a multiplier). At the default scale 1.2: Si–Si 2.66 Å, between diamond silicon's first
/// shell (2.35 Å) and its second (3.84 Å); Si–C 2.24 Å, C–C 1.82 Å. A fixed `cutoff` replaces the radii.
public enum BondGraph {
    public static let defaultScale = 1.2

    /// A directed bond: atom i to the image of atom j shifted by `shift` cell vectors, and its length (Å).
    public struct Bond: Sendable {
        public var i: Int
        public var j: Int
        public var shift: [Int]
        public var length: Double
    }

    /// Covalent radius of element `z` (Å); 2 Å for elements past the table.
    public static func radius(_ z: Int) -> Double { z < Elements.covalentRadii.count ? Elements.covalentRadii[z] : 2.0 }

    /// Every bond at `positions` (cell and pbc of `structure`) as directed pairs, both (i, j, S) and (j, i, −S),
    /// in the neighbour list's order.
    public static func bonds(_ structure: Structure, positions: Tensor, scale: Double = defaultScale, cutoff: Double? = nil) -> [Bond] {
        let radii = structure.numbers.map(radius)
        let rmax = cutoff ?? 2 * scale * (radii.max() ?? 0)
        let list = NeighborList.build(positions: positions, cell: structure.cell, pbc: structure.pbc, cutoff: rmax)
        let r = list.pairVectors(positions: positions, cell: structure.cell)
        var out: [Bond] = []
        for p in 0..<list.pairCount {
            let (i, j) = (list.first[p], list.second[p])
            let d = (r[p, 0] * r[p, 0] + r[p, 1] * r[p, 1] + r[p, 2] * r[p, 2]).squareRoot()
            if d < (cutoff ?? scale * (radii[i] + radii[j])) {
                out.append(Bond(i: i, j: j, shift: Array(list.shifts[(3 * p)..<(3 * p + 3)]), length: d))
            }
        }
        return out
    }
}
