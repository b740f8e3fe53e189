import Tape

// The equivariant convolution of NequIP-style networks (S. Batzner et al., Nat. Commun. 13, 2453 (2022))
// as one fused tape operation over all edges: for every directed edge e = (i ← j) and every path
// (l_in ⊗ l_f → l_out) of an e3nn "uvu" tensor product,
//
//     out_i[l_out][k, o + u] += s · w_e[ω + u] · Σ_{a,b} K[a, b, k] · h_j[l_in][a, ι + u] · Y_e[l_f][b]
//
// with one weight per path and input channel u (no channel mixing), per-edge weights w from a radial network,
// the filter Y_e = spherical harmonics of the edge direction, the path's coupling K (Wigner-3j times e3nn's path
// normalisation) and an overall scale s (SevenNet: 1/√(average number of neighbours)). Node features are one
// tensor per degree l, [nodes, (2l+1)·C_l], component-major within a row (row n holds C_l channels of m = −l,
// then of m = −l+1, …), so that a per-degree linear layer is one matrix product on the [nodes·(2l+1), C_l] view.
//
// The convolution is the partial derivative ∂S/∂g of the 4-linear form
//
//     S(g, h, Y, w) = Σ_e Σ_paths s · Σ_{u,k} g_i[l_out][k, o + u] · w_e[ω + u] · Σ_{a,b} K[a, b, k] h_j[l_in][a, ι + u] Y_e[l_f][b],
//
// and its derivatives with respect to h, Y and w are the other three partials, each linear in each of its three
// inputs. The backward rule of every partial is therefore made of partials again (with the upstream gradient in
// place of the slot being differentiated): one kernel per slot, closed under differentiation, so forces recorded
// with `createGraph: true` and their derivatives with respect to the weights (BPTT) run on the same fused kernels,
// and a recorded and an unrecorded backward pass compute bit-identical values.

/// One path of a "uvu" tensor product: channels ι…ι+mul−1 of input degree `lIn` times filter degree `lFilter`
/// into channels o…o+mul−1 of output degree `lOut`, with weight columns ω…ω+mul−1.
public struct TensorProductPath: Sendable, Equatable {
    public var lIn: Int, lFilter: Int, lOut: Int
    public var multiplicity: Int
    public var inputOffset: Int, outputOffset: Int, weightOffset: Int
    /// K[(a·(2l_f+1) + b)·(2l_out+1) + k].
    public var coupling: [Double]

    public init(lIn: Int, lFilter: Int, lOut: Int, multiplicity: Int, inputOffset: Int, outputOffset: Int, weightOffset: Int, coupling: [Double]) {
        precondition(coupling.count == (2 * lIn + 1) * (2 * lFilter + 1) * (2 * lOut + 1), "TensorProductPath: coupling has \(coupling.count) entries")
        self.lIn = lIn
        self.lFilter = lFilter
        self.lOut = lOut
        self.multiplicity = multiplicity
        self.inputOffset = inputOffset
        self.outputOffset = outputOffset
        self.weightOffset = weightOffset
        self.coupling = coupling
    }
}

/// Which directed edges feed which nodes: out rows `receivers[e]`, input rows `senders[e]`, weight rows
/// `weightRows[e]` (several edges may share a row: SevenNet's radial weights depend on |r| only, so both
/// directions of a bond share one). Receivers should be sorted (consecutive writes), which neighbour lists are.
public struct EdgeConvolutionGraph: Sendable {
    public let receivers: [Int]
    public let senders: [Int]
    public let weightRows: [Int]
    public let nodeCount: Int
    public let weightRowCount: Int

