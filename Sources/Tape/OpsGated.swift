import Foundation

// The gated fused operations of CHGNet's message passing: the two-layer MLP on gathered blocks and the gated
// layer-norm product, built like the operations in OpsNeural.swift (one pass, only what the backward reads kept,
// recorded backwards with fused second derivatives).

// MARK: - Two-layer MLP on gathered blocks

/// SiLU(Σ_k blocks[k].x[index_k] + b₁)·W₂ᵀ + b₂: the first two layers of an MLP on message-passing pairs (the first
/// applied to each block before the gather, as in `gatheredSum`) in one operation. It keeps only the (small) blocks, the
/// weights and the sigmoids of the first layer: the hidden activations, the widest arrays of the MLP, are recomputed
/// from them where the backward needs them, and so is the hidden gradient in the second derivative (one more matrix
/// product instead of two more stored [pairs, hidden] arrays per layer). The same values, bit for bit, as
/// `gatheredSum(blocks, bias: b₁, silu: true).linear(w₂, b₂)`.
public func gatheredMLP(_ blocks: [GatheredBlock], bias b1: Variable?, weight w2: Variable, bias2 b2: Variable?) -> Variable {
    let spec = GatheredSumSpec(blocks, bias: b1)
    precondition(w2.rank == 2 && w2.shape[1] == spec.width, "gatheredMLP: weight \(w2.shape) does not take \(spec.width) inputs")
    precondition(b2 == nil || b2!.shape == [w2.shape[0]], "gatheredMLP: second bias must have shape [\(w2.shape[0])]")
    let first = blocks.map(\.x) + (b1.map { [$0] } ?? [])
    let h = spec.sum(first.map(\.value))
    let sig = Tensor(uninitializedShape: h.shape)
    let hp = ptr(h), sp = ptr(sig), w = spec.width
    parallelRows(spec.rows, perRow: 20 * w) { part in
        let lo = part.lowerBound * w, hi = part.upperBound * w
        for q in lo..<hi { sp[q] = fastSigmoid(hp[q]) }
        for q in lo..<hi { hp[q] = hp[q] * sp[q] }
    }
    let y = Tensor.matmul(h, w2.value, transposeB: true)
    if let b2 { addRows(y, b2.value) }
    let layout = GatheredMLPLayout(spec: spec, hasBias2: b2 != nil)
    let inputs = first + [w2] + (b2.map { [$0] } ?? [])
    return makeFusedOp("gatheredMLP", inputs, [y], saving: .allInputs, extras: [sig]) { c in
        gatheredMLPBackward(layout, c.grad, (0..<c.inputCount).map { c.input($0) }, sigmoids: c.extra(0), needs: c.needs)
    }[0]
}

/// Adds `bias` to every row of `y` (in place; `y` is a fresh tensor), rows split over threads with `parallel`.
@inline(__always)
func addRows(_ y: Tensor, _ bias: Tensor, parallel: Bool = false) {
    if y.kind == .float32 { addRowsT(Float.self, y, bias, parallel) } else { addRowsT(Double.self, y, bias, parallel) }
}

@inline(__always)
func addRowsT<S: TapeScalar>(_: S.Type, _ y: Tensor, _ bias: Tensor, _ parallel: Bool) {
    let n = bias.count, rows = y.count / Swift.max(n, 1), yp = y.storage.typed(S.self), bp = bias.storage.typed(S.self)
    if parallel {
        parallelRows(rows, perRow: n, align: 64) { r in for i in r { let yr = yp + i * n; for k in 0..<n { yr[k] += bp[k] } } }
    } else {
        for r in 0..<rows { let yr = yp + r * n; for k in 0..<n { yr[k] += bp[k] } }
    }
}

/// Input positions of a gathered MLP: blocks, first bias (optional), second weight, second bias (optional).
struct GatheredMLPLayout {
    let spec: GatheredSumSpec
    let hasBias2: Bool
    /// Inputs of the first layer (blocks and bias).
    var firstCount: Int { spec.blockCount + (spec.hasBias ? 1 : 0) }
    var weight: Int { firstCount }
    var bias2: Int? { hasBias2 ? firstCount + 1 : nil }
    var inputCount: Int { firstCount + 1 + (hasBias2 ? 1 : 0) }

