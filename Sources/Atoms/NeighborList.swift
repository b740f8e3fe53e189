import Foundation
import Tape

/// All directed pairs (i, j, image shift S) with |x_j − x_i + S·cell| < cutoff, sorted by i.
///
/// Built in O(N) with cell lists in fractional coordinates, which handles triclinic cells, cells thinner than
/// the cutoff (several images of the same atom), mixed periodicity and molecules. Pairs are directed: (i, j, S)
/// and (j, i, −S) both appear, as message-passing and three-body terms need.
public struct NeighborList: Sendable {
    /// Cutoff the list was built with (including any skin).
    public let cutoff: Double
    public let first: [Int]
    public let second: [Int]
    /// Integer image shifts, row-major [pairs, 3].
    public let shifts: [Int]
    /// CSR offsets: pairs of center i are offsets[i]..<offsets[i+1].
    public let offsets: [Int]
    public let atomCount: Int

    public var pairCount: Int { first.count }

    /// Shifts as a Double tensor [pairs, 3].
    public let shiftTensor: Tensor
    /// Whether any pair crosses a cell boundary.
    public let hasShifts: Bool

    /// S·cell for every pair (values), zero rows for unshifted pairs: a 3×3 product per pair written out,
    /// much cheaper than a general matrix product with inner dimension 3.
    public func shiftVectors(cell: Tensor) -> Tensor {
        let out = Tensor.zeros([pairCount, 3])
        guard hasShifts else { return out }
        var o = out
        let L = cell.array
        o.withUnsafeMutableBufferPointer { p in
            shifts.withUnsafeBufferPointer { s in
                for q in 0..<pairCount {
                    let a = Double(s[3 * q]), b = Double(s[3 * q + 1]), c = Double(s[3 * q + 2])
                    if a == 0 && b == 0 && c == 0 { continue }
                    for k in 0..<3 { p[3 * q + k] = a * L[k] + b * L[3 + k] + c * L[6 + k] }
                }
            }
        }
        return o
    }

    public init(first: [Int], second: [Int], shifts: [Int], atomCount: Int, cutoff: Double) {
        precondition(first.count == second.count && shifts.count == 3 * first.count, "inconsistent pair arrays")
        self.first = first
        self.second = second
        self.shifts = shifts
        self.atomCount = atomCount
        self.cutoff = cutoff
        shiftTensor = Tensor(shape: [first.count, 3], shifts.map(Double.init))
        hasShifts = shifts.contains { $0 != 0 }
        var off = [Int](repeating: 0, count: atomCount + 1)
        for i in first { off[i + 1] += 1 }
        for a in 0..<atomCount { off[a + 1] += off[a] }
        offsets = off
    }

    /// Builds the list for `structure` (see `build(positions:cell:pbc:cutoff:)`).
    public static func build(_ structure: Structure, cutoff: Double) -> NeighborList {
        build(positions: structure.positions, cell: structure.cell, pbc: structure.pbc, cutoff: cutoff)
    }

