import Foundation
import Testing
@testable import Tape

/// Lennard-Jones cluster (all pairs, no cutoff) written with tape operations.
func ljEnergy(_ x: Variable, sigma: Variable, epsilon: Double = 1) -> Variable {
    let n = x.shape[0]
    var ii: [Int] = [], jj: [Int] = []
    for i in 0..<n { for j in (i + 1)..<n { ii.append(i); jj.append(j) } }
    let r = x.gatherRows(jj) - x.gatherRows(ii)
    let s6 = (sigma / r.norm()).pow(6)
    return ((s6 * s6 - s6) * (4 * epsilon)).sum()
}

/// Hand-written LJ gradient dE/dx (not from the tape).
func ljAnalyticGradient(_ x: Tensor, sigma: Double, epsilon: Double = 1) -> Tensor {
    let n = x.shape[0]
    var g = Tensor.zeros([n, 3])
    for i in 0..<n {
        for j in (i + 1)..<n {
            let d = (0..<3).map { x[j, $0] - x[i, $0] }
            let r = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).squareRoot()
            let dEdr = 4 * epsilon * (-12 * pow(sigma, 12) / pow(r, 13) + 6 * pow(sigma, 6) / pow(r, 7))
            for k in 0..<3 {
                g[j, k] += dEdr * d[k] / r
                g[i, k] -= dEdr * d[k] / r
            }
        }
    }
    return g
}

/// 8 atoms on a slightly distorted cube of edge ≈ 1.12σ.
func ljCluster(seed: UInt64) -> Tensor {
    var rng = SeededGenerator(seed: seed)
    var x = Tensor.zeros([8, 3])
    for a in 0..<8 {
        for k in 0..<3 { x[a, k] = Double((a >> k) & 1) * 1.12 + 0.05 * rng.normal() }
    }
    return x
}

@Suite("Second derivatives")
struct SecondOrderTests {
    @Test func tapeGradientMatchesAnalyticLJ() {
        let x0 = ljCluster(seed: 5)
        let tape = Tape()
        let x = tape.variable(x0)
        let g = tape.gradient(of: ljEnergy(x, sigma: Variable(constant: 1)), wrt: [x])[0].value
        let ref = ljAnalyticGradient(x0, sigma: 1)
        #expect(g.maxAbsDifference(ref) <= 1e-12 * ref.maxAbs)
    }

    @Test func hessianVectorProductOfLJMatchesFiniteDifferencesOfAnalyticGradient() {
        let x0 = ljCluster(seed: 7)
        var rng = SeededGenerator(seed: 11)
        let v = rng.normalTensor([8, 3])
        let tape = Tape()
        let x = tape.variable(x0)
        let hv = tape.hessianVectorProduct(of: ljEnergy(x, sigma: Variable(constant: 1)), wrt: x, vector: v).value
        let h = 1e-5
        let fd = (ljAnalyticGradient(x0 + v * h, sigma: 1) - ljAnalyticGradient(x0 - v * h, sigma: 1)) * (1 / (2 * h))
        let rel = hv.maxAbsDifference(fd) / fd.maxAbs
        #expect(rel < 1e-7, "relative error \(rel)")
    }

    @Test func mixedSecondDerivativeWithRespectToPositionsAndParameter() {
        // ∂²E/∂x∂σ: direction only along σ, compare the x block with FD of ∂E/∂x in σ.
        let x0 = ljCluster(seed: 9)
        let report = GradCheck.secondOrder({ v in ljEnergy(v[0], sigma: v[1]) }, at: [x0, Tensor(scalar: 1.02)],
                                           direction: [Tensor.zeros([8, 3]), Tensor(scalar: 1)])
        #expect(report.passed(tolerance: 1e-7), "\(report)")
        #expect(report.analytic[0].maxAbs > 1)
        // And with a direction along x only, the σ block is ∂²E/∂σ∂x·v.
        var rng = SeededGenerator(seed: 2)
        let report2 = GradCheck.secondOrder({ v in ljEnergy(v[0], sigma: v[1]) }, at: [x0, Tensor(scalar: 1.02)],
                                            direction: [rng.normalTensor([8, 3]), Tensor(scalar: 0)])
        #expect(report2.passed(tolerance: 1e-7), "\(report2)")
    }

    @Test func thirdOrderThroughRecordedBackward() {
        // d/dσ of (v·H·v): differentiating the recorded double-backward once more.
        let x0 = ljCluster(seed: 3)
        var rng = SeededGenerator(seed: 4)
        let v = rng.normalTensor([8, 3])
        func vHv(_ sigma: Double) -> (Double, Double) {
            let tape = Tape()
            let x = tape.variable(x0), s = tape.variable(sigma)
            let hv = tape.hessianVectorProduct(of: ljEnergy(x, sigma: s), wrt: x, vector: v, createGraph: true)
            let q = (hv * v).sum()
            return (q.scalar, tape.gradient(of: q, wrt: [s])[0].scalar)
        }
        let h = 1e-5
        let (_, d) = vHv(1.0)
        let fd = (vHv(1 + h).0 - vHv(1 - h).0) / (2 * h)
        #expect(abs(d - fd) / abs(fd) < 1e-6, "\(d) vs \(fd)")
    }
}