    public init(receivers: [Int], senders: [Int], weightRows: [Int], nodeCount: Int, weightRowCount: Int) {
        precondition(receivers.count == senders.count && senders.count == weightRows.count, "EdgeConvolutionGraph: index arrays differ in length")
        precondition(receivers.allSatisfy { $0 >= 0 && $0 < nodeCount } && senders.allSatisfy { $0 >= 0 && $0 < nodeCount },
                     "EdgeConvolutionGraph: node index out of range 0..<\(nodeCount)")
        precondition(weightRows.allSatisfy { $0 >= 0 && $0 < weightRowCount }, "EdgeConvolutionGraph: weight row out of range 0..<\(weightRowCount)")
        self.receivers = receivers
        self.senders = senders
        self.weightRows = weightRows
        self.nodeCount = nodeCount
        self.weightRowCount = weightRowCount
    }

    public var edgeCount: Int { receivers.count }
}

/// A "uvu" tensor-product convolution: its paths, channel counts per degree and the overall scale.
public struct EdgeTensorProduct: Sendable {
    /// Channels per degree l = 0, 1, … of the node features (0: degree absent).
    public let inputChannels: [Int]
    public let outputChannels: [Int]
    /// Filter degrees 0…filterDegree, (filterDegree + 1)² columns.
    public let filterDegree: Int
    public let weightCount: Int
    public let paths: [TensorProductPath]
    public let scale: Double

    /// Sparse couplings: per path its nonzero entries (a, b, k, value) in `entries[entryStart[p]..<entryStart[p+1]]`.
    let entryStart: [Int]
    let entries: [(a: Int, b: Int, k: Int, value: Double)]
    /// Per path the integers the kernels read (no array inside, so reading one costs no reference counting).
    let info: [PathInfo]

    struct PathInfo {
        let lIn, lFilter, lOut, mul, inputOffset, outputOffset, weightOffset: Int
        let dIn, dOut, cIn, cOut: Int
    }

    public init(inputChannels: [Int], outputChannels: [Int], filterDegree: Int, weightCount: Int, paths: [TensorProductPath], scale: Double) {
        for (n, p) in paths.enumerated() {
            precondition(p.lIn < inputChannels.count && p.inputOffset >= 0 && p.inputOffset + p.multiplicity <= inputChannels[p.lIn],
                         "EdgeTensorProduct: path \(n) reads channels beyond input degree \(p.lIn)")
            precondition(p.lOut < outputChannels.count && p.outputOffset >= 0 && p.outputOffset + p.multiplicity <= outputChannels[p.lOut],
                         "EdgeTensorProduct: path \(n) writes channels beyond output degree \(p.lOut)")
            precondition(p.lFilter <= filterDegree && p.weightOffset >= 0 && p.weightOffset + p.multiplicity <= weightCount,
                         "EdgeTensorProduct: path \(n) has filter degree or weight columns out of range")
        }
        self.inputChannels = inputChannels
        self.outputChannels = outputChannels
        self.filterDegree = filterDegree
        self.weightCount = weightCount
        self.paths = paths
        self.scale = scale
        var start = [0], e: [(a: Int, b: Int, k: Int, value: Double)] = []
        for p in paths {
            let df = 2 * p.lFilter + 1, dOut = 2 * p.lOut + 1
            for (q, v) in p.coupling.enumerated() where v != 0 {
                e.append((q / (df * dOut), (q / dOut) % df, q % dOut, v))
            }
            start.append(e.count)
        }
        entryStart = start
        entries = e
        info = paths.map { p in
            PathInfo(lIn: p.lIn, lFilter: p.lFilter, lOut: p.lOut, mul: p.multiplicity, inputOffset: p.inputOffset, outputOffset: p.outputOffset,
                     weightOffset: p.weightOffset, dIn: 2 * p.lIn + 1, dOut: 2 * p.lOut + 1, cIn: inputChannels[p.lIn], cOut: outputChannels[p.lOut])
        }
    }

    public var filterWidth: Int { (filterDegree + 1) * (filterDegree + 1) }

