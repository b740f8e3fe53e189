import Atoms
import Tape

/// CHGNet's two graphs for a batch of structures (CHGNet's `CrystalGraphConverter` and `BatchedGraph`), built
/// from values: which bonds and angles exist is not differentiated (the basis functions vanish smoothly at both
/// cutoffs, so the energy is continuous when the graph changes).
///
/// - Atom graph: directed edges (i → j, image S) with |r_ij| < atom cutoff, grouped into undirected bonds
///   {(i, j, S), (j, i, −S)}; bond features live on undirected bonds.
/// - Bond graph (line graph): one row per ordered pair of distinct directed edges (d1, d2) with the same center
///   atom and both bonds shorter than the bond cutoff; Σ_atoms k(k−1) rows for k short bonds per atom.
struct CHGNetGraph {
    /// The atom graph: the system's pairs restricted to the kept directed edges (sorted by center).
    let system: AtomicSystem
    /// Undirected bond of each directed edge [E].
    let undirectedOfEdge: [Int]
    /// Representative directed edge of each undirected bond [U] (i < j, or i == j with a positive shift).
    let representative: [Int]
    /// Undirected bonds shorter than the bond cutoff, as indices into 0..<U [Us].
    let shortBonds: [Int]
    /// Bond-graph rows [T]: center atom, short-bond index (into `shortBonds`) and directed edge of each side.
    let angleCenter: [Int]
    let angleBond1: [Int], angleBond2: [Int]
    let angleEdge1: [Int], angleEdge2: [Int]

    var edgeCount: Int { system.pairs.pairCount }
    var bondCount: Int { representative.count }
    var angleCount: Int { angleCenter.count }

    /// Builds the graphs from the system's pairs (which may extend beyond the cutoffs, e.g. with a Verlet skin).
    ///
    /// Port decisions: (1) a bond is kept when its representative's length is < `atomCutoff` and then both
    /// directions are kept; pymatgen keeps d ≤ r per direction, which differs only for bonds exactly at the cutoff,
    /// where every basis function is zero. (2) Both bond-graph cutoff tests use the undirected bond's length with
    /// `<`; CHGNet skips a bond when d > 3 Å but admits its partner when d < 3 Å (pymatgen distances), again
    /// equivalent except exactly at 3 Å. (3) Directed edges are ordered by center (CHGNet's follow pymatgen's
    /// order), which changes only the summation order of the aggregations.
    static func build(_ system: AtomicSystem, positions: Tensor, cells: Tensor, atomCutoff: Double, bondCutoff: Double) -> CHGNetGraph {
        let nl = system.pairs
        let r = system.pairVectors(positions: Variable(constant: positions), cells: Variable(constant: cells)).value
        var length = [Double](repeating: 0, count: nl.pairCount)
        r.withUnsafeBufferPointer { p in
            for q in 0..<nl.pairCount { length[q] = (p[3 * q] * p[3 * q] + p[3 * q + 1] * p[3 * q + 1] + p[3 * q + 2] * p[3 * q + 2]).squareRoot() }
        }
        struct Key: Hashable { let i, j, s0, s1, s2: Int }
        func key(_ q: Int, reversed: Bool) -> Key {
            let s = reversed ? -1 : 1
            return Key(i: reversed ? nl.second[q] : nl.first[q], j: reversed ? nl.first[q] : nl.second[q],
                       s0: s * nl.shifts[3 * q], s1: s * nl.shifts[3 * q + 1], s2: s * nl.shifts[3 * q + 2])
        }
        // Representatives inside the cutoff, then their reverse edges.
        var bondOfPair = [Int](repeating: -1, count: nl.pairCount)
        var reps: [Int] = [], repIndex: [Key: Int] = [:]
        for q in nl.halfPairIndices where length[q] < atomCutoff {
            repIndex[key(q, reversed: false)] = reps.count
            reps.append(q)
        }
        var partnered = [Bool](repeating: false, count: reps.count)
        for q in 0..<nl.pairCount {
            if let u = repIndex[key(q, reversed: false)], reps[u] == q { bondOfPair[q] = u; continue }
            if let u = repIndex[key(q, reversed: true)] { bondOfPair[q] = u; partnered[u] = true }
        }
        // A representative without its reverse in the list (only possible for a list built at exactly this cutoff,
        // with rounding separating the two directions) is dropped: it sits at the cutoff, where it contributes 0.
        var newIndex = [Int](repeating: -1, count: reps.count), keptReps: [Int] = []
        for u in 0..<reps.count where partnered[u] { newIndex[u] = keptReps.count; keptReps.append(u) }
        var keep: [Int] = [], edgeBond: [Int] = []
        var newEdgeOfPair = [Int](repeating: -1, count: nl.pairCount)
        for q in 0..<nl.pairCount where bondOfPair[q] >= 0 && newIndex[bondOfPair[q]] >= 0 {
            newEdgeOfPair[q] = keep.count
            keep.append(q)
            edgeBond.append(newIndex[bondOfPair[q]])
        }
        let representative = keptReps.map { newEdgeOfPair[reps[$0]] }
        let bondLength = keptReps.map { length[reps[$0]] }
        let sub = system.subset(pairs: keep, cutoff: atomCutoff)

        var shortIndex = [Int](repeating: -1, count: representative.count), shortBonds: [Int] = []
        for u in 0..<representative.count where bondLength[u] < bondCutoff { shortIndex[u] = shortBonds.count; shortBonds.append(u) }
        var ac: [Int] = [], b1: [Int] = [], b2: [Int] = [], e1: [Int] = [], e2: [Int] = []
        let offsets = sub.pairs.offsets
        var local: [Int] = []
        for a in 0..<sub.atomCount {
            local.removeAll(keepingCapacity: true)
            for e in offsets[a]..<offsets[a + 1] where shortIndex[edgeBond[e]] >= 0 { local.append(e) }
            for d1 in local { for d2 in local where d2 != d1 {
                ac.append(a); e1.append(d1); e2.append(d2)
                b1.append(shortIndex[edgeBond[d1]]); b2.append(shortIndex[edgeBond[d2]])
            } }
        }
        return CHGNetGraph(system: sub, undirectedOfEdge: edgeBond, representative: representative, shortBonds: shortBonds,
                           angleCenter: ac, angleBond1: b1, angleBond2: b2, angleEdge1: e1, angleEdge2: e2)
    }
}
