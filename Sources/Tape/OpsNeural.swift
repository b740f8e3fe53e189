import Foundation

// Neural-network operations with fused kernels: linear layers, layer norm, gathered sums (the first layer of an MLP
// on message-passing pairs), arccos; the gated MLP and gated layer-norm product of CHGNet are in OpsGated.swift.
//
// Cost in message passing is streaming [pairs, features] arrays through memory, so each operation makes one pass,
// keeps only what its backward reads (see `Saving`), and recomputes cheap values (row statistics, sigmoids)
// instead of storing them. Each fused operation's backward is itself one recorded operation computed by one fused
// kernel (so forces −∂E/∂x recorded for BPTT cost one node per operation), whose own backward — the second
// derivative that BPTT and Hessian-vector products need — is again a fused kernel. The same kernel gives the
// backward's values whether or not it is recorded, so recording never changes a gradient's bits. Derivative orders
// beyond the second fall back to the composition of differentiable primitives (`Tape.compositionVJP`).
//
// Backward closures capture only plain values, never Variables (a Variable holds its tape: the tape would own a
// cycle through its own nodes).

// MARK: - Kernel helpers

/// Raw pointer to a tensor's elements (kernels in this module write fresh, uniquely referenced tensors only).
@inline(__always)
func ptr(_ t: Tensor) -> UnsafeMutablePointer<Double> { t.storage.pointer }

/// d/dx (x·σ(x)) given s = σ(x).
@inline(__always)
func siluSlope(_ x: Double, _ s: Double) -> Double { s * (1 + x * (1 - s)) }

/// d²/dx² (x·σ(x)) given s = σ(x): σ'(x)·(2 + x(1 − 2σ)).
@inline(__always)
func siluCurvature(_ x: Double, _ s: Double) -> Double { s * (1 - s) * (2 + x * (1 - 2 * s)) }

extension Variable {
    /// d/dx (x·σ(x)) as a differentiable expression (for derivative orders beyond the fused kernels).
    func siluSlopeExpression() -> Variable {
        let s = sigmoid()
        return s * (1 + self * (1 - s))
    }
}

/// The gradients a backward rule returns, from the values it computed for the inputs that need one: `values`
/// holds one Variable per true entry of `needs`, in order.
@inline(__always)
func spread(_ values: [Variable], _ needs: [Bool]) -> [Variable?] {
    var out = [Variable?](repeating: nil, count: needs.count)
    var j = 0
    for k in 0..<needs.count where needs[k] { out[k] = values[j]; j += 1 }
    return out
}

/// Upstream gradients per input of a backward node whose outputs are the gradients of the inputs flagged in
/// `produced` (nil where no output exists or no gradient arrived).
@inline(__always)
func upstream(_ c: BackwardContext, _ produced: [Bool]) -> [Tensor?] {
    var out = [Tensor?](repeating: nil, count: produced.count)
    var j = 0
    for k in 0..<produced.count where produced[k] { out[k] = c.gradOutputs[j]?.value; j += 1 }
    return out
}

// MARK: - Linear layer

extension Variable {
    /// torch.nn.Linear: x·Wᵀ + b with W of shape [out, in]; the bias is added in place of a separate operation.
    public func linear(_ weight: Variable, _ bias: Variable?) -> Variable {
        guard let b = bias else { return matmul(self, weight, transposeB: true) }
        let y = Tensor.matmul(value, weight.value, transposeB: true)
        let n = weight.shape[0], rows = y.count / Swift.max(n, 1)
        precondition(b.shape == [n], "linear: bias of shape \(b.shape) for \(n) outputs")
        _ = rows
        addRows(y, b.value)
        return makeOp("linear", [self, weight, b], y, saving: .inputs(0, 1)) { c in
            let g = c.grad
            return [c.needs[0] ? matmul(g, c.input(1)) : nil,
                    c.needs[1] ? matmul(g, c.input(0), transposeA: true) : nil,
                    c.needs[2] ? g.sum(toShape: [n]) : nil]
        }
    }