/// A relaxation-like unrolled map x ← x − η ∇E(x; σ), with the forces taken by an inner gradient.
func unrolled(_ tape: Tape, x0: Variable, sigma: Variable, eta: Variable, steps: Int, segment: Int?) -> Variable {
    func step(_ x: Variable, _ s: Variable, _ e: Variable) -> Variable {
        let energy = ljEnergy(x, sigma: s)
        let g = tape.gradient(of: energy, wrt: [x], createGraph: tape.needsHigherOrder)[0]
        return x - g * e
    }
    var x = x0
    var t = 0
    while t < steps {
        if let k = segment {
            let n = min(k, steps - t)
            x = tape.checkpoint([x, sigma, eta]) { v in
                var y = v[0]
                for _ in 0..<n { y = step(y, v[1], v[2]) }
                return [y]
            }[0]
            t += n
        } else {
            x = step(x, sigma, eta)
            t += 1
        }
    }
    return x
}

@Suite("Checkpointing")
struct CheckpointTests {
    func lossAndGradients(segment: Int?, createGraph: Bool) -> [Tensor] {
        let tape = Tape()
        let x0 = tape.variable(ljCluster(seed: 21))
        let sigma = tape.variable(1.01), eta = tape.variable(0.002)
        let xT = unrolled(tape, x0: x0, sigma: sigma, eta: eta, steps: 13, segment: segment)
        let target = ljCluster(seed: 22)
        let loss = (xT - target).squared().sum()
        let g = tape.gradient(of: loss, wrt: [x0, sigma, eta], createGraph: createGraph)
        var out = [loss.value] + g.map(\.value)
        if createGraph {
            // A second-order quantity through the checkpoints: d/dσ of |∂L/∂x0|².
            let q = g[0].squared().sum()
            out += tape.gradient(of: q, wrt: [sigma, eta]).map(\.value)
        }
        return out
    }

    @Test(arguments: [1, 4, 5, 13])
    func checkpointedGradientsAreBitIdentical(segment: Int) {
        let plain = lossAndGradients(segment: nil, createGraph: false)
        let ckpt = lossAndGradients(segment: segment, createGraph: false)
        #expect(plain.count == ckpt.count)
        for (a, b) in zip(plain, ckpt) {
            #expect(a.bitwiseEqual(b), "segment \(segment): \(a) vs \(b)")
        }
    }

    /// With createGraph the recorded backward graph is the same function, but the recomputed segments sit
    /// between backward nodes on the tape, so a later sweep sums in another order: equal to round-off.
    @Test(arguments: [1, 5])
    func checkpointedSecondOrderAgreesToRoundOff(segment: Int) {
        let plain = lossAndGradients(segment: nil, createGraph: true)
        let ckpt = lossAndGradients(segment: segment, createGraph: true)
        #expect(plain.count == ckpt.count)
        for (a, b) in zip(plain, ckpt) {
            #expect(a.maxAbsDifference(b) <= 1e-12 * max(a.maxAbs, 1e-300), "segment \(segment): \(a) vs \(b)")
        }
        // The first-order part is still exact.
        for (a, b) in zip(plain.prefix(4), ckpt.prefix(4)) { #expect(a.bitwiseEqual(b)) }
    }

    @Test func checkpointGradientMatchesFiniteDifferences() {
        let report = GradCheck.firstOrder({ v in
            let tape = v[0].tape ?? Tape()
            let vs = v[0].isTracked ? v : v.map { tape.variable($0.value) }
            let xT = unrolled(tape, x0: vs[0], sigma: vs[1], eta: vs[2], steps: 6, segment: 4)
            return (xT - ljCluster(seed: 22)).squared().sum()
        }, at: [ljCluster(seed: 21), Tensor(scalar: 1.01), Tensor(scalar: 0.002)])
        #expect(report.passed(tolerance: 1e-6), "\(report)")
    }

    /// A gradient with respect to a segment's output (forces at the positions a segment returns, as in the
    /// next segment of a relaxation) must not recompute that segment, nor, through it, the earlier ones.
    @Test func gradientWithRespectToASegmentOutputDoesNotRecomputeIt() {
        final class Count: @unchecked Sendable { var calls = 0 }
        let count = Count()
        let tape = Tape()
        let w = tape.variable(Tensor([2.0]))
        var y = w
        for _ in 0..<3 {
            y = tape.checkpoint([y]) { v in count.calls += 1; return [v[0] * v[0]] }[0]
        }
        let z = (y * 3).sum()
        #expect(count.calls == 3)
        #expect(tape.gradient(of: z, wrt: [y])[0].value.array == [3])
        #expect(count.calls == 3, "no segment recomputed")
        // With respect to the input, every segment is recomputed once: d(3w⁸)/dw = 24w⁷.
        #expect(tape.gradient(of: z, wrt: [w])[0].value.array == [24 * 128])
        #expect(count.calls == 6)
    }

    @Test func checkpointForwardKeepsOnlyInputsAndOutputs() {
        let tape = Tape()
        let x0 = tape.variable(ljCluster(seed: 21))
        let sigma = tape.variable(1.0), eta = tape.variable(0.002)
        _ = unrolled(tape, x0: x0, sigma: sigma, eta: eta, steps: 20, segment: 5)
        // 3 leaves + 4 checkpoint nodes, nothing else recorded.
        #expect(tape.nodeCount == 7)
        let plainTape = Tape()
        let y0 = plainTape.variable(ljCluster(seed: 21))
        _ = unrolled(plainTape, x0: y0, sigma: plainTape.variable(1.0), eta: plainTape.variable(0.002), steps: 20, segment: nil)
        #expect(plainTape.nodeCount > 20 * 10)
    }
}