    /// Builds the list. Along non-periodic axes the cell only sets the binning frame; with no usable cell
    /// (molecules) a Cartesian frame is used. Positions need not be wrapped.
    /// Long on purpose: binning, image ranges and the pair sweep share their index arithmetic in one hot loop;
    /// split into functions they would pass it back and forth (the bench's neighbour-list workload times it).
    public static func build(positions: Tensor, cell: Tensor, pbc: [Bool], cutoff: Double) -> NeighborList {
        let n = positions.shape[0]
        precondition(cutoff > 0 && cutoff.isFinite, "cutoff must be positive")
        let hasCell = Swift.abs(cell.determinant3x3) > 1e-12
        precondition(hasCell || !pbc.contains(true), "a periodic structure needs a non-singular cell")
        let frame = hasCell ? cell : Tensor.identity(3)
        let periodic = hasCell ? pbc : [false, false, false]
        let inv = frame.inverse3x3()!
        let x = positions.array, L = frame.array, Li = inv.array

        // Heights of the frame along each axis: the distance between the planes spanned by the other two.
        var heights = [Double](repeating: 0, count: 3)
        let vol = Swift.abs(frame.determinant3x3)
        for k in 0..<3 {
            let a = (k + 1) % 3, b = (k + 2) % 3
            let c0 = L[a * 3 + 1] * L[b * 3 + 2] - L[a * 3 + 2] * L[b * 3 + 1]
            let c1 = L[a * 3 + 2] * L[b * 3 + 0] - L[a * 3 + 0] * L[b * 3 + 2]
            let c2 = L[a * 3 + 0] * L[b * 3 + 1] - L[a * 3 + 1] * L[b * 3 + 0]
            heights[k] = vol / (c0 * c0 + c1 * c1 + c2 * c2).squareRoot()
        }

        // Fractional coordinates; periodic axes wrapped into [0, 1) with the integer offset remembered.
        var s = [Double](repeating: 0, count: 3 * n)
        var wrap = [Int](repeating: 0, count: 3 * n)
        var lo = [Double](repeating: 0, count: 3), hi = [Double](repeating: 1, count: 3)
        for k in 0..<3 where !periodic[k] { lo[k] = .infinity; hi[k] = -.infinity }
        for a in 0..<n {
            for k in 0..<3 {
                var f = x[3 * a] * Li[k] + x[3 * a + 1] * Li[3 + k] + x[3 * a + 2] * Li[6 + k]
                if periodic[k] {
                    let w = f.rounded(.down)
                    f -= w
                    if f >= 1 { f -= 1; wrap[3 * a + k] = Int(w) + 1 } else { wrap[3 * a + k] = Int(w) }
                } else {
                    lo[k] = Swift.min(lo[k], f)
                    hi[k] = Swift.max(hi[k], f)
                }
                s[3 * a + k] = f
            }
        }
        if n == 0 { return NeighborList(first: [], second: [], shifts: [], atomCount: 0, cutoff: cutoff) }

        // Bins: a pair within the cutoff differs by at most Δ_k = cutoff/h_k in fractional coordinate k.
        var nb = [Int](repeating: 1, count: 3), reach = [Int](repeating: 1, count: 3), width = [Double](repeating: 1, count: 3)
        for k in 0..<3 {
            let delta = cutoff / heights[k]
            let range = periodic[k] ? 1.0 : Swift.max(hi[k] - lo[k], 0)
            // Cap the bin count so that sparse or huge frames do not allocate absurd grids.
            nb[k] = Swift.max(1, Swift.min(Int((range / delta).rounded(.down)), 1 + 2 * Int(Double(n).squareRoot()) + 64))
            if !periodic[k] && range == 0 { nb[k] = 1 }
            width[k] = range > 0 ? range / Double(nb[k]) : 1
            reach[k] = Swift.max(1, Int((delta / width[k]).rounded(.up)))
            if !periodic[k] { reach[k] = Swift.min(reach[k], nb[k]) }
        }
        let totalBins = nb[0] * nb[1] * nb[2]
        var binOf = [Int](repeating: 0, count: n)
        var binCount = [Int](repeating: 0, count: totalBins + 1)
        for a in 0..<n {
            var b = [0, 0, 0]
            for k in 0..<3 {
                let f = periodic[k] ? s[3 * a + k] : s[3 * a + k] - lo[k]
                b[k] = Swift.min(Swift.max(Int((f / width[k]).rounded(.down)), 0), nb[k] - 1)
            }
            binOf[a] = (b[0] * nb[1] + b[1]) * nb[2] + b[2]
            binCount[binOf[a] + 1] += 1
        }
        for b in 0..<totalBins { binCount[b + 1] += binCount[b] }
        var binAtoms = [Int](repeating: 0, count: n)
        var fill = binCount
        for a in 0..<n { binAtoms[fill[binOf[a]]] = a; fill[binOf[a]] += 1 }

        // Wrapped Cartesian positions (x − wrap·L) for the distance test.
        var xw = x
        for a in 0..<n {
            for c in 0..<3 {
                xw[3 * a + c] -= Double(wrap[3 * a]) * L[c] + Double(wrap[3 * a + 1]) * L[3 + c] + Double(wrap[3 * a + 2]) * L[6 + c]
            }
        }

        // Neighbouring bin coordinates with the image shift each implies, per axis and center-bin coordinate.
        var table: [[[(bin: Int, shift: Int)]]] = []
        for k in 0..<3 {
            var perBin: [[(bin: Int, shift: Int)]] = []
            for b in 0..<nb[k] {
                var out: [(bin: Int, shift: Int)] = []
                for d in -reach[k]...reach[k] {
                    let t = b + d
                    if periodic[k] {
                        let q = Int((Double(t) / Double(nb[k])).rounded(.down))
                        out.append((t - q * nb[k], q))
                    } else if t >= 0 && t < nb[k] {
                        out.append((t, 0))
                    }
                }
                perBin.append(out)
            }
            table.append(perBin)
        }

        let rc2 = cutoff * cutoff
        // Wrapped positions in bin order, so that the atoms of a bin are contiguous in memory.
        var xb = [Double](repeating: 0, count: 3 * n)
        for p in 0..<n { let b = binAtoms[p]; xb[3 * p] = xw[3 * b]; xb[3 * p + 1] = xw[3 * b + 1]; xb[3 * p + 2] = xw[3 * b + 2] }
        // Centers are visited in bin order (neighbouring centers touch the same bins: cache reuse); each
        // center's pairs go to a scratch buffer and are then laid out by center index.
        var scratchJ: [Int] = [], scratchS: [Int] = []
        scratchJ.reserveCapacity(n * 16); scratchS.reserveCapacity(n * 48)
        var start = [Int](repeating: 0, count: n), countOf = [Int](repeating: 0, count: n)
        var perAtomJ: [Int] = [], perAtomS: [Int] = []
        for pa in 0..<n {
            let a = binAtoms[pa]
            let ba = binOf[a]
            let b0 = ba / (nb[1] * nb[2]), b1 = (ba / nb[2]) % nb[1], b2 = ba % nb[2]
            perAtomJ.removeAll(keepingCapacity: true)
            perAtomS.removeAll(keepingCapacity: true)
            let xa = xb[3 * pa], ya = xb[3 * pa + 1], za = xb[3 * pa + 2]
            for (c0, s0) in table[0][b0] {
                for (c1, s1) in table[1][b1] {
                    for (c2, s2) in table[2][b2] {
                        let bin = (c0 * nb[1] + c1) * nb[2] + c2
                        // Image translation of the neighbour bin, relative to the center.
                        let tx = Double(s0) * L[0] + Double(s1) * L[3] + Double(s2) * L[6] - xa
                        let ty = Double(s0) * L[1] + Double(s1) * L[4] + Double(s2) * L[7] - ya
                        let tz = Double(s0) * L[2] + Double(s1) * L[5] + Double(s2) * L[8] - za
                        for p in binCount[bin]..<binCount[bin + 1] {
                            let dx = xb[3 * p] + tx, dy = xb[3 * p + 1] + ty, dz = xb[3 * p + 2] + tz
                            if dx * dx + dy * dy + dz * dz < rc2 {
                                let b = binAtoms[p]
                                if b == a && s0 == 0 && s1 == 0 && s2 == 0 { continue }
                                perAtomJ.append(b)
                                // Shift with respect to the original (unwrapped) positions.
                                perAtomS.append(s0 - wrap[3 * b] + wrap[3 * a])
                                perAtomS.append(s1 - wrap[3 * b + 1] + wrap[3 * a + 1])
                                perAtomS.append(s2 - wrap[3 * b + 2] + wrap[3 * a + 2])
                            }
                        }
                    }
                }
            }
            // Deterministic order within a center: by neighbour index, then shift.
            let order = perAtomJ.indices.sorted { p, q in
                if perAtomJ[p] != perAtomJ[q] { return perAtomJ[p] < perAtomJ[q] }
                for k in 0..<3 where perAtomS[3 * p + k] != perAtomS[3 * q + k] { return perAtomS[3 * p + k] < perAtomS[3 * q + k] }
                return false
            }
            start[a] = scratchJ.count
            countOf[a] = order.count
            for p in order {
                scratchJ.append(perAtomJ[p])
                scratchS.append(perAtomS[3 * p]); scratchS.append(perAtomS[3 * p + 1]); scratchS.append(perAtomS[3 * p + 2])
            }
        }
        let total = scratchJ.count
        var fi = [Int](repeating: 0, count: total), fj = [Int](repeating: 0, count: total), fs = [Int](repeating: 0, count: 3 * total)
        var o = 0
        for a in 0..<n {
            for q in start[a]..<(start[a] + countOf[a]) {
                fi[o] = a
                fj[o] = scratchJ[q]
                fs[3 * o] = scratchS[3 * q]; fs[3 * o + 1] = scratchS[3 * q + 1]; fs[3 * o + 2] = scratchS[3 * q + 2]
                o += 1
            }
        }
        return NeighborList(first: fi, second: fj, shifts: fs, atomCount: n, cutoff: cutoff)
    }