    /// The convolution: per output degree l with channels, [nodes, (2l+1)·C_l] (nil for absent degrees).
    /// `h` holds the input features per degree (nil where C_l = 0), `filter` is [edges, (L_f+1)²] (degrees
    /// concatenated), `weights` is [graph.weightRowCount, weightCount].
    public func callAsFunction(_ h: [Variable?], filter y: Variable, weights w: Variable, graph: EdgeConvolutionGraph) -> [Variable?] {
        checkShapes(Operands(g: nil, h: h, y: y, w: w), graph: graph, missing: .g)
        return apply(.g, Operands(g: nil, h: h, y: y, w: w), graph: graph).blocks
    }

    // MARK: - The four partials of S

    enum Slot: CaseIterable { case g, h, y, w }

    /// The operands of S; the slot being computed is left nil.
    struct Operands {
        var g: [Variable?]?
        var h: [Variable?]?
        var y: Variable?
        var w: Variable?
    }

    /// Result of one partial: per-degree blocks for g and h, one tensor (in `blocks[0]`) for y and w.
    struct Partial { var blocks: [Variable?] }

    func channels(_ slot: Slot) -> [Int] { slot == .g ? outputChannels : inputChannels }

    func checkShapes(_ o: Operands, graph: EdgeConvolutionGraph, missing: Slot) {
        for slot in [Slot.g, .h] where slot != missing {
            let blocks = (slot == .g ? o.g : o.h)!
            let ch = channels(slot)
            precondition(blocks.count >= ch.count, "EdgeTensorProduct: \(ch.count) degrees expected, got \(blocks.count)")
            for (l, c) in ch.enumerated() where c > 0 {
                precondition(blocks[l]?.shape == [graph.nodeCount, (2 * l + 1) * c],
                             "EdgeTensorProduct: degree \(l) block has shape \(blocks[l]?.shape ?? []), expected [\(graph.nodeCount), \((2 * l + 1) * c)]")
            }
        }
        if missing != .y { precondition(o.y!.shape == [graph.edgeCount, filterWidth], "EdgeTensorProduct: filter shape \(o.y!.shape), expected [\(graph.edgeCount), \(filterWidth)]") }
        if missing != .w { precondition(o.w!.shape == [graph.weightRowCount, weightCount], "EdgeTensorProduct: weights shape \(o.w!.shape), expected [\(graph.weightRowCount), \(weightCount)]") }
    }

    /// ∂S/∂(target) as a tape operation whose inputs are the other three operands.
    func apply(_ target: Slot, _ o: Operands, graph: EdgeConvolutionGraph) -> Partial {
        // Inputs in slot order, with (slot, degree) of each.
        var inputs: [Variable] = [], layout: [(slot: Slot, degree: Int)] = []
        for slot in Slot.allCases where slot != target {
            switch slot {
            case .g, .h:
                for (l, c) in channels(slot).enumerated() where c > 0 {
                    inputs.append(((slot == .g ? o.g : o.h)!)[l]!)
                    layout.append((slot, l))
                }
            case .y: inputs.append(o.y!); layout.append((.y, 0))
            case .w: inputs.append(o.w!); layout.append((.w, 0))
            }
        }
        let values = kernel(target, inputs.map(\.value), layout: layout, graph: graph)
        let outDegrees: [Int] = (target == .g || target == .h) ? channels(target).enumerated().filter { $0.element > 0 }.map(\.offset) : [0]
        let name: StaticString
        switch target {
        case .g: name = "tensorProductConv"
        case .h: name = "tensorProductConvGradH"
        case .y: name = "tensorProductConvGradY"
        case .w: name = "tensorProductConvGradW"
        }
        let plan = self
        let outs = makeMultiOp(name, inputs, values) { c in
            // The operands with the upstream gradient in the target's slot.
            var base = Operands()
            for (k, (slot, l)) in layout.enumerated() { plan.set(&base, slot, l, c.input(k)) }
            for (k, l) in outDegrees.enumerated() { plan.set(&base, target, l, c.gradOrZero(k)) }
            var grads = [Variable?](repeating: nil, count: layout.count)
            for slot in Slot.allCases where slot != target {
                let mine = layout.indices.filter { layout[$0].slot == slot }
                guard mine.contains(where: { c.needs[$0] }) else { continue }
                var operands = base
                plan.clear(&operands, slot)
                let r = plan.apply(slot, operands, graph: graph)
                for k in mine where c.needs[k] {
                    grads[k] = (slot == .g || slot == .h) ? r.blocks[layout[k].degree] : r.blocks[0]
                }
            }
            return grads
        }
        if target == .y || target == .w { return Partial(blocks: [outs[0]]) }
        var blocks = [Variable?](repeating: nil, count: channels(target).count)
        for (k, l) in outDegrees.enumerated() { blocks[l] = outs[k] }
        return Partial(blocks: blocks)
    }