    /// Hidden activations SiLU(h) = h·σ(h), recomputed from the first layer's inputs and the saved sigmoids (the
    /// forward pass's values, bit for bit).
    func hidden(_ first: [Tensor], _ sig: Tensor) -> Tensor {
        let y1 = spec.sum(first)
        let p = ptr(y1), s = ptr(sig), w = spec.width
        parallelRows(spec.rows, perRow: w) { part in
            for q in part.lowerBound * w ..< part.upperBound * w { p[q] = p[q] * s[q] }
        }
        return y1
    }
}

/// Backward of `gatheredMLP` from the upstream gradient g of its output: ḡ₁ = g·W₂ into SiLU'(h) and the blocks,
/// gᵀ·SiLU(h) into W₂, Σ g into b₂. One node whose own backward is `gatheredMLPDoubleBackward`.
func gatheredMLPBackward(_ layout: GatheredMLPLayout, _ g: Variable, _ inputs: [Variable], sigmoids: Tensor, needs: [Bool]) -> [Variable?] {
    let spec = layout.spec
    let firstNeeds = Array(needs[0..<layout.firstCount])
    let w2 = inputs[layout.weight].value
    let first = inputs[0..<layout.firstCount].map(\.value)
    let firstGrads = spec.zeroGradients(firstNeeds)
    if firstNeeds.contains(true) {
        spec.scatterSiluGradient(Tensor.matmul(g.value, w2), first.map(ptr), sigmoids: sigmoids, into: firstGrads)
    }
    let wGrad = needs[layout.weight] ? Tensor.matmul(g.value, layout.hidden(first, sigmoids), transposeA: true) : nil
    let b2Grad = layout.bias2.flatMap { needs[$0] ? g.value.sum(toShape: [w2.shape[0]]) : nil }
    let values = firstGrads.compactMap { $0 } + [wGrad, b2Grad].compactMap { $0 }
    let outs = makeFusedOp("gatheredMLPBackward", [g] + inputs, values, saving: .allInputs, extras: [sigmoids]) { c in
        gatheredMLPDoubleBackward(layout, c, produced: needs)
    }
    return spread(outs, needs)
}

