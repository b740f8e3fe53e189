import Atoms
import Foundation
import Testing
import Tape
@testable import Potentials

/// e3nn 0.6.0's spherical harmonics and Wigner-3j symbols (Fixtures/e3nn, scripts/peers/e3nn_reference.py).
enum E3nnReference {
    nonisolated(unsafe) static let json: [String: Any] = {
        let data = try! Data(contentsOf: repoRoot.appendingPathComponent("Fixtures/e3nn/reference.json"))
        return try! JSONSerialization.jsonObject(with: data) as! [String: Any]
    }()
}

@Suite struct E3nnConventionTests {
    @Test func sphericalHarmonicsMatchE3nn() {
        let sh = E3nnReference.json["spherical_harmonics"] as! [String: Any]
        let vectors = Tensor(shape: [12, 3], flat(sh["vectors"]))
        let unit = vectors / vectors.norm(rows: true)
        let mine = SphericalHarmonics.evaluateE3nn(Variable(constant: unit), maxDegree: 3).value
        let ref = Tensor(shape: [12, 16], flat(sh["values"]))
        #expect(mine.maxAbsDifference(ref) <= 2e-15, "max |ΔY| \(mine.maxAbsDifference(ref))")
        // Lower degrees are the leading columns.
        let two = SphericalHarmonics.evaluateE3nn(Variable(constant: unit), maxDegree: 2).value
        #expect(two.maxAbsDifference(ref.slice(axis: 1, 0..<9)) <= 2e-15)
    }

    @Test func wigner3jMatchesE3nnForAllDegreesUpToThree() {
        var worst = 0.0, count = 0
        for entry in E3nnReference.json["wigner_3j"] as! [[String: Any]] {
            let l = entry["l"] as! [Int], ref = entry["values"] as! [Double]
            let mine = Wigner3j.symbol(l[0], l[1], l[2])!
            #expect(mine.count == ref.count)
            worst = max(worst, zip(mine, ref).map { abs($0 - $1) }.max()!)
            count += 1
        }
        #expect(count == 34)
        #expect(worst <= 1e-15, "max |ΔC| \(worst)")
        #expect(Wigner3j.symbol(1, 1, 3) == nil && Wigner3j.symbol(3, 0, 2) == nil)
    }

    /// Independent of e3nn: Σ C_abc Y^l1_a(u) Y^l2_b(v) Y^l3_c(w) is invariant under a common rotation of u, v, w
    /// (the defining property of the coupling), for every triple up to l = 3.
    @Test func wigner3jIsRotationInvariant() {
        var rng = SeededGenerator(seed: 4)
        let uvw = rng.normalTensor([3, 3])
        let rot = randomRotation(&rng)
        func harmonics(_ x: Tensor) -> Tensor {
            let u = x / x.norm(rows: true)
            return SphericalHarmonics.evaluateE3nn(Variable(constant: u), maxDegree: 3).value
        }
        let y0 = harmonics(uvw), y1 = harmonics(Tensor.matmul(uvw, rot, transposeB: true))
        var worst = 0.0, largest = 0.0
        for l1 in 0...3 { for l2 in 0...3 { for l3 in abs(l1 - l2)...min(l1 + l2, 3) {
            let c = Wigner3j.symbol(l1, l2, l3)!
            func contract(_ y: Tensor) -> Double {
                var s = 0.0
                for a in 0...(2 * l1) { for b in 0...(2 * l2) { for k in 0...(2 * l3) {
                    s += c[(a * (2 * l2 + 1) + b) * (2 * l3 + 1) + k] * y[0, l1 * l1 + a] * y[1, l2 * l2 + b] * y[2, l3 * l3 + k]
                } } }
                return s
            }
            let a = contract(y0), b = contract(y1)
            worst = max(worst, abs(a - b))
            largest = max(largest, abs(a))
        } } }
        #expect(largest > 0.1)
        #expect(worst <= 1e-14, "max change under rotation \(worst)")
    }
}

extension Tensor {
    /// Row norms as [rows, 1].
    func norm(rows: Bool) -> Tensor {
        let n = shape[0], d = count / n
        return Tensor(shape: [n, 1], (0..<n).map { r in (0..<d).reduce(0.0) { $0 + self[flat: r * d + $1] * self[flat: r * d + $1] }.squareRoot() })
    }
}