    func set(_ o: inout Operands, _ slot: Slot, _ l: Int, _ v: Variable) {
        switch slot {
        case .g:
            if o.g == nil { o.g = [Variable?](repeating: nil, count: outputChannels.count) }
            o.g![l] = v
        case .h:
            if o.h == nil { o.h = [Variable?](repeating: nil, count: inputChannels.count) }
            o.h![l] = v
        case .y: o.y = v
        case .w: o.w = v
        }
    }

    func clear(_ o: inout Operands, _ slot: Slot) {
        switch slot {
        case .g: o.g = nil
        case .h: o.h = nil
        case .y: o.y = nil
        case .w: o.w = nil
        }
    }

    // MARK: - Kernels

    /// Values of ∂S/∂(target) from the other operands' values (`layout` says which is which).
    ///
    /// Per edge and path the coupling is first contracted with the filter, A[a, k] = s·Σ_b K[a, b, k] Y_e[b]
    /// (at most 7×7), then the channels are processed four at a time with the 2l+1 components of the operand
    /// rows held in SIMD registers: every operand element is loaded once per edge and path.
    func kernel(_ target: Slot, _ values: [Tensor], layout: [(slot: Slot, degree: Int)], graph: EdgeConvolutionGraph) -> [Tensor] {
        withReadPointers(values) { ptrs in
            var gp = [UnsafePointer<Double>?](repeating: nil, count: outputChannels.count)
            var hp = [UnsafePointer<Double>?](repeating: nil, count: inputChannels.count)
            var yp: UnsafePointer<Double>? = nil, wp: UnsafePointer<Double>? = nil
            for (k, (slot, l)) in layout.enumerated() {
                switch slot {
                case .g: gp[l] = ptrs[k]
                case .h: hp[l] = ptrs[k]
                case .y: yp = ptrs[k]
                case .w: wp = ptrs[k]
                }
            }
            let k = KernelContext(plan: self, graph: graph, g: gp, h: hp, y: yp, w: wp)
            defer { k.release() }
            switch target {
            case .g, .h:
                // One pass over the edges per produced degree: each path feeds exactly one of them.
                var out: [Tensor] = []
                for (lo, c) in channels(target).enumerated() where c > 0 {
                    var o = Tensor.zeros([graph.nodeCount, (2 * lo + 1) * c])
                    let mine = info.indices.filter { (target == .g ? info[$0].lOut : info[$0].lIn) == lo }
                    o.withUnsafeMutableBufferPointer { ob in
                        guard let op = ob.baseAddress else { return }
                        if target == .g { k.messages(paths: mine, into: op) } else { k.inputGradient(paths: mine, into: op) }
                    }
                    out.append(o)
                }
                return out
            case .w:
                var o = Tensor.zeros([graph.weightRowCount, weightCount])
                o.withUnsafeMutableBufferPointer { ob in if let op = ob.baseAddress { k.weightGradient(into: op) } }
                return [o]
            case .y:
                var o = Tensor.zeros([graph.edgeCount, filterWidth])
                o.withUnsafeMutableBufferPointer { ob in if let op = ob.baseAddress { k.filterGradient(into: op) } }
                return [o]
            }
        }
    }
}