    /// x·W + b with W of shape [in, out] (dense layers of the in-house potentials): the bias is added in place,
    /// one node instead of two; values and gradients are the bits of `matmul(x, W) + b`.
    public func affine(_ weight: Variable, _ bias: Variable) -> Variable {
        let y = Tensor.matmul(value, weight.value)
        let n = weight.shape[1], rows = y.count / Swift.max(n, 1)
        precondition(bias.shape == [n], "affine: bias of shape \(bias.shape) for \(n) outputs")
        _ = rows
        addRows(y, bias.value, parallel: true)
        return makeOp("affine", [self, weight, bias], y, saving: .inputs(0, 1)) { c in
            let g = c.grad
            return [c.needs[0] ? matmul(g, c.input(1), transposeB: true) : nil,
                    c.needs[1] ? matmul(c.input(0), g, transposeA: true) : nil,
                    c.needs[2] ? g.sum(toShape: [n]) : nil]
        }
    }

    /// arccos, for |x| < 1; d/dx = −1/√(1 − x²).
    public func acos() -> Variable {
        makeOp("acos", [self], value.map(Foundation.acos), saving: .inputs(0)) { c in
            let x = c.input(0)
            return [-(c.grad / (1 - x * x).sqrt())]
        }
    }
}

// MARK: - Layer norm

/// Σ_k f(k) over k < n with four interleaved accumulators combined as (s₀ + s₁) + (s₂ + s₃): a fixed order (the result
/// depends on nothing but the values), and four independent dependency chains instead of one.
@inline(__always)
func rowSum(_ n: Int, _ f: (Int) -> Double) -> Double {
    var s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0
    var k = 0
    while k &+ 4 <= n { s0 += f(k); s1 += f(k &+ 1); s2 += f(k &+ 2); s3 += f(k &+ 3); k &+= 4 }
    while k < n { s0 += f(k); k &+= 1 }
    return (s0 + s1) + (s2 + s3)
}

/// Mean and 1/√(biased variance + eps) of d values.
@inline(__always)
func rowStatistics(_ x: UnsafePointer<Double>, _ d: Int, _ eps: Double) -> (Double, Double) {
    let mean = rowSum(d) { x[$0] } / Double(d)
    let v = rowSum(d) { let c = x[$0] - mean; return c * c }
    return (mean, 1 / (v / Double(d) + eps).squareRoot())
}

// The row kernels below keep each loop to a few pointers and one output, so that they vectorise (the compiler gives up
// on loops whose pointers it would have to check pairwise for overlap), and reduce with `rowSum`.

/// Layer-norm backward of one row: gx (when given) from the upstream gradient gy of y = x̂·w + b (x̂ = (x − mean)·s);
/// accumulates gw and gb (callers without a use for them pass scratch).
@inline(__always)
func layerNormRowBackward(x: UnsafePointer<Double>, mean: Double, rstd s: Double, w: UnsafePointer<Double>, gy: UnsafePointer<Double>,
                          d: Int, gx: UnsafeMutablePointer<Double>?, gw: UnsafeMutablePointer<Double>, gb: UnsafeMutablePointer<Double>) {
    let m1 = rowSum(d) { gy[$0] * w[$0] } / Double(d)
    let m2 = rowSum(d) { gy[$0] * w[$0] * ((x[$0] - mean) * s) } / Double(d)
    for k in 0..<d { gw[k] += gy[k] * ((x[k] - mean) * s) }
    for k in 0..<d { gb[k] += gy[k] }
    if let gx { for k in 0..<d { gx[k] = s * (gy[k] * w[k] - m1 - (x[k] - mean) * s * m2) } }
}