/// A small convolution: input degrees 0…3, filter degrees 0…2, output degrees 0…3, shared weight rows, and a
/// second hand-made plan whose paths read and write channel sub-ranges.
struct TensorProductCase {
    let product: EdgeTensorProduct
    let graph: EdgeConvolutionGraph
    var h: [Tensor?]
    var y: Tensor
    var w: Tensor

    static func sevennetLike(seed: UInt64 = 1) -> TensorProductCase {
        var rng = SeededGenerator(seed: seed)
        let tp = SevenNet.tensorProduct(input: [3, 2, 2, 1], filterDegree: 2, outputDegree: 3, scale: 0.7).product
        return make(tp, &rng)
    }

    static func offsets(seed: UInt64 = 2) -> TensorProductCase {
        var rng = SeededGenerator(seed: seed)
        func coupling(_ a: Int, _ b: Int, _ c: Int) -> [Double] { rng.normalTensor([(2 * a + 1) * (2 * b + 1) * (2 * c + 1)]).array }
        let paths = [
            TensorProductPath(lIn: 0, lFilter: 0, lOut: 0, multiplicity: 2, inputOffset: 2, outputOffset: 0, weightOffset: 0, coupling: coupling(0, 0, 0)),
            TensorProductPath(lIn: 1, lFilter: 1, lOut: 1, multiplicity: 3, inputOffset: 0, outputOffset: 1, weightOffset: 2, coupling: coupling(1, 1, 1)),
            TensorProductPath(lIn: 1, lFilter: 1, lOut: 0, multiplicity: 2, inputOffset: 1, outputOffset: 2, weightOffset: 5, coupling: coupling(1, 1, 0)),
        ]
        let tp = EdgeTensorProduct(inputChannels: [4, 3], outputChannels: [4, 4], filterDegree: 1, weightCount: 7, paths: paths, scale: 1.3)
        return make(tp, &rng)
    }

    static func make(_ tp: EdgeTensorProduct, _ rng: inout SeededGenerator) -> TensorProductCase {
        let nodes = 4, edges = 11, rows = 6
        let receivers = (0..<edges).map { $0 * nodes / edges }
        let senders = (0..<edges).map { _ in rng.int(below: nodes) }
        let weightRows = (0..<edges).map { $0 % rows }
        let graph = EdgeConvolutionGraph(receivers: receivers, senders: senders, weightRows: weightRows, nodeCount: nodes, weightRowCount: rows)
        let h: [Tensor?] = tp.inputChannels.enumerated().map { l, c in c > 0 ? rng.normalTensor([nodes, (2 * l + 1) * c]) : nil }
        return TensorProductCase(product: tp, graph: graph, h: h, y: rng.normalTensor([edges, tp.filterWidth]), w: rng.normalTensor([rows, tp.weightCount]))
    }

    var inputs: [Tensor] { h.compactMap { $0 } + [y, w] }
    var hDegrees: [Int] { h.indices.filter { h[$0] != nil } }

    /// Σ_l Σ R_l ⊙ out_l² for fixed random R: nonlinear in the output, so that second derivatives involve every
    /// partial of the product.
    func objective(seed: UInt64 = 9) -> ([Variable]) -> Variable {
        var rng = SeededGenerator(seed: seed)
        let r = product.outputChannels.enumerated().map { l, c in rng.normalTensor([graph.nodeCount, (2 * l + 1) * c]) }
        let degrees = hDegrees, tp = product, g = graph, inputCount = product.inputChannels.count
        return { v in
            var hv = [Variable?](repeating: nil, count: inputCount)
            for (k, l) in degrees.enumerated() { hv[l] = v[k] }
            let out = tp(hv, filter: v[degrees.count], weights: v[degrees.count + 1], graph: g)
            var s = Variable(constant: 0)
            for (l, o) in out.enumerated() { if let o { s = s + (o * o * r[l]).sum() } }
            return s
        }
    }

