import Foundation
import Tape

// Neural-network operations for ported models, as tape operations with fused kernels. CHGNet's cost is in
// streaming [edges, 64] arrays through memory, so each operation makes one pass and keeps as few arrays as its
// backward needs (recomputing sigmoids and normalised values instead of storing them).
//
// Backward rules that are not already compositions of differentiable operations have two paths: a fused kernel
// when the backward pass is not recorded, and the same derivative built from differentiable primitives when it
// is (second derivatives, e.g. ∂F/∂θ for BPTT). Backward closures capture only plain values, never Variables
// (a Variable holds its tape: the tape would own a cycle through its own nodes).

/// Runs `body` with raw pointers to the elements of `tensors` (read-only).
@inline(__always)
private func withPointers<R>(_ tensors: [Tensor], _ body: ([UnsafePointer<Double>]) -> R) -> R {
    var ptrs: [UnsafePointer<Double>] = []
    ptrs.reserveCapacity(tensors.count)
    func go(_ k: Int) -> R {
        if k == tensors.count { return body(ptrs) }
        return tensors[k].withUnsafeBufferPointer { p in
            ptrs.append(p.baseAddress ?? UnsafePointer(bitPattern: 8)!)
            return go(k + 1)
        }
    }
    return go(0)
}

/// Writes `count` elements of a new tensor through `body` (the storage starts zeroed).
@inline(__always)
private func makeTensor(_ shape: [Int], _ body: (UnsafeMutablePointer<Double>) -> Void) -> Tensor {
    var t = Tensor.zeros(shape)
    t.withUnsafeMutableBufferPointer { p in if let b = p.baseAddress { body(b) } }
    return t
}

/// eˣ for the activations: x clamped to [−708, 709], x = k·ln 2 + r with |r| ≤ ln 2/2, e^r by its Taylor series
/// to degree 13 (truncation < 10⁻¹⁷ relative), 2^k assembled from bits. Within 2 ulp of libm's exp, inlined and
/// branch-free (libm's exp took a sixth of CHGNet's time).
@inline(__always)
func fastExp(_ x: Double) -> Double {
    let xc = Swift.min(Swift.max(x, -708.0), 709.0)
    // Adding 1.5·2⁵² rounds x/ln 2 to an integer k held in the low bits of the sum.
    let magic = 6755399441055744.0
    let t = xc * 1.4426950408889634 + magic
    let k = t - magic
    // ln 2 in two parts (Cody–Waite): k·ln2hi is exact for |k| < 2²¹.
    let r = (xc - k * 0.6931471803691238) - k * 1.9082149292705877e-10
    var p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    let scale = Double(bitPattern: (t.bitPattern &- magic.bitPattern &+ 1023) << 52)
    return p * scale
}

/// 1/(1 + e⁻ˣ), evaluated as e/(1 + e) with e = e^−|x| for negative x, so that it never overflows.
@inline(__always)
func fastSigmoid(_ x: Double) -> Double {
    let e = fastExp(-Swift.abs(x))
    return x >= 0 ? 1 / (1 + e) : e / (1 + e)
}

/// d/dx (x·σ(x)) given s = σ(x).
@inline(__always)
private func siluSlope(_ x: Double, _ s: Double) -> Double { s * (1 + x * (1 - s)) }

extension Variable {
    /// d/dx (x·σ(x)) as a differentiable expression.
    fileprivate func siluSlope() -> Variable {
        let s = sigmoid()
        return s * (1 + self * (1 - s))
    }
}