/// The second derivative of the layer norm of one row, i.e. the backward of `layerNormRowBackward`. With h = x̂ (given),
/// a = gy ⊙ w, ā = mean(a), c = mean(a ⊙ h), the first backward is gx = s(a − ā − h·c), gw = Σ gy ⊙ h, gb = Σ gy.
/// Given the upstream gradients u of gx, uw of gw and ub of gb (zeros where none arrived), this writes the gradient
/// of gy to `ggy`, accumulates that of w into `gw`, writes the gradient reaching h directly to `hbar` and returns the
/// one reaching s (the row's 1/std), for `layerNormRowInputGradient`.
@inline(__always)
func layerNormRowDoubleBackward(h: UnsafePointer<Double>, s: Double, w: UnsafePointer<Double>, gy: UnsafePointer<Double>, d: Int,
                                u: UnsafePointer<Double>, uw: UnsafePointer<Double>, ub: UnsafePointer<Double>,
                                ggy: UnsafeMutablePointer<Double>, gw: UnsafeMutablePointer<Double>, hbar: UnsafeMutablePointer<Double>) -> Double {
    let n = Double(d)
    let abar = rowSum(d) { gy[$0] * w[$0] } / n
    let c = rowSum(d) { gy[$0] * w[$0] * h[$0] } / n
    let ubar = rowSum(d) { u[$0] } / n
    let uh = rowSum(d) { u[$0] * h[$0] } / n
    // big_k = s(u_k − ū − h_k·uh): the gradient reaching a_k.
    for k in 0..<d { ggy[k] = s * (u[k] - ubar - h[k] * uh) }
    for k in 0..<d { gw[k] += ggy[k] * gy[k] }
    for k in 0..<d { ggy[k] = ggy[k] * w[k] + uw[k] * h[k] + ub[k] }
    for k in 0..<d { hbar[k] = uw[k] * gy[k] - s * (u[k] * c + gy[k] * w[k] * uh) }
    return rowSum(d) { u[$0] * (gy[$0] * w[$0] - abar - h[$0] * c) }
}

/// The gradient of x from the gradients reaching h = (x − mean)·s and s = 1/√(var + eps) of one row:
/// s(h̄ − mean(h̄) − h·mean(h̄ ⊙ h)) − s̄·s²·h/d.
@inline(__always)
func layerNormRowInputGradient(h: UnsafePointer<Double>, s: Double, hbar: UnsafePointer<Double>, sbar: Double, d: Int,
                               gx: UnsafeMutablePointer<Double>) {
    let n = Double(d)
    let m1 = rowSum(d) { hbar[$0] } / n
    let m2 = rowSum(d) { hbar[$0] * h[$0] } / n
    let t = sbar * s * s / n
    for k in 0..<d { gx[k] = s * (hbar[k] - m1 - h[k] * m2) - t * h[k] }
}

/// Scratch memory of a kernel: `count` doubles, zeroed, freed with the value.
final class Scratch {
    let base: UnsafeMutablePointer<Double>
    init(_ count: Int) {
        base = .allocate(capacity: Swift.max(count, 1))
        base.initialize(repeating: 0, count: Swift.max(count, 1))
    }
    deinit { base.deallocate() }
    subscript(_ k: Int, width d: Int) -> UnsafeMutablePointer<Double> { base + k * d }
}

extension Variable {
    /// torch.nn.LayerNorm over the last axis: (x − mean)/√(var + eps)·w + b with the biased variance. Keeps only the
    /// input, the weight and the per-row mean and 1/std.
    public func layerNorm(weight: Variable, bias: Variable, eps: Double = 1e-5) -> Variable {
        let d = shape[rank - 1], rows = count / Swift.max(d, 1)
        precondition(weight.shape == [d] && bias.shape == [d], "layerNorm: weight and bias must have shape [\(d)]")
        var stats = [Double](repeating: 0, count: 2 * rows) // mean, 1/std per row
        let y = Tensor(uninitializedShape: shape)
        let x = ptr(value), w = ptr(weight.value), b = ptr(bias.value), yp = ptr(y)
        // Row pointers throughout: an index like o + k carries an overflow check that keeps loops from vectorising.
        for r in 0..<rows {
            let xr = x + r * d, yr = yp + r * d
            let (mean, s) = rowStatistics(xr, d, eps)
            stats[2 * r] = mean
            stats[2 * r + 1] = s
            for k in 0..<d { yr[k] = (xr[k] - mean) * s * w[k] + b[k] }
        }
        return makeOp("layerNorm", [self, weight, bias], y, saving: .inputs(0, 1)) { c in
            layerNormBackward(c.grad, c.input(0), c.input(1), stats: stats, eps: eps, needs: c.needs)
        }
    }
}

