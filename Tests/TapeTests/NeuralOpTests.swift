import Foundation
import Testing
@testable import Tape

/// The fused neural-network operations (linear, layer norm, gathered sums, gated norm, arccos): part of `opCases`, so
/// they are checked to first and second order against finite differences, for releasing their tape, and for giving
/// the same bits whether or not their backward is recorded.
let neuralOpCases: [OpCase] = {
    var c: [OpCase] = []
    c.append(OpCase(name: "linear", shapes: [[5, 3], [4, 3], [4]]) { $0[0].linear($0[1], $0[2]) })
    c.append(OpCase(name: "linearNoBias", shapes: [[5, 3], [4, 3]]) { $0[0].linear($0[1], nil) })
    c.append(OpCase(name: "affine", shapes: [[5, 3], [3, 4], [4]]) { $0[0].affine($0[1], $0[2]) })
    c.append(OpCase(name: "layerNorm", shapes: [[5, 4], [4], [4]]) { $0[0].layerNorm(weight: $0[1], bias: $0[2]) })
    c.append(OpCase(name: "layerNorm3d", shapes: [[2, 3, 4], [4], [4]]) { $0[0].layerNorm(weight: $0[1], bias: $0[2]) })
    c.append(OpCase(name: "acos", shapes: [[3, 4]], domain: .unit) { $0[0].acos() })
    let gi = [4, 0, 0, 2, 4, 1], gj = [3, 3, 1, 0, 2, 1]
    for silu in [false, true] {
        let tag = silu ? "Silu" : ""
        c.append(OpCase(name: "gatheredSum\(tag)", shapes: [[5, 3], [6, 3], [4, 3], [3]]) {
            gatheredSum([($0[0], gi), ($0[1], nil), ($0[2], gj)], bias: $0[3], silu: silu)
        })
        c.append(OpCase(name: "gatheredSum\(tag)NoBias", shapes: [[5, 3], [4, 3]]) {
            gatheredSum([($0[0], gi), ($0[1], gj)], bias: nil, silu: silu)
        })
        c.append(OpCase(name: "gatheredSum\(tag)Identity", shapes: [[6, 2], [2]]) {
            gatheredSum([($0[0], nil)], bias: $0[1], silu: silu)
        })
    }
    c.append(OpCase(name: "gatheredMLP", shapes: [[5, 3], [6, 3], [4, 3], [3], [4, 3], [4]]) {
        gatheredMLP([($0[0], gi), ($0[1], nil), ($0[2], gj)], bias: $0[3], weight: $0[4], bias2: $0[5])
    })
    c.append(OpCase(name: "gatheredMLPNoBiases", shapes: [[5, 3], [4, 3], [2, 3]]) {
        gatheredMLP([($0[0], gi), ($0[1], gj)], bias: nil, weight: $0[2], bias2: nil)
    })
    c.append(OpCase(name: "gatedNorm", shapes: [[6, 4], [4], [4], [6, 4], [4], [4], [6, 4]]) {
        gatedNorm(core: $0[0], $0[1], $0[2], gate: $0[3], $0[4], $0[5], weight: $0[6])
    })
    c.append(OpCase(name: "gatedNormUnweighted", shapes: [[6, 4], [4], [4], [6, 4], [4], [4]]) {
        gatedNorm(core: $0[0], $0[1], $0[2], gate: $0[3], $0[4], $0[5], weight: nil)
    })
    return c
}()

@Suite("Fused neural-network operations")
struct NeuralOpTests {
    static let fused = neuralOpCases.filter { !$0.name.hasPrefix("linear") && $0.name != "affine" && $0.name != "acos" }