/// Σ_k blocks[k].x[index_k] + bias — rows of each block gathered by its index (or taken as they are when the
/// index is nil), summed, plus an optional bias row — and, with `silu`, SiLU of that sum, in one pass. All
/// blocks give the same [rows, width]. With `silu` the pre-activation sum and its sigmoid are kept.
func gatheredSum(_ blocks: [(x: Variable, index: [Int]?)], bias: Variable?, silu: Bool = false) -> Variable {
    precondition(!blocks.isEmpty, "gatheredSum of no blocks")
    let width = blocks[0].x.shape[1]
    let rows = blocks[0].index?.count ?? blocks[0].x.shape[0]
    for (x, index) in blocks {
        precondition(x.rank == 2 && x.shape[1] == width && (index?.count ?? x.shape[0]) == rows, "gatheredSum: block \(x.shape) does not fit [\(rows), \(width)]")
    }
    let sum = makeTensor([rows, width]) { o in
        if let b = bias {
            b.value.withUnsafeBufferPointer { bp in for r in 0..<rows { for k in 0..<width { o[r * width + k] = bp[k] } } }
        }
        for (x, index) in blocks {
            x.value.withUnsafeBufferPointer { xp in
                guard let src0 = xp.baseAddress else { return }
                if let idx = index {
                    let n = x.shape[0]
                    for r in 0..<rows {
                        let s = idx[r]
                        precondition(s >= 0 && s < n, "gatheredSum: index \(s) out of range 0..<\(n)")
                        let src = src0 + s * width, dst = o + r * width
                        for k in 0..<width { dst[k] += src[k] }
                    }
                } else {
                    for q in 0..<(rows * width) { o[q] += src0[q] }
                }
            }
        }
    }
    // The sigmoids are kept: an exponential costs more than storing and re-reading its result.
    var sig = Tensor.zeros(silu ? [rows, width] : [0])
    let out = silu ? makeTensor([rows, width]) { o in
        sum.withUnsafeBufferPointer { h in
            sig.withUnsafeMutableBufferPointer { sp in
                for q in 0..<(rows * width) { let s = fastSigmoid(h[q]); sp[q] = s; o[q] = h[q] * s }
            }
        }
    } : sum
    let inputs = blocks.map(\.x) + (bias.map { [$0] } ?? [])
    let counts = blocks.map { $0.x.shape[0] }, indices = blocks.map(\.index), hasBias = bias != nil
    return makeOp(silu ? "gatheredSumSilu" : "gatheredSum", inputs, out) { c in
        var gh = c.grad
        if silu {
            if c.tape.isRecording {
                // The pre-activation rebuilt as a differentiable expression of the inputs.
                let parts = indices.indices.map { k in (x: c.input(k), index: indices[k]) }
                gh = gh * gatheredSum(parts, bias: hasBias ? c.input(counts.count) : nil).siluSlope()
            } else {
                gh = Variable(constant: makeTensor([rows, width]) { o in
                    withPointers([gh.value, sum, sig]) { p in
                        let gp = p[0], hp = p[1], sp = p[2]
                        for q in 0..<(rows * width) { o[q] = gp[q] * siluSlope(hp[q], sp[q]) }
                    }
                })
            }
        }
        var g: [Variable?] = indices.enumerated().map { k, idx in
            guard c.needs[k] else { return nil }
            return idx.map { gh.scatterAddRows($0, count: counts[k]) } ?? gh
        }
        if hasBias { g.append(c.needs[counts.count] ? gh.sum(toShape: [width]) : nil) }
        return g
    }
}

extension Variable {
    /// torch.nn.Linear: x·Wᵀ + b with W of shape [out, in]; the bias is added in place of a separate operation.
    func linear(_ weight: Variable, _ bias: Variable?) -> Variable {
        guard let b = bias else { return matmul(self, weight, transposeB: true) }
        var y = Tensor.matmul(value, weight.value, transposeB: true)
        let n = weight.shape[0], rows = y.count / Swift.max(n, 1)
        y.withUnsafeMutableBufferPointer { yp in
            b.value.withUnsafeBufferPointer { bp in for r in 0..<rows { for k in 0..<n { yp[r * n + k] += bp[k] } } }
        }
        return makeOp("linear", [self, weight, b], y) { c in
            let g = c.grad
            return [c.needs[0] ? matmul(g, c.input(1)) : nil,
                    c.needs[1] ? matmul(g, c.input(0), transposeA: true) : nil,
                    c.needs[2] ? g.sum(toShape: [n]) : nil]
        }
    }