/// The gradients of x, w and b (those flagged in `needs`) of the layer norm from its upstream gradient g: one fused
/// pass, recorded as one node when the tape records, whose own backward is `layerNormDoubleBackward`.
func layerNormBackward(_ g: Variable, _ x: Variable, _ w: Variable, stats: [Double], eps: Double, needs: [Bool]) -> [Variable?] {
    let d = w.count, rows = x.count / Swift.max(d, 1)
    let gx = needs[0] ? Tensor(uninitializedShape: x.shape) : nil
    let gw = Tensor.zeros([d]), gb = Tensor.zeros([d])
    let gp = ptr(g.value), xp = ptr(x.value), wp = ptr(w.value), gwp = ptr(gw), gbp = ptr(gb)
    for r in 0..<rows {
        let o = r * d
        layerNormRowBackward(x: xp + o, mean: stats[2 * r], rstd: stats[2 * r + 1], w: wp, gy: gp + o, d: d,
                             gx: gx.map { ptr($0) + o }, gw: gwp, gb: gbp)
    }
    let values = [gx, needs[1] ? gw : nil, needs[2] ? gb : nil].compactMap { $0 }
    let outs = makeMultiOp("layerNormBackward", [g, x, w], values, saving: .allInputs) { c in
        layerNormDoubleBackward(c, stats: stats, eps: eps, produced: needs)
    }
    return spread(outs, needs)
}

/// Backward of the `layerNormBackward` node (inputs g, x, w; outputs the gradients flagged in `produced`).
private func layerNormDoubleBackward(_ c: BackwardContext, stats: [Double], eps: Double, produced: [Bool]) -> [Variable?] {
    if c.tape.isRecording {
        // Third and higher orders: differentiate the composition of primitives.
        return c.tape.compositionVJP([c.input(0), c.input(1), c.input(2)], seeds: c.gradOutputs, needs: c.needs) { v in
            let (gx, gw, gb) = layerNormGradients(v[1], weight: v[2], upstream: v[0], eps: eps)
            return zip([gx, gw, gb], produced).filter(\.1).map(\.0)
        }
    }
    let up = upstream(c, produced)
    let g = c.input(0).value, x = c.input(1).value, w = c.input(2).value
    let d = w.count, rows = x.count / Swift.max(d, 1)
    let gg = c.needs[0] ? Tensor(uninitializedShape: x.shape) : nil
    let gx = c.needs[1] ? Tensor(uninitializedShape: x.shape) : nil
    let gw = Tensor.zeros([d])
    let gp = ptr(g), xp = ptr(x), wp = ptr(w), gwp = ptr(gw)
    // Rows: h, h̄, a sink for ∂/∂g when not needed, zeros standing in for absent upstream gradients.
    let scratch = Scratch(5 * d)
    let h = scratch[0, width: d], hbar = scratch[1, width: d], sink = scratch[2, width: d], zeros = scratch[3, width: d]
    let uw = up[1].map(ptr) ?? zeros, ub = up[2].map(ptr) ?? zeros
    for r in 0..<rows {
        let o = r * d, mean = stats[2 * r], s = stats[2 * r + 1]
        let xr = xp + o
        for k in 0..<d { h[k] = (xr[k] - mean) * s }
        let sbar = layerNormRowDoubleBackward(h: h, s: s, w: wp, gy: gp + o, d: d, u: up[0].map { ptr($0) + o } ?? zeros, uw: uw, ub: ub,
                                              ggy: gg.map { ptr($0) + o } ?? sink, gw: gwp, hbar: hbar)
        if let gx { layerNormRowInputGradient(h: h, s: s, hbar: hbar, sbar: sbar, d: d, gx: ptr(gx) + o) }
    }
    return [gg, gx, c.needs[2] ? gw : nil].map { $0.map { Variable(constant: $0) } }
}

/// The layer-norm derivatives (∂/∂x, ∂/∂w, ∂/∂b of Σ upstream·y) from differentiable primitives.
func layerNormGradients(_ x: Variable, weight w: Variable, upstream g: Variable, eps: Double) -> (Variable, Variable, Variable) {
    let d = x.shape[x.rank - 1]
    let xc = x - x.mean(axes: [-1], keepDims: true)
    let s = 1.0 / ((xc.squared().mean(axes: [-1], keepDims: true)) + eps).sqrt()
    let h = xc * s
    let gh = g * w
    let gx = s * (gh - gh.mean(axes: [-1], keepDims: true) - h * (gh * h).mean(axes: [-1], keepDims: true))
    return (gx, (g * h).sum(toShape: [d]), g.sum(toShape: [d]))
}

/// The layer norm from differentiable primitives (reference for tests and higher-order fallbacks).
func layerNormComposition(_ x: Variable, weight w: Variable, bias b: Variable, eps: Double) -> Variable {
    let xc = x - x.mean(axes: [-1], keepDims: true)
    let s = 1.0 / ((xc.squared().mean(axes: [-1], keepDims: true)) + eps).sqrt()
    return xc * s * w + b
}