    /// `affine` and `softplus(minus:)` replace two operations each in the neural potentials. `affine` gives the
    /// bits of matmul + bias (values and gradients; second derivatives add the same terms in another order);
    /// `softplus(minus:)` uses the vectorised exp and log1p, so everything agrees to rounding.
    @Test func fusedPairsAgreeWithTheirCompositions() {
        var rng = SeededGenerator(seed: 12)
        let xt = rng.normalTensor([700, 24]) * 3, wt = rng.normalTensor([24, 16]), bt = rng.normalTensor([16])
        func run(fusedAffine: Bool, fusedSoftplus: Bool) -> [Tensor] {
            let tape = Tape()
            let x = tape.variable(xt), w = tape.variable(wt), b = tape.variable(bt)
            let h = fusedAffine ? x.affine(w, b) : matmul(x, w) + b
            let y = fusedSoftplus ? h.softplus(minus: log(2.0)) : h.softplus() - log(2.0)
            let e = (y * y).sum()
            let g = tape.gradient(of: e, wrt: [x, w, b], createGraph: true)
            let s = (g[0] * g[0]).sum() + (g[1] * g[1]).sum() + (g[2] * g[2]).sum()
            return [y.value] + g.map(\.value) + tape.gradient(of: s, wrt: [x, w, b]).map(\.value)
        }
        let reference = run(fusedAffine: false, fusedSoftplus: false)
        let affine = run(fusedAffine: true, fusedSoftplus: false), both = run(fusedAffine: true, fusedSoftplus: true)
        for k in 0..<reference.count {
            let scale = reference[k].maxAbs
            if k < 4 { #expect(affine[k].bitwiseEqual(reference[k]), "affine, output \(k)") }
            #expect(affine[k].maxAbsDifference(reference[k]) <= 1e-14 * scale, "affine, output \(k)")
            #expect(both[k].maxAbsDifference(reference[k]) <= 1e-14 * scale, "softplus, output \(k)")
        }
        #expect(!both[0].bitwiseEqual(reference[0]), "softplus: the vectorised path should not give the C library's bits")
    }

    /// The fused values equal their compositions of primitives to rounding.
    @Test func fusedForwardsMatchCompositions() {
        var rng = SeededGenerator(seed: 4)
        let x = rng.normalTensor([6, 4]), g = rng.normalTensor([6, 4]), m = rng.normalTensor([6, 4])
        let w1 = rng.normalTensor([4]), b1 = rng.normalTensor([4]), w2 = rng.normalTensor([4]), b2 = rng.normalTensor([4])
        let v = [x, w1, b1, g, w2, b2, m].map { Variable(constant: $0) }
        let ln = v[0].layerNorm(weight: v[1], bias: v[2]).value
        let lnRef = layerNormComposition(v[0], weight: v[1], bias: v[2], eps: 1e-5).value
        #expect(ln.maxAbsDifference(lnRef) < 1e-14)
        let gn = gatedNorm(core: v[0], v[1], v[2], gate: v[3], v[4], v[5], weight: v[6]).value
        let yc = layerNormComposition(v[0], weight: v[1], bias: v[2], eps: 1e-5), yg = layerNormComposition(v[3], weight: v[4], bias: v[5], eps: 1e-5)
        let gnRef = (yc * yc.sigmoid() * yg.sigmoid() * v[6]).value
        #expect(gn.maxAbsDifference(gnRef) < 1e-14)
        let gs = gatheredSum([(v[0], [5, 0, 2]), (v[3], [1, 1, 4])], bias: v[1], silu: true).value
        let h = v[0].gatherRows([5, 0, 2]) + v[3].gatherRows([1, 1, 4]) + v[1]
        #expect(gs.maxAbsDifference((h * h.sigmoid()).value) < 1e-14)
        // The two-layer gathered MLP gives the bits of the gathered sum with SiLU followed by the linear layer.
        let w = Variable(constant: rng.normalTensor([3, 4])), b = Variable(constant: rng.normalTensor([3]))
        let mlp = gatheredMLP([(v[0], [5, 0, 2]), (v[3], [1, 1, 4])], bias: v[1], weight: w, bias2: b).value
        #expect(mlp.bitwiseEqual(gatheredSum([(v[0], [5, 0, 2]), (v[3], [1, 1, 4])], bias: v[1], silu: true).linear(w, b).value))
    }

    /// Each fused backward's own backward (the second derivative, a fused kernel) against differentiating the backward's
    /// composition of primitives, for random upstream gradients of every output: the two must agree to rounding.
    @Test(arguments: fused)
    func doubleBackwardKernelsMatchCompositions(_ op: OpCase) {
        let inputs = op.inputs(seed: 8)
        var rng = SeededGenerator(seed: 9)
        let probe = op.f(inputs.map { Variable(constant: $0) })
        let seed = rng.normalTensor(probe.shape)
        // Gradient of the inputs (recorded), then a random functional of those gradients differentiated again: once
        // through the fused kernels, once with the tape recording that second pass (which makes the fused ops fall
        // back to their compositions of primitives).
        func secondOrder(recordSecond: Bool) -> [Tensor] {
            let tape = Tape()
            let xs = inputs.map { tape.variable($0) }
            let y = op.f(xs)
            let g = tape.vjp(of: [y], seeds: [Variable(constant: seed)], wrt: xs, createGraph: true)
            var r = SeededGenerator(seed: 10)
            var f = Variable(constant: 0)
            for gk in g { f = f + (gk * r.normalTensor(gk.shape)).sum() }
            return tape.gradient(of: f, wrt: xs, createGraph: recordSecond).map(\.value)
        }
        let kernel = secondOrder(recordSecond: false), composition = secondOrder(recordSecond: true)
        for (k, (a, b)) in zip(kernel, composition).enumerated() {
            let scale = max(a.maxAbs, b.maxAbs, 1e-300)
            #expect(a.maxAbsDifference(b) <= 1e-12 * scale, "\(op) input \(k): \(a.maxAbsDifference(b)) of \(scale)")
        }
    }

    /// Third derivatives (the fused backward's backward recorded, then differentiated) against central differences of
    /// second derivatives.
    @Test(arguments: fused)
    func thirdOrderMatchesDifferencesOfSecondOrder(_ op: OpCase) {
        let inputs = op.inputs(seed: 12)
        var rng = SeededGenerator(seed: 13)
        let v = inputs.map { rng.normalTensor($0.shape) }, u = inputs.map { rng.normalTensor($0.shape) }
        let f = scalarized(op, seed: 12)
        // Hessian-vector product Hv (recorded), then ∂(u·Hv)/∂x by the tape against central differences of u·Hv.
        func hv(_ x: [Tensor], record: Bool) -> (Tape, [Variable], [Variable]) {
            let tape = Tape()
            let xs = x.map { tape.variable($0) }
            let g = tape.gradient(of: f(xs), wrt: xs, createGraph: true)
            var gv = Variable(constant: 0)
            for (gk, vk) in zip(g, v) { gv = gv + (gk * vk).sum() }
            return (tape, xs, tape.gradient(of: gv, wrt: xs, createGraph: record))
        }
        func uHv(_ x: [Tensor]) -> Double { zip(hv(x, record: false).2, u).reduce(0) { $0 + ($1.0.value * $1.1).sum() } }
        let (tape, xs, h) = hv(inputs, record: true)
        var uh = Variable(constant: 0)
        for (hk, uk) in zip(h, u) { uh = uh + (hk * uk).sum() }
        let third = tape.gradient(of: uh, wrt: xs).map(\.value)
        // Directional check along w: third·w against (uHv(x + εw) − uHv(x − εw))/2ε.
        let w = inputs.map { rng.normalTensor($0.shape) }
        let eps = 1e-5
        let numeric = (uHv(zip(inputs, w).map { $0 + $1 * eps }) - uHv(zip(inputs, w).map { $0 - $1 * eps })) / (2 * eps)
        let analytic = zip(third, w).reduce(0) { $0 + ($1.0 * $1.1).sum() }
        #expect(abs(analytic - numeric) <= 1e-6 * max(1, abs(numeric)), "\(op): \(analytic) vs \(numeric)")
    }

    /// A fused op's backward saves only what it reads: nodes hold no output values.
    @Test func fusedNodesKeepOnlyWhatTheirBackwardReads() {
        let tape = Tape()
        var rng = SeededGenerator(seed: 2)
        let x = tape.variable(rng.normalTensor([50, 8])), w = tape.variable(rng.normalTensor([8])), b = tape.variable(rng.normalTensor([8]))
        let y = gatheredSum([(x, nil)], bias: b, silu: false)     // saves nothing
        let z = y.layerNorm(weight: w, bias: b)                    // saves y, w
        let before = tape.memoryProfile().reduce(0) { $0 + $1.bytes }
        _ = tape.gradient(of: z.sum(), wrt: [x], createGraph: true)
        let prof = Dictionary(uniqueKeysWithValues: tape.memoryProfile().map { ($0.name, $0.bytes) })
        #expect(prof["gatheredSum"] == 0)
        #expect(prof["layerNorm"] == 8 * 50 * 8, "\(prof)")    // y (x's leaf is counted for the leaf, w too)
        #expect(before > 0)
    }

    @Test func fastExponentialIsWithinTwoUlpOfLibm() {
        var worst = 0.0
        for k in 0...200_000 {
            let x = -707.9 + 1416.8 * Double(k) / 200_000
            let a = fastExp(x), b = Foundation.exp(x)
            worst = max(worst, abs(a - b) / b)
        }
        #expect(worst <= 4.5e-16, "max relative error \(worst)")
        // Clamped at both ends: no infinities or NaNs reach the sigmoids.
        #expect(fastExp(-1000) > 0 && fastExp(1000).isFinite)
        #expect(fastSigmoid(-800) >= 0 && fastSigmoid(-800) < 1e-300 && fastSigmoid(800) == 1 && fastSigmoid(0) == 0.5)
        #expect(abs(fastSigmoid(-3) - 1 / (1 + Foundation.exp(3))) <= 1e-16)
    }
}