private typealias V4 = SIMD4<Double>

@inline(__always) private func load4(_ p: UnsafePointer<Double>) -> V4 { UnsafeRawPointer(p).loadUnaligned(as: V4.self) }
@inline(__always) private func load4(_ p: UnsafeMutablePointer<Double>) -> V4 { UnsafeRawPointer(p).loadUnaligned(as: V4.self) }
@inline(__always) private func store4(_ p: UnsafeMutablePointer<Double>, _ v: V4) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: V4.self) }

/// The operands of one kernel call as raw pointers, the path tables as flat arrays, and scratch space.
private struct KernelContext {
    let edges: Int
    let recv: UnsafeMutablePointer<Int>, send: UnsafeMutablePointer<Int>, wrow: UnsafeMutablePointer<Int>
    let g: [UnsafePointer<Double>?], h: [UnsafePointer<Double>?]
    let y: UnsafePointer<Double>?, w: UnsafePointer<Double>?
    let fw: Int, wn: Int, scale: Double
    let info: [EdgeTensorProduct.PathInfo]
    /// Sparse couplings, flat: entry q of path p at entryStart[p] ≤ q < entryStart[p+1].
    let entryStart: UnsafeMutablePointer<Int>
    let ea: UnsafeMutablePointer<Int>, eb: UnsafeMutablePointer<Int>, ek: UnsafeMutablePointer<Int>, ev: UnsafeMutablePointer<Double>
    /// Whether A is a multiple of the identity (filter degree 0): one term per component instead of a full
    /// (2l+1)² block.
    let diagonal: [Bool]
    let a: UnsafeMutablePointer<Double>
    let vec: UnsafeMutablePointer<V4>

    init(plan: EdgeTensorProduct, graph: EdgeConvolutionGraph, g: [UnsafePointer<Double>?], h: [UnsafePointer<Double>?],
         y: UnsafePointer<Double>?, w: UnsafePointer<Double>?) {
        edges = graph.edgeCount
        func copy(_ x: [Int]) -> UnsafeMutablePointer<Int> {
            let p = UnsafeMutablePointer<Int>.allocate(capacity: Swift.max(x.count, 1))
            p.initialize(from: x, count: x.count)
            return p
        }
        recv = copy(graph.receivers)
        send = copy(graph.senders)
        wrow = copy(graph.weightRows)
        self.g = g
        self.h = h
        self.y = y
        self.w = w
        fw = plan.filterWidth
        wn = plan.weightCount
        scale = plan.scale
        info = plan.info
        entryStart = copy(plan.entryStart)
        ea = copy(plan.entries.map(\.a))
        eb = copy(plan.entries.map(\.b))
        ek = copy(plan.entries.map(\.k))
        ev = UnsafeMutablePointer<Double>.allocate(capacity: Swift.max(plan.entries.count, 1))
        ev.initialize(from: plan.entries.map(\.value), count: plan.entries.count)
        diagonal = plan.paths.map { $0.lFilter == 0 && $0.lIn == $0.lOut }
        a = UnsafeMutablePointer<Double>.allocate(capacity: 64)
        vec = UnsafeMutablePointer<V4>.allocate(capacity: 64 + 16)
    }

    func release() {
        for p in [recv, send, wrow, entryStart, ea, eb, ek] { p.deallocate() }
        ev.deallocate()
        a.deallocate()
        vec.deallocate()
    }

    /// A[a, k] = s·Σ_b K[a, b, k]·Y[b] for path p (row-major, dOut columns).
    @inline(__always)
    func fillA(_ p: Int, edge e: Int) {
        let pi = info[p], count = pi.dIn * pi.dOut
        let yrow = y! + e * fw + pi.lFilter * pi.lFilter
        for q in 0..<count { a[q] = 0 }
        for q in entryStart[p]..<entryStart[p + 1] { a[ea[q] * pi.dOut + ek[q]] += ev[q] * yrow[eb[q]] }
        for q in 0..<count { a[q] *= scale }
    }