/// Backward of the `gatheredMLPBackward` node (inputs g, blocks, b₁, W₂[, b₂]; outputs the gradients flagged in
/// `produced`). With v the upstream gradients of the block and b₁ gradients gathered back onto rows and ḡ₁ = g·W₂
/// (recomputed): ∂/∂ḡ₁ = v ⊙ SiLU'(h) (into g and W₂ through ḡ₁ = g·W₂), ∂/∂h = v ⊙ ḡ₁ ⊙ SiLU''(h); an upstream
/// gradient U of W₂'s gradient gᵀ·SiLU(h) adds SiLU(h)·Uᵀ to g and (g·U) ⊙ SiLU'(h) to h; one of b₂'s adds to g's rows.
private func gatheredMLPDoubleBackward(_ layout: GatheredMLPLayout, _ c: BackwardContext, produced: [Bool]) -> [Variable?] {
    let spec = layout.spec, nFirst = layout.firstCount
    if c.tape.isRecording {
        return c.tape.compositionVJP((0..<c.inputCount).map { c.input($0) }, seeds: c.gradOutputs, needs: c.needs) { v in
            let blocks = (0..<spec.blockCount).map { k in (x: v[1 + k], index: spec.indices[k]) }
            let h = gatheredSum(blocks, bias: spec.hasBias ? v[spec.blockCount + 1] : nil)
            let w2 = v[1 + layout.weight]
            let u = matmul(v[0], w2) * h.siluSlopeExpression()
            var outs: [Variable] = []
            for k in 0..<spec.blockCount where produced[k] { outs.append(spec.indices[k].map { u.scatterAddRows($0, count: spec.counts[k]) } ?? u) }
            if spec.hasBias && produced[spec.blockCount] { outs.append(u.sum(toShape: [spec.width])) }
            if produced[layout.weight] { outs.append(matmul(v[0], h.silu(), transposeA: true)) }
            if let ib = layout.bias2, produced[ib] { outs.append(v[0].sum(toShape: [w2.shape[0]])) }
            return outs
        }
    }
    let up = upstream(c, produced)
    let g = c.input(0).value, w2 = c.input(1 + layout.weight).value, sig = c.extra(0)
    let first = (0..<nFirst).map { c.input(1 + $0).value }
    let rows = spec.rows, w = spec.width, nOut = w2.shape[0]
    let needG = c.needs[0], needW = c.needs[1 + layout.weight]
    let firstNeeds = (0..<nFirst).map { c.needs[1 + $0] }
    var gG: Tensor? = nil, gW: Tensor? = nil, hbar: Tensor? = nil
    func add(_ t: inout Tensor?, _ x: Tensor) { if t == nil { t = x } else { t!.addInPlace(x) } }
    let src = first.map(ptr), sp = ptr(sig)
    if (0..<nFirst).contains(where: { up[$0] != nil }) {
        let gh = Tensor.matmul(g, w2)
        let reach = Tensor(uninitializedShape: [rows, w]), hb = Tensor(uninitializedShape: [rows, w])
        let ghp = ptr(gh), rp = ptr(reach), hbp = ptr(hb), ups = Array(up[0..<nFirst].map { $0.map(ptr) })
        parallelRows(rows, perRow: 30 * w) { part in
            let scratch = Scratch(2 * w)
            let h = scratch[0, width: w], v = scratch[1, width: w]
            for r in part {
                spec.sumRow(r, src, h)
                spec.gatherRow(r, ups, v)
                let gr = ghp + r * w, sr = sp + r * w, rr = rp + r * w, hr = hbp + r * w
                for j in 0..<w { rr[j] = v[j] * siluSlope(h[j], sr[j]) }
                for j in 0..<w { hr[j] = v[j] * gr[j] * siluCurvature(h[j], sr[j]) }
            }
        }
        if needG { add(&gG, Tensor.matmul(reach, w2, transposeB: true)) }
        if needW { add(&gW, Tensor.matmul(g, reach, transposeA: true)) }
        hbar = hb
    }
    if let uw = up[layout.weight] {
        if needG { add(&gG, Tensor.matmul(layout.hidden(first, sig), uw, transposeB: true)) }
        if firstNeeds.contains(true) {
            // ∂/∂SiLU(h) = g·U, into h through SiLU'(h).
            let gy = Tensor.matmul(g, uw), gyp = ptr(gy)
            parallelRows(rows, perRow: 20 * w) { part in
                let scratch = Scratch(w)
                let h = scratch[0, width: w]
                for r in part {
                    spec.sumRow(r, src, h)
                    let gr = gyp + r * w, sr = sp + r * w
                    for j in 0..<w { gr[j] = gr[j] * siluSlope(h[j], sr[j]) }
                }
            }
            add(&hbar, gy)
        }
    }
    if needG, let ib = layout.bias2, let ub = up[ib] {
        let b = Tensor.zeros([rows, nOut])
        addRows(b, ub)
        add(&gG, b)
    }
    var firstGrads = [Tensor?](repeating: nil, count: nFirst)
    if let hbar, firstNeeds.contains(true) {
        firstGrads = spec.zeroGradients(firstNeeds)
        let hp = ptr(hbar), gptrs = firstGrads.map { $0.map(ptr) }
        spec.scatterRows(hp, gptrs)
    }
    // The first backward does not depend on b₂.
    let values: [Tensor?] = [gG] + firstGrads + [gW] + (layout.hasBias2 ? [nil] : [])
    return values.map { $0.map { Variable(constant: $0) } }
}

// MARK: - Gated layer-norm product (CHGNet's gated MLP)

