import Foundation
import Synchronization
import Testing
@testable import Tape

/// Threads inside one operation (`IntraOpThreads`) change no bit: matrix products in fixed blocks, the fused CHGNet
/// operations (gathered MLP, gated norm, gathered sums) and their first and second backward passes, and the column
/// splits of wide row sums and scatter-adds give the same values on 1, 2 and 3 threads.
@Suite("Threads inside one operation")
struct IntraOpThreadsTests {
    /// Shapes of CHGNet's products (pairs × features, features × features, transposed weight gradients) and odd ones.
    static let products: [(m: Int, n: Int, k: Int)] = [(2000, 64, 64), (64, 64, 2000), (64, 3, 5000), (300, 64, 1100), (1100, 64, 1100), (6500, 64, 64), (216, 64, 64), (400, 64, 64), (700, 64, 32),
                                                        (64, 128, 300), (130, 67, 45), (45, 300, 70), (1000, 3, 64)]

    @Test func matrixProductsAreTheSameBitsOnAnyThreadCount() {
        var rng = SeededGenerator(seed: 31)
        for (m, n, k) in Self.products {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let a = rng.normalTensor(ta ? [k, m] : [m, k]), b = rng.normalTensor(tb ? [n, k] : [k, n])
                let one = Tensor.matmul(a, b, transposeA: ta, transposeB: tb)
                for t in [2, 3] {
                    let many = IntraOpThreads.$count.withValue(t) { Tensor.matmul(a, b, transposeA: ta, transposeB: tb) }
                    let same = many.bitwiseEqual(one)
                    #expect(same, "\(m)×\(n)×\(k) ta \(ta) tb \(tb) on \(t) threads: max |Δ| \(many.maxAbsDifference(one))")
                }
            }
        }
    }

    /// Value, gradient and a second-order gradient (through the fused double backward) of a scalar built from the
    /// fused operations on inputs large enough to be split.
    static func secondOrder(seed: UInt64) -> [Tensor] {
        var rng = SeededGenerator(seed: seed)
        let rows = 1500, atoms = 90, d = 16
        let gi = (0..<rows).map { ($0 * 7) % atoms }, gj = (0..<rows).map { ($0 * 13 + 5) % atoms }
        let tape = Tape()
        let atomX = tape.variable(rng.normalTensor([atoms, d])), pair = tape.variable(rng.normalTensor([rows, d]))
        let b1 = tape.variable(rng.normalTensor([d])), w2 = tape.variable(rng.normalTensor([2 * d, d], scale: 0.3)), b2 = tape.variable(rng.normalTensor([2 * d]))
        let lw1 = tape.variable(rng.normalTensor([d])), lb1 = tape.variable(rng.normalTensor([d]))
        let lw2 = tape.variable(rng.normalTensor([d])), lb2 = tape.variable(rng.normalTensor([d]))
        let m = tape.variable(rng.normalTensor([rows, d]))
        let leaves = [atomX, pair, b1, w2, b2, lw1, lb1, lw2, lb2, m]
        let h = gatheredMLP([(atomX, gi), (pair, nil), (atomX, gj)], bias: b1, weight: w2, bias2: b2)
        let y = gatedNorm(core: h.slice(axis: 1, 0..<d), lw1, lb1, gate: h.slice(axis: 1, d..<(2 * d)), lw2, lb2, weight: m)
        let z = gatheredSum([(atomX, gj), (pair, nil)], bias: b1, silu: true) + gatheredSum([(y, nil), (atomX, gi)], bias: nil, silu: false)
        let e = (y.scatterAddRows(gi, count: atoms) * y.scatterAddRows(gi, count: atoms)).sum() + (z * z).sum()
        let g = tape.gradient(of: e, wrt: leaves, createGraph: true)
        var f = Variable(constant: 0)
        for gk in g { f = f + (gk * rng.normalTensor(gk.shape)).sum() }
        let gg = tape.gradient(of: f, wrt: leaves)
        return [e.value] + g.map(\.value) + gg.map(\.value)
    }

    @Test func fusedOperationsAreTheSameBitsOnAnyThreadCount() {
        let one = Self.secondOrder(seed: 5)
        for t in [2, 3] {
            let before = IntraOpThreads.splits
            let many = IntraOpThreads.$count.withValue(t) { Self.secondOrder(seed: 5) }
            #expect(IntraOpThreads.splits - before >= 20, "only \(IntraOpThreads.splits - before) operations were split")
            for (k, (a, b)) in zip(one, many).enumerated() {
                #expect(a.bitwiseEqual(b), "output \(k) on \(t) threads: max |Δ| \(a.maxAbsDifference(b))")
            }
        }
    }

    /// The persistent workers serve one operation at a time: operations from several structures at once (the others
    /// fall back to dispatch) and long runs of operations back to back (a worker arriving late must not take a part of
    /// the next one) still give the one-thread bits.
    /// Row sums ([rows, w] → [w]) and row scatter-adds split by column only when rows are wide (narrow column
    /// parts cost more than they save); either way each column adds its rows in order: the same bits.
    @Test func wideRowSumsAndScatterAddsSplitByColumnWithTheSameBits() {
        var rng = SeededGenerator(seed: 17)
        for w in [64, 600] {
            let x = rng.normalTensor([400, w])
            let index = (0..<400).map { ($0 * 11) % 37 }
            let one = [x.sum(toShape: [w]), x.scatterAddRows(index, count: 37)]
            for t in [2, 3] {
                let before = IntraOpThreads.splits
                let many = IntraOpThreads.$count.withValue(t) { [x.sum(toShape: [w]), x.scatterAddRows(index, count: 37)] }
                // (other tests may split operations meanwhile: the counter is global)
                if w >= 512 { #expect(IntraOpThreads.splits - before >= 2, "w \(w): \(IntraOpThreads.splits - before) operations split") }
                for (a, b) in zip(one, many) { #expect(a.bitwiseEqual(b), "w \(w) on \(t) threads: max |Δ| \(a.maxAbsDifference(b))") }
            }
        }
    }

    @Test func concurrentCallersAndBackToBackOperationsKeepTheBits() {
        let one = Self.secondOrder(seed: 7)
        let results = Mutex<[[Tensor]]>([])
        DispatchQueue.concurrentPerform(iterations: 3) { _ in
            let r = IntraOpThreads.$count.withValue(2) { Self.secondOrder(seed: 7) }
            results.withLock { $0.append(r) }
        }
        let all = results.withLock { $0 }
        #expect(all.count == 3)
        for r in all { #expect(zip(one, r).allSatisfy { $0.bitwiseEqual($1) }) }
        var rng = SeededGenerator(seed: 3)
        let a = rng.normalTensor([1100, 64]), b = rng.normalTensor([64, 64])
        let reference = Tensor.matmul(a, b)
        var differing = 0
        IntraOpThreads.$count.withValue(3) {
            for _ in 0..<300 where !Tensor.matmul(a, b).bitwiseEqual(reference) { differing += 1 }
        }
        #expect(differing == 0)
    }
}