    /// torch.nn.LayerNorm over the last axis: (x − mean)/√(var + eps)·w + b with the biased variance. Keeps
    /// only the per-row mean and 1/std besides the input.
    func layerNorm(weight: Variable, bias: Variable, eps: Double = 1e-5) -> Variable {
        let d = shape[rank - 1], rows = count / Swift.max(d, 1)
        precondition(weight.shape == [d] && bias.shape == [d], "layerNorm: weight and bias must have shape [\(d)]")
        var stats = [Double](repeating: 0, count: 2 * rows) // mean, 1/std per row
        let y = makeTensor(shape) { yp in
            withPointers([value, weight.value, bias.value]) { p in
                let x = p[0], w = p[1], b = p[2]
                for r in 0..<rows {
                    let (mean, s) = rowStatistics(x + r * d, d, eps)
                    stats[2 * r] = mean
                    stats[2 * r + 1] = s
                    for k in 0..<d { yp[r * d + k] = (x[r * d + k] - mean) * s * w[k] + b[k] }
                }
            }
        }
        return makeOp("layerNorm", [self, weight, bias], y) { c in
            let g = c.grad
            if c.tape.isRecording {
                let (gx, gw, gb) = layerNormGradients(c.input(0), weight: c.input(1), upstream: g, eps: eps)
                return [c.needs[0] ? gx : nil, c.needs[1] ? gw : nil, c.needs[2] ? gb : nil]
            }
            var gw = Tensor.zeros([d]), gb = Tensor.zeros([d])
            let gx = makeTensor(g.shape) { gxp in
                withPointers([g.value, c.input(0).value, c.input(1).value]) { p in
                    gw.withUnsafeMutableBufferPointer { gwp in
                        gb.withUnsafeMutableBufferPointer { gbp in
                            for r in 0..<rows {
                                let o = r * d
                                layerNormRowBackward(x: p[1] + o, mean: stats[2 * r], rstd: stats[2 * r + 1], w: p[2], gy: p[0] + o, d: d,
                                                     gx: gxp + o, gw: gwp.baseAddress!, gb: gbp.baseAddress!)
                            }
                        }
                    }
                }
            }
            return [c.needs[0] ? Variable(constant: gx) : nil, c.needs[1] ? Variable(constant: gw) : nil, c.needs[2] ? Variable(constant: gb) : nil]
        }
    }

    /// arccos, for |x| < 1; d/dx = −1/√(1 − x²).
    func acos() -> Variable {
        makeOp("acos", [self], value.map(Foundation.acos)) { c in
            let x = c.input(0)
            return [-(c.grad / (1 - x * x).sqrt())]
        }
    }
}

/// Mean and 1/√(biased variance + eps) of d values.
@inline(__always)
private func rowStatistics(_ x: UnsafePointer<Double>, _ d: Int, _ eps: Double) -> (Double, Double) {
    var mean = 0.0
    for k in 0..<d { mean += x[k] }
    mean /= Double(d)
    var v = 0.0
    for k in 0..<d { let c = x[k] - mean; v += c * c }
    return (mean, 1 / (v / Double(d) + eps).squareRoot())
}

/// Layer-norm backward of one row: gx from the upstream gradient gy of y = x̂·w + b; accumulates gw, gb.
@inline(__always)
private func layerNormRowBackward(x: UnsafePointer<Double>, mean: Double, rstd s: Double, w: UnsafePointer<Double>, gy: UnsafePointer<Double>,
                                  d: Int, gx: UnsafeMutablePointer<Double>, gw: UnsafeMutablePointer<Double>, gb: UnsafeMutablePointer<Double>) {
    var m1 = 0.0, m2 = 0.0
    for k in 0..<d {
        let h = (x[k] - mean) * s, gh = gy[k] * w[k]
        m1 += gh
        m2 += gh * h
        gw[k] += gy[k] * h
        gb[k] += gy[k]
    }
    m1 /= Double(d)
    m2 /= Double(d)
    for k in 0..<d { gx[k] = s * (gy[k] * w[k] - m1 - (x[k] - mean) * s * m2) }
}