    /// Pair vectors r_ij = x_j − x_i + S·cell as a tape expression, differentiable with respect to
    /// positions [N, 3] and cell [3, 3].
    public func pairVectors(positions: Variable, cell: Variable) -> Variable {
        let d = positions.gatherRows(second) - positions.gatherRows(first)
        guard hasShifts else { return d }
        if !cell.isTracked { return d + shiftVectors(cell: cell.value) }
        return d + matmul(Variable(constant: shiftTensor), cell)
    }

    /// Pair vectors as plain values.
    public func pairVectors(positions: Tensor, cell: Tensor) -> Tensor {
        var d = positions.gatherRows(second) - positions.gatherRows(first)
        if hasShifts { d = d + shiftVectors(cell: cell) }
        return d
    }

    /// Indices of the pairs with i < j, or i == j with a shift whose first nonzero component is positive:
    /// each undirected pair exactly once.
    public var halfPairIndices: [Int] {
        var out: [Int] = []
        out.reserveCapacity(pairCount / 2)
        for p in 0..<pairCount where isCanonical(p) { out.append(p) }
        return out
    }

    /// Whether pair p is the orientation of its undirected pair that the half list keeps: i < j, or i == j with
    /// a shift whose first nonzero component is positive.
    @inline(__always)
    func isCanonical(_ p: Int) -> Bool {
        let i = first[p], j = second[p]
        if i != j { return i < j }
        let s = (shifts[3 * p], shifts[3 * p + 1], shifts[3 * p + 2])
        return s.0 > 0 || (s.0 == 0 && (s.1 > 0 || (s.1 == 0 && s.2 > 0)))
    }