/// The output of CHGNet's gated MLP from its two pre-normalisation branches, times an optional message weight m:
///   SiLU(LN₁(core)) ⊙ σ(LN₂(gate)) ⊙ m
/// (B. Deng et al., Nat. Mach. Intell. 5, 1031 (2023)). One pass; keeps its inputs, the row statistics and the two
/// sigmoids (the backward recomputes the normalised values).
public func gatedNorm(core: Variable, _ w1: Variable, _ b1: Variable, gate: Variable, _ w2: Variable, _ b2: Variable,
                      weight: Variable?, eps: Double = 1e-5) -> Variable {
    let d = core.shape[1], rows = core.shape[0]
    precondition(core.rank == 2 && gate.shape == core.shape && (weight == nil || weight!.shape == core.shape), "gatedNorm: shapes")
    precondition([w1, b1, w2, b2].allSatisfy { $0.shape == [d] }, "gatedNorm: layer-norm weights and biases must have shape [\(d)]")
    let weighted = weight != nil
    var stats = [Double](repeating: 0, count: 4 * rows)
    let out = Tensor(uninitializedShape: core.shape), sigC = Tensor(uninitializedShape: core.shape), sigG = Tensor(uninitializedShape: core.shape)
    let xc = ptr(core.value), wc = ptr(w1.value), bc = ptr(b1.value), xg = ptr(gate.value), wg = ptr(w2.value), bg = ptr(b2.value)
    let m = ptr(weight?.value ?? core.value), o = ptr(out), s1 = ptr(sigC), s2 = ptr(sigG)
    stats.withUnsafeMutableBufferPointer { st in
      let stats = st.baseAddress!
      parallelRows(rows, perRow: 40 * d) { part in
       let scratch = Scratch(2 * d)
       let yc = scratch[0, width: d], yg = scratch[1, width: d]
       for r in part {
        let o0 = r * d
        let xcr = xc + o0, xgr = xg + o0, s1r = s1 + o0, s2r = s2 + o0, or = o + o0, mr = m + o0
        let (mc, sc) = rowStatistics(xcr, d, eps), (mg, sg) = rowStatistics(xgr, d, eps)
        stats[4 * r] = mc; stats[4 * r + 1] = sc; stats[4 * r + 2] = mg; stats[4 * r + 3] = sg
        for k in 0..<d {
            yc[k] = (xcr[k] - mc) * sc * wc[k] + bc[k]
            yg[k] = (xgr[k] - mg) * sg * wg[k] + bg[k]
        }
        for k in 0..<d { s1r[k] = fastSigmoid(yc[k]) }
        for k in 0..<d { s2r[k] = fastSigmoid(yg[k]) }
        if weighted {
            for k in 0..<d { or[k] = yc[k] * s1r[k] * s2r[k] * mr[k] }
        } else {
            for k in 0..<d { or[k] = yc[k] * s1r[k] * s2r[k] }
        }
       }
      }
    }
    let inputs = [core, w1, b1, gate, w2, b2] + (weight.map { [$0] } ?? [])
    return makeFusedOp("gatedNorm", inputs, [out], saving: .allInputs, extras: [sigC, sigG]) { c in
        gatedNormBackward(c.grad, (0..<c.inputCount).map { c.input($0) }, sigmoids: (c.extra(0), c.extra(1)), stats: stats, eps: eps, needs: c.needs)
    }[0]
}

