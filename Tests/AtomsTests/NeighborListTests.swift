import Foundation
import Testing
import Tape
@testable import Atoms

/// Random triclinic cell with heights around `scale`, and `n` atoms at fractional coordinates in [−0.5, 1.5)
/// (so unwrapped positions are exercised).
func randomCell(seed: UInt64, n: Int, scale: Double, pbc: [Bool]) -> Structure {
    var rng = SeededGenerator(seed: seed)
    var cell = Tensor.zeros([3, 3])
    for k in 0..<3 {
        for c in 0..<3 { cell[k, c] = (k == c ? scale : 0) + 0.45 * scale * (rng.uniform() - 0.5) }
    }
    var frac = rng.uniformTensor([n, 3], -0.5, 1.5)
    for a in 0..<n { for k in 0..<3 where !pbc[k] { frac[a, k] = rng.uniform() * 1.2 } }
    return Structure(numbers: Array(repeating: 14, count: n), positions: Tensor.matmul(frac, cell), cell: cell, pbc: pbc)
}

/// Heights of a cell (distances between opposite faces).
func cellHeights(_ cell: Tensor) -> [Double] {
    let L = cell.array, vol = abs(cell.determinant3x3)
    return (0..<3).map { k in
        let a = (k + 1) % 3, b = (k + 2) % 3
        let c0 = L[a * 3 + 1] * L[b * 3 + 2] - L[a * 3 + 2] * L[b * 3 + 1]
        let c1 = L[a * 3 + 2] * L[b * 3 + 0] - L[a * 3 + 0] * L[b * 3 + 2]
        let c2 = L[a * 3 + 0] * L[b * 3 + 1] - L[a * 3 + 1] * L[b * 3 + 0]
        return vol / (c0 * c0 + c1 * c1 + c2 * c2).squareRoot()
    }
}

struct Pair: Hashable { let i, j, s0, s1, s2: Int }

/// O(N² · images) reference search.
func bruteForcePairs(_ s: Structure, cutoff: Double) -> Set<Pair> {
    let h = cellHeights(s.cell)
    let frac = s.fractionalPositions()!
    var lo = [0, 0, 0], hi = [0, 0, 0]
    for k in 0..<3 where s.pbc[k] {
        var fmin = Double.infinity, fmax = -Double.infinity
        for a in 0..<s.count { fmin = min(fmin, frac[a, k]); fmax = max(fmax, frac[a, k]) }
        let m = Int((cutoff / h[k]).rounded(.up)) + Int((fmax - fmin).rounded(.up)) + 1
        lo[k] = -m; hi[k] = m
    }
    var out = Set<Pair>()
    let x = s.positions, L = s.cell
    for i in 0..<s.count {
        for j in 0..<s.count {
            for a in lo[0]...hi[0] { for b in lo[1]...hi[1] { for c in lo[2]...hi[2] {
                if i == j && a == 0 && b == 0 && c == 0 { continue }
                var d2 = 0.0
                for q in 0..<3 {
                    let d = x[j, q] - x[i, q] + Double(a) * L[0, q] + Double(b) * L[1, q] + Double(c) * L[2, q]
                    d2 += d * d
                }
                if d2 < cutoff * cutoff { out.insert(Pair(i: i, j: j, s0: a, s1: b, s2: c)) }
            } } }
        }
    }
    return out
}

func pairSet(_ nl: NeighborList) -> Set<Pair> {
    Set((0..<nl.pairCount).map { p in Pair(i: nl.first[p], j: nl.second[p], s0: nl.shifts[3 * p], s1: nl.shifts[3 * p + 1], s2: nl.shifts[3 * p + 2]) })
}