    /// Each undirected pair once: `representatives` (pair indices, first occurrence in list order) and, for
    /// every directed pair, the position in `representatives` of the pair it shares its undirected identity
    /// with ((i, j, S) and (j, i, −S)). Per-pair quantities that depend on the pair only through |r_ij| or
    /// other symmetric inputs (radial filters) are then computed once per undirected pair. A pair whose
    /// reverse is missing (a list cut at a cutoff, rounding at the boundary) is its own representative.
    public var undirectedPairs: (representatives: [Int], representativeOf: [Int]) {
        struct Key: Hashable { let i, j, s0, s1, s2: Int }
        var index: [Key: Int] = [:]
        index.reserveCapacity(pairCount / 2 + 1)
        var reps: [Int] = [], repOf = [Int](repeating: 0, count: pairCount)
        reps.reserveCapacity(pairCount / 2 + 1)
        for p in 0..<pairCount {
            let i = first[p], j = second[p], s = (shifts[3 * p], shifts[3 * p + 1], shifts[3 * p + 2])
            // Orientation-free key: the canonical orientation's (i, j, S).
            let key = isCanonical(p) ? Key(i: i, j: j, s0: s.0, s1: s.1, s2: s.2) : Key(i: j, j: i, s0: -s.0, s1: -s.1, s2: -s.2)
            if let r = index[key] {
                repOf[p] = r
            } else {
                index[key] = reps.count
                repOf[p] = reps.count
                reps.append(p)
            }
        }
        return (reps, repOf)
    }

    /// The sub-list of the given pairs (keeps order).
    public func subset(_ pairs: [Int]) -> NeighborList {
        var s: [Int] = []
        s.reserveCapacity(3 * pairs.count)
        for p in pairs { s.append(shifts[3 * p]); s.append(shifts[3 * p + 1]); s.append(shifts[3 * p + 2]) }
        return NeighborList(first: pairs.map { first[$0] }, second: pairs.map { second[$0] }, shifts: s, atomCount: atomCount, cutoff: cutoff)
    }

    /// Pairs shorter than `cutoff` (a tighter cutoff than the list's), from current positions.
    public func within(_ cutoff: Double, positions: Tensor, cell: Tensor) -> NeighborList {
        let r = pairVectors(positions: positions, cell: cell).array
        let rc2 = cutoff * cutoff
        var keep: [Int] = []
        for p in 0..<pairCount {
            let d2 = r[3 * p] * r[3 * p] + r[3 * p + 1] * r[3 * p + 1] + r[3 * p + 2] * r[3 * p + 2]
            if d2 < rc2 { keep.append(p) }
        }
        return subset(keep)
    }
}