// MARK: - Gathered sums

/// A block of `gatheredSum`: rows of `x` picked by `index` (or taken as they are when nil).
public typealias GatheredBlock = (x: Variable, index: [Int]?)

/// Σ_k blocks[k].x[index_k] + bias — rows of each block gathered by its index (or taken as they are when the index
/// is nil), summed, plus an optional bias row — and, with `silu`, SiLU of that sum, in one pass: the first layer of an
/// MLP on pairs whose input is a concatenation of per-atom and per-pair features, applied to each block before the
/// gather. All blocks give the same [rows, width]. Keeps the (small) blocks and, with `silu`, the sigmoids of the sum
/// (an exponential costs more than storing it); the backward recomputes the sum.
public func gatheredSum(_ blocks: [GatheredBlock], bias: Variable?, silu: Bool = false) -> Variable {
    let spec = GatheredSumSpec(blocks, bias: bias)
    let inputs = blocks.map(\.x) + (bias.map { [$0] } ?? [])
    let out = spec.sum(inputs.map(\.value))
    if silu {
        let sig = Tensor(uninitializedShape: out.shape)
        let o = ptr(out), sp = ptr(sig), n = out.count
        for q in 0..<n { sp[q] = fastSigmoid(o[q]) }
        for q in 0..<n { o[q] = o[q] * sp[q] }
        return makeFusedOp("gatheredSumSilu", inputs, [out], saving: .allInputs, extras: [sig]) { c in
            gatheredSumSiluBackward(spec, c.grad, (0..<c.inputCount).map { c.input($0) }, sigmoids: c.extra(0), needs: c.needs)
        }[0]
    }
    return makeOp("gatheredSum", inputs, out, saving: .nothing) { c in
        gatheredSumTranspose(spec, c.grad, needs: c.needs)
    }
}

/// Shapes and indices of a gathered sum: blocks' row counts and indices, width, rows, bias.
struct GatheredSumSpec {
    let indices: [[Int]?]
    let counts: [Int]
    let width: Int
    let rows: Int
    let hasBias: Bool

    init(_ blocks: [GatheredBlock], bias: Variable?) {
        precondition(!blocks.isEmpty, "gatheredSum of no blocks")
        width = blocks[0].x.shape[1]
        rows = blocks[0].index?.count ?? blocks[0].x.shape[0]
        for (x, index) in blocks {
            precondition(x.rank == 2 && x.shape[1] == width && (index?.count ?? x.shape[0]) == rows,
                         "gatheredSum: block \(x.shape) does not fit [\(rows), \(width)]")
            if let idx = index {
                let n = x.shape[0]
                precondition(idx.allSatisfy { $0 >= 0 && $0 < n }, "gatheredSum: index out of range 0..<\(n)")
            }
        }
        precondition(bias == nil || bias!.shape == [width], "gatheredSum: bias must have shape [\(width)]")
        indices = blocks.map(\.index)
        counts = blocks.map { $0.x.shape[0] }
        hasBias = bias != nil
    }

    var blockCount: Int { indices.count }

    /// Row r of the sum into `dst` (bias first, then the blocks in order: the forward pass's order).
    @inline(__always)
    func sumRow(_ r: Int, _ src: [UnsafeMutablePointer<Double>], _ dst: UnsafeMutablePointer<Double>) {
        if hasBias { dst.update(from: src[blockCount], count: width) } else { dst.update(repeating: 0, count: width) }
        for k in 0..<blockCount {
            let s = src[k] + (indices[k].map { $0[r] } ?? r) * width
            for j in 0..<width { dst[j] += s[j] }
        }
    }

    /// The gathered sum of `values` (blocks, then the bias).
    func sum(_ values: [Tensor]) -> Tensor {
        let out = Tensor(uninitializedShape: [rows, width])
        let src = values.map(ptr), o = ptr(out)
        parallelRows(rows, perRow: (blockCount + 1) * width) { part in for r in part { sumRow(r, src, o + r * width) } }
        return out
    }