@Suite struct NeighborListTests {
    @Test(arguments: [
        ([true, true, true], 0.5), ([true, true, true], 1.0), ([true, true, true], 2.0), ([true, true, true], 3.0),
        ([true, false, true], 1.5), ([false, false, true], 2.5), ([true, true, false], 0.8), ([false, false, false], 1.0),
    ] as [([Bool], Double)])
    func matchesBruteForceOnRandomTriclinicCells(pbc: [Bool], cutoffOverHeight: Double) {
        for seed in UInt64(1)...4 {
            let s = randomCell(seed: seed, n: 9, scale: 3.0 + Double(seed), pbc: pbc)
            let cutoff = cutoffOverHeight * cellHeights(s.cell).min()!
            let nl = NeighborList.build(s, cutoff: cutoff)
            let ref = bruteForcePairs(s, cutoff: cutoff)
            #expect(pairSet(nl) == ref, "seed \(seed), pbc \(pbc), cutoff \(cutoff): \(nl.pairCount) vs \(ref.count)")
            #expect(nl.pairCount == ref.count, "duplicates in the list")
            // Sorted by center, CSR offsets consistent.
            #expect(nl.first == nl.first.sorted())
            for a in 0..<s.count { #expect(nl.first[nl.offsets[a]..<nl.offsets[a + 1]].allSatisfy { $0 == a }) }
        }
    }

    @Test func moleculeWithoutCell() {
        var rng = SeededGenerator(seed: 3)
        let x = rng.uniformTensor([30, 3], -4, 4)
        let s = Structure(numbers: Array(repeating: 6, count: 30), positions: x)
        let nl = NeighborList.build(s, cutoff: 2.5)
        var ref = Set<Pair>()
        for i in 0..<30 { for j in 0..<30 where i != j {
            let d = (0..<3).map { x[j, $0] - x[i, $0] }
            if d[0] * d[0] + d[1] * d[1] + d[2] * d[2] < 6.25 { ref.insert(Pair(i: i, j: j, s0: 0, s1: 0, s2: 0)) }
        } }
        #expect(pairSet(nl) == ref)
    }

    @Test func diamondSiliconNeighbourCounts() {
        // 2×2×2 conventional diamond cell: 4 first neighbours at 2.35 Å, 12 second at 3.84 Å.
        let s = diamondSilicon(repeats: 2)
        #expect(NeighborList.build(s, cutoff: 3.0).pairCount == 64 * 4)
        #expect(NeighborList.build(s, cutoff: 4.0).pairCount == 64 * 16)
        // The 8-atom cell is thinner than a 6 Å cutoff: many images of the same atoms.
        let small = diamondSilicon(repeats: 1)
        let nl = NeighborList.build(small, cutoff: 6.0)
        #expect(pairSet(nl) == bruteForcePairs(small, cutoff: 6.0))
    }

    @Test func halfListHasEachUndirectedPairOnce() {
        let s = randomCell(seed: 8, n: 6, scale: 3, pbc: [true, true, true])
        let nl = NeighborList.build(s, cutoff: 5)
        let half = nl.halfPairIndices
        #expect(half.count * 2 == nl.pairCount)
        var seen = Set<Pair>()
        for p in half {
            let q = Pair(i: nl.first[p], j: nl.second[p], s0: nl.shifts[3 * p], s1: nl.shifts[3 * p + 1], s2: nl.shifts[3 * p + 2])
            let rev = Pair(i: q.j, j: q.i, s0: -q.s0, s1: -q.s1, s2: -q.s2)
            #expect(!seen.contains(rev))
            seen.insert(q)
        }
    }

    @Test func undirectedPairsMapBothDirectionsToOneRepresentative() {
        // A cell thinner than the cutoff (i == j image pairs) and a periodic batch-like mix of shifts.
        for (s, rc) in [(randomCell(seed: 8, n: 6, scale: 3, pbc: [true, true, true]), 5.0), (diamondSilicon(repeats: 1), 6.0)] {
            let nl = NeighborList.build(s, cutoff: rc)
            let (reps, repOf) = nl.undirectedPairs
            #expect(reps.count * 2 == nl.pairCount)
            #expect(reps.count == nl.halfPairIndices.count)
            var uses = [Int](repeating: 0, count: reps.count)
            for p in 0..<nl.pairCount {
                let r = reps[repOf[p]]
                uses[repOf[p]] += 1
                let same = nl.first[p] == nl.first[r] && nl.second[p] == nl.second[r] && (0..<3).allSatisfy { nl.shifts[3 * p + $0] == nl.shifts[3 * r + $0] }
                let reversed = nl.first[p] == nl.second[r] && nl.second[p] == nl.first[r] && (0..<3).allSatisfy { nl.shifts[3 * p + $0] == -nl.shifts[3 * r + $0] }
                #expect(same || reversed)
                #expect(same == (p == r))
            }
            #expect(uses.allSatisfy { $0 == 2 })
        }
        // Without its reverse, a pair stands for itself.
        let one = NeighborList(first: [0, 1, 1], second: [1, 0, 2], shifts: [0, 0, 0, 0, 0, 0, 0, 0, 1], atomCount: 3, cutoff: 3)
        #expect(one.undirectedPairs.representatives == [0, 2])
        #expect(one.undirectedPairs.representativeOf == [0, 0, 1])
    }

    @Test func pairDistanceGradientsMatchFiniteDifferences() {
        let s = randomCell(seed: 5, n: 5, scale: 3.2, pbc: [true, true, false])
        let nl = NeighborList.build(s, cutoff: 4.5)
        #expect(nl.hasShifts)
        var rng = SeededGenerator(seed: 1)
        let w = rng.normalTensor([nl.pairCount])
        let f: ([Variable]) -> Variable = { v in (nl.pairVectors(positions: v[0], cell: v[1]).norm() * w).sum() }
        let first = GradCheck.firstOrder(f, at: [s.positions, s.cell])
        #expect(first.passed(tolerance: 1e-7), "\(first)")
        let second = GradCheck.secondOrder(f, at: [s.positions, s.cell])
        #expect(second.passed(tolerance: 1e-7), "\(second)")
    }

    @Test func verletListRebuildsOnlyBeyondHalfSkin() {
        let s = diamondSilicon(repeats: 2)
        var v = VerletNeighborList(s, cutoff: 3.0, skin: 0.4)
        var x = s.positions
        x[0, 0] += 0.19
        let rebuilt1 = v.update(positions: x, cell: s.cell)
        #expect(!rebuilt1)
        x[5, 1] -= 0.21
        let rebuilt2 = v.update(positions: x, cell: s.cell)
        #expect(rebuilt2)
        #expect(v.builds == 2)
        // The skin list contains every pair within the cutoff at the moved positions.
        let fresh = NeighborList.build(positions: x, cell: s.cell, pbc: s.pbc, cutoff: 3.0)
        #expect(pairSet(fresh).isSubset(of: pairSet(v.list)))
    }

    @Test func minimumImageInSkewedCell() {
        let s = randomCell(seed: 11, n: 7, scale: 4, pbc: [true, true, true])
        var rng = SeededGenerator(seed: 2)
        let shift = rng.normalTensor([7, 3], scale: 0.3)
        // Move every atom by a small vector plus a random lattice translation.
        var other = s.positions + shift
        for a in 0..<7 {
            let n = [rng.int(below: 5) - 2, rng.int(below: 5) - 2, rng.int(below: 5) - 2]
            for c in 0..<3 { other[a, c] += Double(n[0]) * s.cell[0, c] + Double(n[1]) * s.cell[1, c] + Double(n[2]) * s.cell[2, c] }
        }
        let d = s.minimumImageDisplacement(to: other)
        #expect(d.maxAbsDifference(shift) < 1e-12)
    }
}

/// Diamond silicon, conventional cubic cell a = 5.431 Å repeated r×r×r.
func diamondSilicon(repeats r: Int, a: Double = 5.431) -> Structure {
    let basis: [[Double]] = [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0], [0.25, 0.25, 0.25], [0.25, 0.75, 0.75], [0.75, 0.25, 0.75], [0.75, 0.75, 0.25]]
    var pos: [Double] = []
    for i in 0..<r { for j in 0..<r { for k in 0..<r { for b in basis {
        pos += [(Double(i) + b[0]) * a, (Double(j) + b[1]) * a, (Double(k) + b[2]) * a]
    } } } }
    let n = pos.count / 3
    let L = a * Double(r)
    return Structure(numbers: Array(repeating: 14, count: n), positions: Tensor(shape: [n, 3], pos),
                     cell: Tensor(shape: [3, 3], [L, 0, 0, 0, L, 0, 0, 0, L]), pbc: [true, true, true])
}