/// A neighbour list with a Verlet skin: built with cutoff + skin, and rebuilt only when some atom has moved
/// more than skin/2 since the last build (or the cell changed), so that no pair inside the cutoff is missed.
public struct VerletNeighborList: Sendable {
    public let cutoff: Double
    public let skin: Double
    public private(set) var list: NeighborList
    public private(set) var referencePositions: Tensor
    public private(set) var referenceCell: Tensor
    public private(set) var builds = 1

    public init(_ structure: Structure, cutoff: Double, skin: Double = 0.5) {
        self.init(positions: structure.positions, cell: structure.cell, pbc: structure.pbc, cutoff: cutoff, skin: skin)
    }

    public init(positions: Tensor, cell: Tensor, pbc: [Bool], cutoff: Double, skin: Double = 0.5) {
        self.cutoff = cutoff
        self.skin = skin
        self.pbc = pbc
        list = NeighborList.build(positions: positions, cell: cell, pbc: pbc, cutoff: cutoff + skin)
        referencePositions = positions
        referenceCell = cell
    }

    let pbc: [Bool]

    /// Whether positions (or the cell) moved enough since the last build that pairs could be missed.
    public func needsRebuild(positions: Tensor, cell: Tensor) -> Bool {
        if positions.shape != referencePositions.shape { return true }
        // A changed cell changes image distances; for simplicity any change triggers a rebuild.
        if cell.maxAbsDifference(referenceCell) > 0 { return true }
        let half2 = 0.25 * skin * skin
        return positions.withUnsafeBufferPointer { p in
            referencePositions.withUnsafeBufferPointer { q in
                var i = 0
                while i < p.count {
                    let dx = p[i] - q[i], dy = p[i + 1] - q[i + 1], dz = p[i + 2] - q[i + 2]
                    if dx * dx + dy * dy + dz * dz > half2 { return true }
                    i += 3
                }
                return false
            }
        }
    }

    /// Rebuilds if needed; returns whether it did.
    @discardableResult
    public mutating func update(positions: Tensor, cell: Tensor) -> Bool {
        guard needsRebuild(positions: positions, cell: cell) else { return false }
        list = NeighborList.build(positions: positions, cell: cell, pbc: pbc, cutoff: cutoff + skin)
        referencePositions = positions
        referenceCell = cell
        builds += 1
        return true
    }
}

// MARK: - Minimum image

extension Structure {
    /// Minimum-image displacements `other.positions − positions` under this structure's cell and pbc
    /// (same atom order). For each atom the shortest vector over the neighbouring images of the rounded
    /// fractional difference is taken, which is exact also for skewed cells.
    public func minimumImageDisplacement(to other: Tensor) -> Tensor {
        Structure.minimumImage(other - positions, cell: cell, pbc: pbc)
    }

    /// Shortest image of each row of `d` [N, 3] under `cell` and `pbc`.
    public static func minimumImage(_ d: Tensor, cell: Tensor, pbc: [Bool]) -> Tensor {
        guard pbc.contains(true), let inv = cell.inverse3x3() else { return d }
        let L = cell.array, Li = inv.array
        var out = d
        let n = d.shape[0]
        let ranges = pbc.map { $0 ? [-1, 0, 1] : [0] }
        out.withUnsafeMutableBufferPointer { o in
            for a in 0..<n {
                var v = [o[3 * a], o[3 * a + 1], o[3 * a + 2]]
                // Round the fractional difference along periodic axes.
                var f = [0.0, 0.0, 0.0]
                for k in 0..<3 { f[k] = v[0] * Li[k] + v[1] * Li[3 + k] + v[2] * Li[6 + k] }
                for k in 0..<3 where pbc[k] {
                    let r = f[k].rounded()
                    for c in 0..<3 { v[c] -= r * L[3 * k + c] }
                }
                var best = v, best2 = v[0] * v[0] + v[1] * v[1] + v[2] * v[2]
                for i in ranges[0] { for j in ranges[1] { for k in ranges[2] where i != 0 || j != 0 || k != 0 {
                    var w = v
                    for c in 0..<3 { w[c] += Double(i) * L[c] + Double(j) * L[3 + c] + Double(k) * L[6 + c] }
                    let w2 = w[0] * w[0] + w[1] * w[1] + w[2] * w[2]
                    if w2 < best2 { best2 = w2; best = w }
                } } }
                o[3 * a] = best[0]; o[3 * a + 1] = best[1]; o[3 * a + 2] = best[2]
            }
        }
        return out
    }
}