/// The gradients of gatedNorm's inputs (core, w₁, b₁, gate, w₂, b₂[, m]) flagged in `needs`, from the upstream
/// gradient g: one fused pass, recorded as one node whose backward is `gatedNormDoubleBackward`.
func gatedNormBackward(_ g: Variable, _ inputs: [Variable], sigmoids: (Tensor, Tensor), stats: [Double], eps: Double, needs: [Bool]) -> [Variable?] {
    let weighted = inputs.count == 7
    let d = inputs[1].count, rows = inputs[0].shape[0], shape = inputs[0].shape
    let gxc = needs[0] ? Tensor(uninitializedShape: shape) : nil, gxg = needs[3] ? Tensor(uninitializedShape: shape) : nil
    let gwc = Tensor.zeros([d]), gbc = Tensor.zeros([d]), gwg = Tensor.zeros([d]), gbg = Tensor.zeros([d])
    let gm = weighted && needs[6] ? Tensor(uninitializedShape: shape) : nil
    let gp = ptr(g.value), xc = ptr(inputs[0].value), wc = ptr(inputs[1].value), bc = ptr(inputs[2].value)
    let xg = ptr(inputs[3].value), wg = ptr(inputs[4].value), m = weighted ? ptr(inputs[6].value) : gp
    let s1 = ptr(sigmoids.0), s2 = ptr(sigmoids.1)
    let acc = UnsafeMutablePointer<Double>.allocate(capacity: 4 * d)
    defer { acc.deallocate() }
    acc.initialize(repeating: 0, count: 4 * d)
    // Row-parallel; the weight and bias gradients sum over rows in fixed chunks (the same bits for any thread count).
    chunkedRowSum(rows, width: 4 * d, perRow: 40 * d, into: acc) { part, partial in
      let gwcp = partial, gbcp = partial + d, gwgp = partial + 2 * d, gbgp = partial + 3 * d
      let scratch = Scratch(4 * d)
      let gyc = scratch[0, width: d], gyg = scratch[1, width: d], yc = scratch[2, width: d], qs = scratch[3, width: d]
      for r in part {
        let o0 = r * d
        let mc = stats[4 * r], sc = stats[4 * r + 1], mg = stats[4 * r + 2], sg = stats[4 * r + 3]
        let xcr = xc + o0, s1r = s1 + o0, s2r = s2 + o0, gr = gp + o0, mr = m + o0
        // Upstream gradients of the two normalised branches.
        for k in 0..<d { yc[k] = (xcr[k] - mc) * sc * wc[k] + bc[k] }
        let q: UnsafePointer<Double>
        if weighted { for k in 0..<d { qs[k] = gr[k] * mr[k] }; q = UnsafePointer(qs) } else { q = UnsafePointer(gr) }
        for k in 0..<d { gyc[k] = q[k] * s2r[k] * siluSlope(yc[k], s1r[k]) }
        for k in 0..<d { gyg[k] = q[k] * yc[k] * s1r[k] * (s2r[k] * (1 - s2r[k])) }
        if let gm { let gmr = ptr(gm) + o0; for k in 0..<d { gmr[k] = gr[k] * yc[k] * s1r[k] * s2r[k] } }
        layerNormRowBackward(x: xc + o0, mean: mc, rstd: sc, w: wc, gy: gyc, d: d, gx: gxc.map { ptr($0) + o0 }, gw: gwcp, gb: gbcp)
        layerNormRowBackward(x: xg + o0, mean: mg, rstd: sg, w: wg, gy: gyg, d: d, gx: gxg.map { ptr($0) + o0 }, gw: gwgp, gb: gbgp)
      }
    }
    ptr(gwc).update(from: acc, count: d); ptr(gbc).update(from: acc + d, count: d)
    ptr(gwg).update(from: acc + 2 * d, count: d); ptr(gbg).update(from: acc + 3 * d, count: d)
    let values = [gxc, needs[1] ? gwc : nil, needs[2] ? gbc : nil, gxg, needs[4] ? gwg : nil, needs[5] ? gbg : nil] + (weighted ? [gm] : [])
    let outs = makeFusedOp("gatedNormBackward", [g] + inputs, values.compactMap { $0 }, saving: .allInputs, extras: [sigmoids.0, sigmoids.1]) { c in
        gatedNormDoubleBackward(c, stats: stats, eps: eps, produced: needs)
    }
    return spread(outs, needs)
}

/// gatedNorm's backward from differentiable primitives (reference for higher-order fallbacks and tests).
func gatedNormGradients(_ g: Variable, _ v: [Variable], eps: Double) -> [Variable] {
    let xc = v[0], wc = v[1], xg = v[3], wg = v[4]
    let weighted = v.count == 7
    let yc = layerNormComposition(xc, weight: wc, bias: v[2], eps: eps), yg = layerNormComposition(xg, weight: wg, bias: v[5], eps: eps)
    let gm = weighted ? g * v[6] : g
    let sg = yg.sigmoid(), sc = yc.sigmoid()
    let gyc = gm * sg * yc.siluSlopeExpression()
    let gyg = gm * (yc * sc) * (sg * (1 - sg))
    let (gxc, gwc, gbc) = layerNormGradients(xc, weight: wc, upstream: gyc, eps: eps)
    let (gxg, gwg, gbg) = layerNormGradients(xg, weight: wg, upstream: gyg, eps: eps)
    return [gxc, gwc, gbc, gxg, gwg, gbg] + (weighted ? [g * (yc * sc) * sg] : [])
}