    /// The convolution by direct loops over the dense couplings (no sparsity, no fusion).
    func reference() -> [Tensor?] {
        var out: [Tensor?] = product.outputChannels.enumerated().map { l, c in c > 0 ? Tensor.zeros([graph.nodeCount, (2 * l + 1) * c]) : nil }
        for e in 0..<graph.edgeCount {
            let i = graph.receivers[e], j = graph.senders[e], wr = graph.weightRows[e]
            for p in product.paths {
                let dIn = 2 * p.lIn + 1, dF = 2 * p.lFilter + 1, dOut = 2 * p.lOut + 1
                let cIn = product.inputChannels[p.lIn], cOut = product.outputChannels[p.lOut]
                for u in 0..<p.multiplicity { for k in 0..<dOut {
                    var acc = 0.0
                    for a in 0..<dIn { for b in 0..<dF {
                        acc += p.coupling[(a * dF + b) * dOut + k] * h[p.lIn]![j, a * cIn + p.inputOffset + u] * y[e, p.lFilter * p.lFilter + b]
                    } }
                    out[p.lOut]![i, k * cOut + p.outputOffset + u] += product.scale * w[wr, p.weightOffset + u] * acc
                } }
            }
        }
        return out
    }
}

@Suite struct EdgeTensorProductTests {
    @Test(arguments: [0, 1])
    func forwardMatchesDirectLoops(which: Int) {
        let c = which == 0 ? TensorProductCase.sevennetLike() : TensorProductCase.offsets()
        let out = c.product(c.h.map { $0.map { Variable(constant: $0) } }, filter: Variable(constant: c.y), weights: Variable(constant: c.w), graph: c.graph)
        let ref = c.reference()
        for (l, r) in ref.enumerated() {
            guard let r else { #expect(out[l] == nil); continue }
            let d = out[l]!.value.maxAbsDifference(r)
            #expect(d <= 1e-12 * max(1, r.maxAbs), "degree \(l): max |Δ| \(d)")
        }
    }

    @Test(arguments: [0, 1])
    func firstDerivativesMatchCentralDifferences(which: Int) {
        let c = which == 0 ? TensorProductCase.sevennetLike() : TensorProductCase.offsets()
        let r = GradCheck.firstOrder(c.objective(), at: c.inputs, step: 1e-6)
        print("EdgeTensorProduct (case \(which)) gradients vs central differences: \(r)")
        #expect(r.passed(tolerance: 1e-7), "\(r)")
    }

    /// Hessian-vector products by double backward: differentiates the recorded partials (∂S/∂h, ∂S/∂Y, ∂S/∂w and
    /// their own backward rules) against differences of the gradient.
    @Test(arguments: [0, 1])
    func secondDerivativesMatchDifferencesOfGradients(which: Int) {
        let c = which == 0 ? TensorProductCase.sevennetLike() : TensorProductCase.offsets()
        for seed in [UInt64(3), 5] {
            let r = GradCheck.secondOrder(c.objective(), at: c.inputs, step: 1e-5, seed: seed)
            print("EdgeTensorProduct (case \(which)) Hessian-vector product vs differences: \(r)")
            #expect(r.passed(tolerance: 1e-7), "\(r)")
        }
    }

    /// Third order: the derivative of a Hessian-vector product (what differentiating recorded forces through a
    /// second recorded backward pass needs) against differences of the recorded HVP.
    @Test func thirdDerivativeMatchesDifferencesOfHessianVectorProducts() {
        let c = TensorProductCase.sevennetLike()
        let f = c.objective()
        var rng = SeededGenerator(seed: 17)
        let v = c.inputs.map { rng.normalTensor($0.shape) }, z = c.inputs.map { rng.normalTensor($0.shape) }
        func hvpDotZ(_ xs: [Variable], _ tape: Tape) -> Variable {
            let g = tape.gradient(of: f(xs), wrt: xs, createGraph: true)
            var gv = Variable(constant: 0)
            for (gk, vk) in zip(g, v) { gv = gv + (gk * vk).sum() }
            let hv = tape.gradient(of: gv, wrt: xs, createGraph: true)
            var s = Variable(constant: 0)
            for (hk, zk) in zip(hv, z) { s = s + (hk * zk).sum() }
            return s
        }
        let tape = Tape()
        let xs = c.inputs.map { tape.variable($0) }
        let analytic = tape.gradient(of: hvpDotZ(xs, tape), wrt: xs).map(\.value)
        let step = 1e-4
        func at(_ t: Double) -> Double {
            let tp = Tape()
            return hvpDotZ(zip(c.inputs, v).map { tp.variable($0 + $1 * t) }, tp).scalar
        }
        let numeric = (8 * (at(step) - at(-step)) - (at(2 * step) - at(-2 * step))) / (12 * step)
        let dot = zip(analytic, v).reduce(0.0) { $0 + $1.0.dot($1.1) }
        #expect(abs(dot - numeric) <= 1e-8 * max(1, abs(numeric)), "third derivative along v: \(dot) vs \(numeric)")
    }

    /// The backward pass recorded (createGraph: true, as when forces are kept for BPTT) and not recorded run the
    /// same kernels: identical bits, so checkpointed and full BPTT agree exactly.
    @Test func recordedAndUnrecordedBackwardAreBitIdentical() {
        let c = TensorProductCase.sevennetLike()
        let f = c.objective()
        func grads(_ record: Bool) -> [Tensor] {
            let tape = Tape()
            let xs = c.inputs.map { tape.variable($0) }
            return tape.gradient(of: f(xs), wrt: xs, createGraph: record).map(\.value)
        }
        let a = grads(false), b = grads(true)
        for (x, y) in zip(a, b) { #expect(x.bitwiseEqual(y)) }
    }

    /// Equivariance: inputs built from spherical harmonics of node vectors, the filter from edge directions;
    /// rotating every vector must rotate every output block by its D^l, which leaves the norm of each (node,
    /// channel) component vector and the dot products between channels unchanged.
    @Test func outputsRotateWithTheInputs() {
        var rng = SeededGenerator(seed: 8)
        let base = TensorProductCase.sevennetLike()
        let tp = base.product, g = base.graph
        let nodeVectors = rng.normalTensor([g.nodeCount * 4, 3]), edgeVectors = rng.normalTensor([g.edgeCount, 3])
        let mix = tp.inputChannels.map { rng.normalTensor([4, max($0, 1)]) }
        let rot = randomRotation(&rng)
        func run(_ rotation: Tensor?) -> [Tensor?] {
            func sh(_ x: Tensor) -> Tensor {
                let r = rotation.map { Tensor.matmul(x, $0, transposeB: true) } ?? x
                return SphericalHarmonics.evaluateE3nn(Variable(constant: r / r.norm(rows: true)), maxDegree: 3).value
            }
            let ys = sh(nodeVectors)
            // h_l[n, m, u] = Σ_q Y^l_m(v_{n,q}) · mix[q, u]: every channel transforms as degree l.
            let h: [Variable?] = tp.inputChannels.enumerated().map { l, c in
                guard c > 0 else { return nil }
                var t = Tensor.zeros([g.nodeCount, (2 * l + 1) * c])
                for n in 0..<g.nodeCount { for m in 0..<(2 * l + 1) { for u in 0..<c {
                    t[n, m * c + u] = (0..<4).reduce(0.0) { $0 + ys[n * 4 + $1, l * l + m] * mix[l][$1, u] }
                } } }
                return Variable(constant: t)
            }
            let y = Variable(constant: sh(edgeVectors).slice(axis: 1, 0..<tp.filterWidth))
            return tp(h, filter: y, weights: Variable(constant: base.w), graph: g).map { $0?.value }
        }
        let a = run(nil), b = run(rot)
        var worst = 0.0, largest = 0.0
        for (l, (x, z)) in zip(a, b).enumerated() {
            guard let x, let z else { continue }
            let d = 2 * l + 1, c = x.shape[1] / d
            for n in 0..<g.nodeCount { for u in 0..<c { for v in 0..<c {
                let px = (0..<d).reduce(0.0) { $0 + x[n, $1 * c + u] * x[n, $1 * c + v] }
                let pz = (0..<d).reduce(0.0) { $0 + z[n, $1 * c + u] * z[n, $1 * c + v] }
                worst = max(worst, abs(px - pz))
                largest = max(largest, abs(px))
            } } }
        }
        #expect(largest > 1e-2)
        #expect(worst <= 1e-12 * largest, "max change of invariants \(worst) (largest \(largest))")
    }
}