    /// Adds row r of `u` into the gradient of each block (scattered by its index) and of the bias.
    @inline(__always)
    func scatterRow(_ r: Int, _ u: UnsafePointer<Double>, _ grads: [UnsafeMutablePointer<Double>?]) {
        for k in 0..<blockCount {
            guard let g = grads[k] else { continue }
            let d = g + (indices[k].map { $0[r] } ?? r) * width
            for j in 0..<width { d[j] += u[j] }
        }
        if hasBias, let g = grads[blockCount] { for j in 0..<width { g[j] += u[j] } }
    }

    /// `scatterRow` for every row of `u` (rows × width), in row order, on this thread even when others are free:
    /// one add per element makes the pass memory-bound, and the splits tried (by destination row, by column) cost
    /// more than they saved (perf of a two-thread BPTT step through CHGNet on 216 atoms: these scatters took 6× the
    /// CPU time of the one-thread run's, more wall time than doing them on one thread).
    func scatterRows(_ u: UnsafePointer<Double>, _ grads: [UnsafeMutablePointer<Double>?]) {
        for r in 0..<rows { scatterRow(r, u + r * width, grads) }
    }

    /// Row r of the gradients `ups` of the blocks and the bias gathered back onto the row, into `v` (nil: none arrived).
    @inline(__always)
    func gatherRow(_ r: Int, _ ups: [UnsafeMutablePointer<Double>?], _ v: UnsafeMutablePointer<Double>) {
        if hasBias, let ub = ups[blockCount] { v.update(from: ub, count: width) } else { v.update(repeating: 0, count: width) }
        for k in 0..<blockCount {
            guard let uk = ups[k] else { continue }
            let s = uk + (indices[k].map { $0[r] } ?? r) * width
            for j in 0..<width { v[j] += s[j] }
        }
    }

    /// The backward of SiLU of the sum: per row, u = g ⊙ SiLU'(h) with h recomputed from the blocks `src` and σ(h)
    /// saved, scattered into `grads` (the blocks' and the bias's gradients).
    func scatterSiluGradient(_ g: Tensor, _ src: [UnsafeMutablePointer<Double>], sigmoids: Tensor, into grads: [Tensor?]) {
        let w = width, gp = ptr(g), sp = ptr(sigmoids), gptrs = grads.map { $0.map(ptr) }
        if IntraOpThreads.count > 1 && rows * w * (blockCount + 6) >= IntraOpThreads.minimumWork {
            // u for all rows on several threads, then the scatter in row order on this one (the serial sums' order).
            let u = Tensor(uninitializedShape: [rows, w]), up = ptr(u)
            parallelRows(rows, perRow: (blockCount + 6) * w) { part in
                let scratch = Scratch(w)
                let h = scratch[0, width: w]
                for r in part {
                    sumRow(r, src, h)
                    let gr = gp + r * w, sr = sp + r * w, ur = up + r * w
                    for j in 0..<w { ur[j] = gr[j] * siluSlope(h[j], sr[j]) }
                }
            }
            scatterRows(up, gptrs)
            return
        }
        let scratch = Scratch(2 * w)
        let h = scratch[0, width: w], u = scratch[1, width: w]
        for r in 0..<rows {
            sumRow(r, src, h)
            let gr = gp + r * w, sr = sp + r * w
            for j in 0..<w { u[j] = gr[j] * siluSlope(h[j], sr[j]) }
            scatterRow(r, u, gptrs)
        }
    }

    func zeroGradients(_ needs: [Bool]) -> [Tensor?] {
        (0..<needs.count).map { k in needs[k] ? Tensor.zeros(k < blockCount ? [counts[k], width] : [width]) : nil }
    }
}

/// Backward of the plain gathered sum, the transpose: each block's gradient is the upstream gradient scattered by the
/// block's index, the bias's its column sums. Linear, so its own backward is the gathered sum again.
func gatheredSumTranspose(_ spec: GatheredSumSpec, _ g: Variable, needs: [Bool]) -> [Variable?] {
    // A block taken as it is gets the upstream gradient itself (no copy); the others are scattered.
    let identity = (0..<needs.count).map { k in k < spec.blockCount && spec.indices[k] == nil }
    var grads = spec.zeroGradients(zip(needs, identity).map { $0 && !$1 })
    let gp = ptr(g.value), gptrs = grads.map { $0.map(ptr) }
    spec.scatterRows(gp, gptrs)
    for k in 0..<needs.count where needs[k] && identity[k] { grads[k] = g.value }
    let outs = makeMultiOp("gatheredSumTranspose", [g], grads.compactMap { $0 }, saving: .nothing) { c in
        // Linear: the backward is the gathered sum of the upstream gradients.
        var ups = [Variable?](repeating: nil, count: needs.count)
        var j = 0
        for k in 0..<needs.count where needs[k] { ups[k] = c.gradOutputs[j]; j += 1 }
        let blocks = (0..<spec.blockCount).map { k in
            (x: ups[k] ?? Variable(constant: Tensor.zeros([spec.counts[k], spec.width])), index: spec.indices[k])
        }
        let bias = spec.hasBias ? (ups[spec.blockCount] ?? Variable(constant: Tensor.zeros([spec.width]))) : nil
        return [gatheredSum(blocks, bias: bias)]
    }
    return spread(outs, needs)
}