/// Backward of the `gatedNormBackward` node: inputs (g, core, w₁, b₁, gate, w₂, b₂[, m]), outputs the gradients
/// flagged in `produced`. Per row: recompute the branches, run the layer norms' double backward for the upstream
/// gradients of the branch inputs and weights, then the reverse of the gate's elementwise stage.
private func gatedNormDoubleBackward(_ c: BackwardContext, stats: [Double], eps: Double, produced: [Bool]) -> [Variable?] {
    let n = c.inputCount, weighted = n == 8
    if c.tape.isRecording {
        return c.tape.compositionVJP((0..<n).map { c.input($0) }, seeds: c.gradOutputs, needs: c.needs) { v in
            zip(gatedNormGradients(v[0], Array(v[1...]), eps: eps), produced).filter(\.1).map(\.0)
        }
    }
    let up = upstream(c, produced)
    let vals = (0..<n).map { c.input($0).value }
    let shape = vals[1].shape, rows = shape[0], d = shape[1]
    let needs = c.needs
    func rowGrad(_ k: Int) -> Tensor? { needs[k] ? Tensor(uninitializedShape: shape) : nil }
    let gG = rowGrad(0), gXc = rowGrad(1), gXg = rowGrad(4), gM = weighted ? rowGrad(7) : nil
    let gWc = Tensor.zeros([d]), gBc = Tensor.zeros([d]), gWg = Tensor.zeros([d]), gBg = Tensor.zeros([d])
    let gp = ptr(vals[0]), xc = ptr(vals[1]), wc = ptr(vals[2]), bc = ptr(vals[3]), xg = ptr(vals[4]), wg = ptr(vals[5]), bg = ptr(vals[6])
    let m = weighted ? ptr(vals[7]) : gp
    let s1p = ptr(c.extra(0)), s2p = ptr(c.extra(1))
    let acc = UnsafeMutablePointer<Double>.allocate(capacity: 4 * d)
    defer { acc.deallocate() }
    acc.initialize(repeating: 0, count: 4 * d)
    let upw = up.map { $0.map(ptr) }
    // Row-parallel; w and b gradients summed over rows in fixed chunks, as in gatedNormBackward.
    chunkedRowSum(rows, width: 4 * d, perRow: 120 * d, into: acc) { part, partial in
    let wcAcc = partial, wgAcc = partial + d, bcAcc = partial + 2 * d, bgAcc = partial + 3 * d
    let scratch = Scratch(20 * d)
    let hc = scratch[0, width: d], hg = scratch[1, width: d], yc = scratch[2, width: d], yg = scratch[3, width: d]
    let gyc = scratch[4, width: d], gyg = scratch[5, width: d], pc = scratch[6, width: d], pg = scratch[7, width: d]
    let hbc = scratch[8, width: d], hbg = scratch[9, width: d], ybc = scratch[10, width: d], ybg = scratch[11, width: d]
    let qs = scratch[12, width: d], slope = scratch[13, width: d], curv = scratch[14, width: d], db = scratch[15, width: d]
    let ya = scratch[16, width: d], qbar = scratch[17, width: d], zeros = scratch[18, width: d]
    // Upstream gradients of the first backward's outputs ∂L/∂(gxc, gwc, gbc, gxg, gwg, gbg, gm); zeros where none arrived.
    let uwc = upw[1] ?? zeros, ubc = upw[2] ?? zeros, uwg = upw[4] ?? zeros, ubg = upw[5] ?? zeros
    let uxc = upw[0], uxg = upw[3], um = weighted ? upw[6] : nil
    for r in part {
        let o = r * d
        let mc = stats[4 * r], sc = stats[4 * r + 1], mg = stats[4 * r + 2], sg = stats[4 * r + 3]
        let s1 = s1p + o, s2 = s2p + o, xcr = xc + o, xgr = xg + o, gr = gp + o, mr = m + o
        let umr = um.map { $0 + o } ?? zeros
        // Forward of the branches and of the gate's elementwise stage (as in gatedNormBackward).
        for k in 0..<d { hc[k] = (xcr[k] - mc) * sc }
        for k in 0..<d { hg[k] = (xgr[k] - mg) * sg }
        for k in 0..<d { yc[k] = hc[k] * wc[k] + bc[k] }
        for k in 0..<d { yg[k] = hg[k] * wg[k] + bg[k] }
        let q: UnsafePointer<Double>
        if weighted { for k in 0..<d { qs[k] = gr[k] * mr[k] }; q = UnsafePointer(qs) } else { q = UnsafePointer(gr) }
        for k in 0..<d { gyc[k] = q[k] * s2[k] * siluSlope(yc[k], s1[k]) }
        for k in 0..<d { gyg[k] = q[k] * yc[k] * s1[k] * (s2[k] * (1 - s2[k])) }
        // Layer norms' double backward: gradients reaching gyc, gyg (pc, pg), h and s directly, and w.
        let sbc = layerNormRowDoubleBackward(h: hc, s: sc, w: wc, gy: gyc, d: d, u: uxc.map { $0 + o } ?? zeros, uw: uwc, ub: ubc,
                                             ggy: pc, gw: wcAcc, hbar: hbc)
        let sbg = layerNormRowDoubleBackward(h: hg, s: sg, w: wg, gy: gyg, d: d, u: uxg.map { $0 + o } ?? zeros, uw: uwg, ub: ubg,
                                             ggy: pg, gw: wgAcc, hbar: hbg)
        // Reverse of the gate's elementwise stage (a = σ(yc), b = σ(yg)).
        for k in 0..<d { slope[k] = siluSlope(yc[k], s1[k]) }
        for k in 0..<d { curv[k] = siluCurvature(yc[k], s1[k]) }
        for k in 0..<d { db[k] = s2[k] * (1 - s2[k]) }
        for k in 0..<d { ya[k] = yc[k] * s1[k] }
        for k in 0..<d { qbar[k] = pc[k] * s2[k] * slope[k] + pg[k] * ya[k] * db[k] }
        if let gG {
            let gGr = ptr(gG) + o
            if weighted { for k in 0..<d { gGr[k] = qbar[k] * mr[k] + umr[k] * ya[k] * s2[k] } } else { for k in 0..<d { gGr[k] = qbar[k] } }
        }
        if let gM { let gMr = ptr(gM) + o; for k in 0..<d { gMr[k] = qbar[k] * gr[k] } }
        for k in 0..<d { ybc[k] = pc[k] * q[k] * s2[k] * curv[k] + pg[k] * q[k] * db[k] * slope[k] }
        for k in 0..<d { ybg[k] = pc[k] * q[k] * slope[k] * db[k] + pg[k] * q[k] * ya[k] * (db[k] * (1 - 2 * s2[k])) }
        if weighted {
            for k in 0..<d { ybc[k] += umr[k] * gr[k] * s2[k] * slope[k] }
            for k in 0..<d { ybg[k] += umr[k] * gr[k] * ya[k] * db[k] }
        }
        // Through y = h·w + b into h, w, b; then h and s into x.
        for k in 0..<d { hbc[k] += ybc[k] * wc[k] }
        for k in 0..<d { hbg[k] += ybg[k] * wg[k] }
        for k in 0..<d { wcAcc[k] += ybc[k] * hc[k] }
        for k in 0..<d { wgAcc[k] += ybg[k] * hg[k] }
        for k in 0..<d { bcAcc[k] += ybc[k] }
        for k in 0..<d { bgAcc[k] += ybg[k] }
        if let gXc { layerNormRowInputGradient(h: hc, s: sc, hbar: hbc, sbar: sbc, d: d, gx: ptr(gXc) + o) }
        if let gXg { layerNormRowInputGradient(h: hg, s: sg, hbar: hbg, sbar: sbg, d: d, gx: ptr(gXg) + o) }
    }
    }
    ptr(gWc).update(from: acc, count: d); ptr(gWg).update(from: acc + d, count: d)
    ptr(gBc).update(from: acc + 2 * d, count: d); ptr(gBg).update(from: acc + 3 * d, count: d)
    let values: [Tensor?] = [gG, gXc, needs[2] ? gWc : nil, needs[3] ? gBc : nil, gXg, needs[5] ? gWg : nil, needs[6] ? gBg : nil] + (weighted ? [gM] : [])
    return values.map { $0.map { Variable(constant: $0) } }
}