    /// out_i[k, o + u] += w[u]·Σ_a A[a, k]·h_j[a, ι + u].
    func messages(paths: [Int], into out: UnsafeMutablePointer<Double>) {
        let hv = vec
        for e in 0..<edges {
            let wr = w! + wrow[e] * wn
            for p in paths {
                let pi = info[p], dIn = pi.dIn, dOut = pi.dOut, mul = pi.mul, cIn = pi.cIn, cOut = pi.cOut
                fillA(p, edge: e)
                let hrow = h[pi.lIn]! + send[e] * dIn * cIn + pi.inputOffset
                let orow = out + recv[e] * dOut * cOut + pi.outputOffset
                let wv = wr + pi.weightOffset
                let diag = diagonal[p]
                var u = 0
                while u + 4 <= mul {
                    let w4 = load4(wv + u)
                    if diag {
                        for k in 0..<dOut {
                            let dst = orow + k * cOut + u
                            store4(dst, load4(dst) + w4 * (a[k * dOut + k] * load4(hrow + k * cIn + u)))
                        }
                    } else {
                        for r in 0..<dIn { hv[r] = load4(hrow + r * cIn + u) }
                        for k in 0..<dOut {
                            var acc = a[k] * hv[0]
                            for r in 1..<dIn { acc += a[r * dOut + k] * hv[r] }
                            let dst = orow + k * cOut + u
                            store4(dst, load4(dst) + w4 * acc)
                        }
                    }
                    u += 4
                }
                while u < mul {
                    for k in 0..<dOut {
                        var acc = 0.0
                        for r in 0..<dIn { acc += a[r * dOut + k] * hrow[r * cIn + u] }
                        orow[k * cOut + u] += wv[u] * acc
                    }
                    u += 1
                }
            }
        }
    }

    /// out_j[a, ι + u] += w[u]·Σ_k A[a, k]·g_i[k, o + u].
    func inputGradient(paths: [Int], into out: UnsafeMutablePointer<Double>) {
        let gv = vec
        for e in 0..<edges {
            let wr = w! + wrow[e] * wn
            for p in paths {
                let pi = info[p], dIn = pi.dIn, dOut = pi.dOut, mul = pi.mul, cIn = pi.cIn, cOut = pi.cOut
                fillA(p, edge: e)
                let grow = g[pi.lOut]! + recv[e] * dOut * cOut + pi.outputOffset
                let orow = out + send[e] * dIn * cIn + pi.inputOffset
                let wv = wr + pi.weightOffset
                let diag = diagonal[p]
                var u = 0
                while u + 4 <= mul {
                    let w4 = load4(wv + u)
                    if diag {
                        for r in 0..<dIn {
                            let dst = orow + r * cIn + u
                            store4(dst, load4(dst) + w4 * (a[r * dOut + r] * load4(grow + r * cOut + u)))
                        }
                    } else {
                        for k in 0..<dOut { gv[k] = load4(grow + k * cOut + u) }
                        for r in 0..<dIn {
                            let ar = a + r * dOut
                            var acc = ar[0] * gv[0]
                            for k in 1..<dOut { acc += ar[k] * gv[k] }
                            let dst = orow + r * cIn + u
                            store4(dst, load4(dst) + w4 * acc)
                        }
                    }
                    u += 4
                }
                while u < mul {
                    for r in 0..<dIn {
                        var acc = 0.0
                        for k in 0..<dOut { acc += a[r * dOut + k] * grow[k * cOut + u] }
                        orow[r * cIn + u] += wv[u] * acc
                    }
                    u += 1
                }
            }
        }
    }