/// The layer-norm derivatives (∂/∂x, ∂/∂w, ∂/∂b of Σ upstream·y) from differentiable primitives.
private func layerNormGradients(_ x: Variable, weight w: Variable, upstream g: Variable, eps: Double) -> (Variable, Variable, Variable) {
    let d = x.shape[x.rank - 1]
    let xc = x - x.mean(axes: [-1], keepDims: true)
    let s = 1.0 / ((xc.squared().mean(axes: [-1], keepDims: true)) + eps).sqrt()
    let h = xc * s
    let gh = g * w
    let gx = s * (gh - gh.mean(axes: [-1], keepDims: true) - h * (gh * h).mean(axes: [-1], keepDims: true))
    return (gx, (g * h).sum(toShape: [d]), g.sum(toShape: [d]))
}

/// The output of CHGNet's gated MLP from the two pre-normalisation branches, times an optional message weight:
///   SiLU(LN₁(core)) ⊙ σ(LN₂(gate)) ⊙ w.
/// One pass; besides its inputs it keeps the row statistics and the two sigmoids (the backward recomputes the
/// normalised values).
func gatedNorm(core: Variable, _ w1: Variable, _ b1: Variable, gate: Variable, _ w2: Variable, _ b2: Variable,
               weight: Variable?, eps: Double = 1e-5) -> Variable {
    let d = core.shape[1], rows = core.shape[0]
    precondition(core.rank == 2 && gate.shape == core.shape && (weight == nil || weight!.shape == core.shape), "gatedNorm: shapes")
    let weighted = weight != nil
    var stats = [Double](repeating: 0, count: 4 * rows)
    var sigC = Tensor.zeros(core.shape), sigG = Tensor.zeros(core.shape)
    let out = makeTensor(core.shape) { o in
        withPointers([core.value, w1.value, b1.value, gate.value, w2.value, b2.value, weight?.value ?? core.value]) { p in
            let xc = p[0], wc = p[1], bc = p[2], xg = p[3], wg = p[4], bg = p[5], m = p[6]
            sigC.withUnsafeMutableBufferPointer { scp in sigG.withUnsafeMutableBufferPointer { sgp in
                for r in 0..<rows {
                    let o0 = r * d
                    let (mc, sc) = rowStatistics(xc + o0, d, eps), (mg, sg) = rowStatistics(xg + o0, d, eps)
                    stats[4 * r] = mc; stats[4 * r + 1] = sc; stats[4 * r + 2] = mg; stats[4 * r + 3] = sg
                    for k in 0..<d {
                        let yc = (xc[o0 + k] - mc) * sc * wc[k] + bc[k], yg = (xg[o0 + k] - mg) * sg * wg[k] + bg[k]
                        let s1 = fastSigmoid(yc), s2 = fastSigmoid(yg)
                        scp[o0 + k] = s1
                        sgp[o0 + k] = s2
                        let v = yc * s1 * s2
                        o[o0 + k] = weighted ? v * m[o0 + k] : v
                    }
                }
            } }
        }
    }
    let inputs = [core, w1, b1, gate, w2, b2] + (weight.map { [$0] } ?? [])
    return makeOp("gatedNorm", inputs, out) { c in
        let g = c.grad
        if c.tape.isRecording {
            let xc = c.input(0), wc = c.input(1), xg = c.input(3), wg = c.input(4)
            let yc = xc.layerNorm(weight: wc, bias: c.input(2), eps: eps), yg = xg.layerNorm(weight: wg, bias: c.input(5), eps: eps)
            let gm = weighted ? g * c.input(6) : g
            let sg = yg.sigmoid()
            let gyc = gm * sg * yc.siluSlope()
            let gyg = gm * (yc * yc.sigmoid()) * (sg * (1 - sg))
            let (gxc, gwc, gbc) = layerNormGradients(xc, weight: wc, upstream: gyc, eps: eps)
            let (gxg, gwg, gbg) = layerNormGradients(xg, weight: wg, upstream: gyg, eps: eps)
            var grads: [Variable?] = [gxc, gwc, gbc, gxg, gwg, gbg].enumerated().map { k, v in c.needs[k] ? v : nil }
            if weighted { grads.append(c.needs[6] ? g * (yc * yc.sigmoid()) * sg : nil) }
            return grads
        }
        var gwc = Tensor.zeros([d]), gbc = Tensor.zeros([d]), gwg = Tensor.zeros([d]), gbg = Tensor.zeros([d])
        var gxc = Tensor.zeros(g.shape), gxg = Tensor.zeros(g.shape), gm = Tensor.zeros(weighted ? g.shape : [0])
        var scratch = [Double](repeating: 0, count: 2 * d)
        // (p[6], the gate bias, is not needed: the gate's derivative uses only its saved sigmoid.)
        withPointers([g.value, c.input(0).value, c.input(1).value, c.input(2).value, c.input(3).value, c.input(4).value, c.input(5).value,
                      weighted ? c.input(6).value : g.value, sigC, sigG]) { p in
            let gp = p[0], xc = p[1], wc = p[2], bc = p[3], xg = p[4], wg = p[5], m = p[7], sigc = p[8], sigg = p[9]
            gxc.withUnsafeMutableBufferPointer { gxcp in gxg.withUnsafeMutableBufferPointer { gxgp in gm.withUnsafeMutableBufferPointer { gmp in
            gwc.withUnsafeMutableBufferPointer { gwcp in gbc.withUnsafeMutableBufferPointer { gbcp in
            gwg.withUnsafeMutableBufferPointer { gwgp in gbg.withUnsafeMutableBufferPointer { gbgp in
            scratch.withUnsafeMutableBufferPointer { sp in
                let gyc = sp.baseAddress!, gyg = sp.baseAddress! + d
                for r in 0..<rows {
                    let o0 = r * d
                    let mc = stats[4 * r], sc = stats[4 * r + 1], mg = stats[4 * r + 2], sg = stats[4 * r + 3]
                    // Upstream gradients of the two normalised branches.
                    for k in 0..<d {
                        let yc = (xc[o0 + k] - mc) * sc * wc[k] + bc[k]
                        let sgc = sigc[o0 + k], sgg = sigg[o0 + k]
                        let gq = weighted ? gp[o0 + k] * m[o0 + k] : gp[o0 + k]
                        gyc[k] = gq * sgg * siluSlope(yc, sgc)
                        gyg[k] = gq * yc * sgc * (sgg * (1 - sgg))
                        if weighted { gmp[o0 + k] = gp[o0 + k] * yc * sgc * sgg }
                    }
                    layerNormRowBackward(x: xc + o0, mean: mc, rstd: sc, w: wc, gy: gyc, d: d, gx: gxcp.baseAddress! + o0,
                                         gw: gwcp.baseAddress!, gb: gbcp.baseAddress!)
                    layerNormRowBackward(x: xg + o0, mean: mg, rstd: sg, w: wg, gy: gyg, d: d, gx: gxgp.baseAddress! + o0,
                                         gw: gwgp.baseAddress!, gb: gbgp.baseAddress!)
                }
            } } } } } } } }
        }
        var grads: [Variable?] = [gxc, gwc, gbc, gxg, gwg, gbg].enumerated().map { k, v in c.needs[k] ? Variable(constant: v) : nil }
        if weighted { grads.append(c.needs[6] ? Variable(constant: gm) : nil) }
        return grads
    }
}