/// Backward of the gathered sum with SiLU: u = g ⊙ SiLU'(h) with h the recomputed sum and σ(h) saved, scattered into
/// the blocks and summed into the bias; one node whose backward is `gatheredSumSiluDoubleBackward`.
func gatheredSumSiluBackward(_ spec: GatheredSumSpec, _ g: Variable, _ inputs: [Variable], sigmoids: Tensor, needs: [Bool]) -> [Variable?] {
    let grads = spec.zeroGradients(needs)
    spec.scatterSiluGradient(g.value, inputs.map { ptr($0.value) }, sigmoids: sigmoids, into: grads)
    let outs = makeFusedOp("gatheredSumSiluBackward", [g] + inputs, grads.compactMap { $0 }, saving: .allInputs, extras: [sigmoids]) { c in
        gatheredSumSiluDoubleBackward(spec, c, produced: needs)
    }
    return spread(outs, needs)
}

/// Backward of the `gatheredSumSiluBackward` node (inputs g, blocks, bias; outputs the gradients flagged in
/// `produced`). With v = Σ_k Ū_k[index_k] + Ū_b (the upstream gradients gathered back onto rows):
/// ∂/∂g = v ⊙ SiLU'(h), and h̄ = v ⊙ g ⊙ SiLU''(h) scattered into the blocks and the bias.
private func gatheredSumSiluDoubleBackward(_ spec: GatheredSumSpec, _ c: BackwardContext, produced: [Bool]) -> [Variable?] {
    let n = c.inputCount
    if c.tape.isRecording {
        return c.tape.compositionVJP((0..<n).map { c.input($0) }, seeds: c.gradOutputs, needs: c.needs) { v in
            let blocks = (0..<spec.blockCount).map { k in (x: v[1 + k], index: spec.indices[k]) }
            let h = gatheredSum(blocks, bias: spec.hasBias ? v[n - 1] : nil)
            let u = v[0] * h.siluSlopeExpression()
            var outs: [Variable] = []
            for k in 0..<spec.blockCount where produced[k] { outs.append(spec.indices[k].map { u.scatterAddRows($0, count: spec.counts[k]) } ?? u) }
            if spec.hasBias && produced[spec.blockCount] { outs.append(u.sum(toShape: [spec.width])) }
            return outs
        }
    }
    let up = upstream(c, produced)
    let w = spec.width
    let gg = c.needs[0] ? Tensor(uninitializedShape: [spec.rows, w]) : nil
    let inputGrads = spec.zeroGradients(Array(c.needs.dropFirst()))
    let gp = ptr(c.input(0).value), sp = ptr(c.extra(0)), src = (1..<n).map { ptr(c.input($0).value) }
    let ups = up.map { $0.map(ptr) }, gptrs = inputGrads.map { $0.map(ptr) }
    let scratch = Scratch(4 * w)
    let h = scratch[0, width: w], v = scratch[1, width: w], hb = scratch[2, width: w], sink = scratch[3, width: w]
    for r in 0..<spec.rows {
        spec.sumRow(r, src, h)
        spec.gatherRow(r, ups, v)
        let gr = gp + r * w, sr = sp + r * w, ggr = gg.map { ptr($0) + r * w } ?? sink
        for j in 0..<w {
            ggr[j] = v[j] * siluSlope(h[j], sr[j])
            hb[j] = v[j] * gr[j] * siluCurvature(h[j], sr[j])
        }
        spec.scatterRow(r, hb, gptrs)
    }
    return [gg.map { Variable(constant: $0) }] + inputGrads.map { $0.map { Variable(constant: $0) } }
}