    /// out_row(e)[ω + u] += Σ_k g_i[k, o + u]·Σ_a A[a, k]·h_j[a, ι + u].
    func weightGradient(into out: UnsafeMutablePointer<Double>) {
        let hv = vec
        for e in 0..<edges {
            let orow0 = out + wrow[e] * wn
            for p in info.indices {
                let pi = info[p], dIn = pi.dIn, dOut = pi.dOut, mul = pi.mul, cIn = pi.cIn, cOut = pi.cOut
                fillA(p, edge: e)
                let hrow = h[pi.lIn]! + send[e] * dIn * cIn + pi.inputOffset
                let grow = g[pi.lOut]! + recv[e] * dOut * cOut + pi.outputOffset
                let dst = orow0 + pi.weightOffset
                let diag = diagonal[p]
                var u = 0
                while u + 4 <= mul {
                    var total = V4(repeating: 0)
                    if diag {
                        for k in 0..<dOut { total += load4(grow + k * cOut + u) * (a[k * dOut + k] * load4(hrow + k * cIn + u)) }
                    } else {
                        for r in 0..<dIn { hv[r] = load4(hrow + r * cIn + u) }
                        for k in 0..<dOut {
                            var acc = a[k] * hv[0]
                            for r in 1..<dIn { acc += a[r * dOut + k] * hv[r] }
                            total += load4(grow + k * cOut + u) * acc
                        }
                    }
                    store4(dst + u, load4(dst + u) + total)
                    u += 4
                }
                while u < mul {
                    var total = 0.0
                    for k in 0..<dOut {
                        var acc = 0.0
                        for r in 0..<dIn { acc += a[r * dOut + k] * hrow[r * cIn + u] }
                        total += grow[k * cOut + u] * acc
                    }
                    dst[u] += total
                    u += 1
                }
            }
        }
    }

    /// out_e[b] += s·Σ_{a,k} K[a, b, k]·B[a, k] with B[a, k] = Σ_u w[u]·h_j[a, ι + u]·g_i[k, o + u].
    func filterGradient(into out: UnsafeMutablePointer<Double>) {
        let wh = vec, acc = vec + 8
        for e in 0..<edges {
            let wr = w! + wrow[e] * wn, orow = out + e * fw
            for p in info.indices {
                let pi = info[p], dIn = pi.dIn, dOut = pi.dOut, mul = pi.mul, cIn = pi.cIn, cOut = pi.cOut
                let hrow = h[pi.lIn]! + send[e] * dIn * cIn + pi.inputOffset
                let grow = g[pi.lOut]! + recv[e] * dOut * cOut + pi.outputOffset
                let wv = wr + pi.weightOffset
                for q in 0..<(dIn * dOut) { acc[q] = V4(repeating: 0) }
                var u = 0
                while u + 4 <= mul {
                    let w4 = load4(wv + u)
                    for r in 0..<dIn { wh[r] = w4 * load4(hrow + r * cIn + u) }
                    for k in 0..<dOut {
                        let gk = load4(grow + k * cOut + u)
                        for r in 0..<dIn { acc[r * dOut + k] += wh[r] * gk }
                    }
                    u += 4
                }
                for q in 0..<(dIn * dOut) { a[q] = acc[q].sum() }
                while u < mul {
                    for r in 0..<dIn {
                        let x = wv[u] * hrow[r * cIn + u]
                        for k in 0..<dOut { a[r * dOut + k] += x * grow[k * cOut + u] }
                    }
                    u += 1
                }
                let yo = orow + pi.lFilter * pi.lFilter
                for q in entryStart[p]..<entryStart[p + 1] { yo[eb[q]] += scale * ev[q] * a[ea[q] * dOut + ek[q]] }
            }
        }
    }
}

/// Runs `body` with read-only pointers to the elements of `tensors`.
func withReadPointers<R>(_ tensors: [Tensor], _ body: ([UnsafePointer<Double>]) -> R) -> R {
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
