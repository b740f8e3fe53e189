import CLinalg

// Raw (non-recording) kernels on Tensors. Every kernel takes buffer pointers once and loops over them.
// Differentiable operations in Ops*.swift call these for their forward values and, through other
// differentiable operations, for their backward rules.

// MARK: - Broadcasting

public enum Broadcast {
    /// NumPy broadcasting of two shapes, or nil when they are incompatible.
    public static func shape(_ a: [Int], _ b: [Int]) -> [Int]? {
        let r = Swift.max(a.count, b.count)
        var out = [Int](repeating: 1, count: r)
        for k in 0..<r {
            let da = k < r - a.count ? 1 : a[k - (r - a.count)]
            let db = k < r - b.count ? 1 : b[k - (r - b.count)]
            if da == db || db == 1 { out[k] = da } else if da == 1 { out[k] = db } else { return nil }
        }
        return out
    }

    /// Strides of `shape` aligned to `outShape` (rank-padded on the left), 0 on broadcast dimensions.
    static func strides(of shape: [Int], in outShape: [Int]) -> [Int] {
        let r = outShape.count, pad = r - shape.count
        var strides = [Int](repeating: 0, count: r)
        var s = 1
        for k in stride(from: shape.count - 1, through: 0, by: -1) {
            strides[k + pad] = shape[k] == 1 ? 0 : s
            s *= shape[k]
        }
        return strides
    }
}

/// Walks the multi-index of `shape` (all but the last axis) keeping flat offsets into two strided inputs.
/// `body(outerIndex, offsetA, offsetB)` is called once per row of the last axis.
@inline(__always)
func forEachRow(_ shape: [Int], _ sa: [Int], _ sb: [Int], _ body: (Int, Int, Int) -> Void) {
    let r = shape.count
    let inner = shape[r - 1]
    let total = Tensor.elementCount(shape)
    if total == 0 { return }
    let rows = total / inner
    var idx = [Int](repeating: 0, count: Swift.max(r - 1, 1))
    var oa = 0, ob = 0
    for row in 0..<rows {
        body(row, oa, ob)
        var d = r - 2
        while d >= 0 {
            idx[d] += 1; oa += sa[d]; ob += sb[d]
            if idx[d] < shape[d] { break }
            oa -= sa[d] * shape[d]; ob -= sb[d] * shape[d]; idx[d] = 0
            d -= 1
        }
    }
}

extension Tensor {
    /// Elementwise map.
    @inline(__always)
    public func map(_ f: (Double) -> Double) -> Tensor {
        kind == .float64 ? mapT(Double.self, f) : mapT(Float.self, f)
    }

    @inline(__always)
    func mapT<S: TapeScalar>(_: S.Type, _ f: (Double) -> Double) -> Tensor {
        let out = Tensor(uninitializedShape: shape, kind: S.kind)
        let n = count
        let src = storage.typed(S.self), dst = out.storage.typed(S.self)
        parallelRows(n, perRow: 2, align: 512) { r in for i in r { dst[i] = S(f(src[i].double)) } }
        return out
    }

    /// Elementwise ternary operation on tensors of one shape (one pass, no intermediate tensor).
    @inline(__always)
    public static func zip3(_ a: Tensor, _ b: Tensor, _ c: Tensor, _ f: (Double, Double, Double) -> Double) -> Tensor {
        a.kind == .float64 ? zip3T(Double.self, a, b, c, f) : zip3T(Float.self, a, b, c, f)
    }

    @inline(__always)
    static func zip3T<S: TapeScalar>(_: S.Type, _ a: Tensor, _ b: Tensor, _ c: Tensor, _ f: (Double, Double, Double) -> Double) -> Tensor {
        precondition(a.shape == b.shape && a.shape == c.shape, "zip3 needs equal shapes, got \(a.shape), \(b.shape), \(c.shape)")
        let out = Tensor(uninitializedShape: a.shape, kind: S.kind)
        let pa = a.storage.typed(S.self), pb = b.storage.typed(S.self), pc = c.storage.typed(S.self), po = out.storage.typed(S.self)
        parallelRows(a.count, perRow: 2, align: 512) { r in for i in r { po[i] = S(f(pa[i].double, pb[i].double, pc[i].double)) } }
        return out
    }

    /// Elementwise binary operation with NumPy broadcasting.
    @inline(__always)
    public static func zipWith(_ a: Tensor, _ b: Tensor, _ f: (Double, Double) -> Double) -> Tensor {
        if a.kind == .float64 && b.kind == .float64 { return zipWithT(Double.self, a, b, f) }
        if a.kind == .float32 && b.kind == .float32 { return zipWithT(Float.self, a, b, f) }
        return zipWithMixed(a, b, f)
    }

    /// A one-element operand (a constant like 0, 1 or a scale) of the other precision takes the other operand's;
    /// anything else is mixed precision, which needs an explicit cast. Kept out of `zipWith` (and not calling
    /// it: recursion would keep `zipWith`, and with it the closure, from being inlined).
    @inline(never)
    static func zipWithMixed(_ a: Tensor, _ b: Tensor, _ f: (Double, Double) -> Double) -> Tensor {
        precondition((a.count == 1 && a.rank <= b.rank) || (b.count == 1 && b.rank <= a.rank),
                     "mixed precision: \(a.kind) \(a.shape) with \(b.kind) \(b.shape) (cast one of them first)")
        let kind = b.count == 1 && b.rank <= a.rank ? a.kind : b.kind
        let x = a.converted(to: kind), y = b.converted(to: kind)
        return kind == .float64 ? zipWithT(Double.self, x, y, f) : zipWithT(Float.self, x, y, f)
    }

    @inline(__always)
    static func zipWithT<S: TapeScalar>(_: S.Type, _ a: Tensor, _ b: Tensor, _ f: (Double, Double) -> Double) -> Tensor {
        if a.shape == b.shape {
            let out = Tensor(uninitializedShape: a.shape, kind: S.kind)
            let pa = a.storage.typed(S.self), pb = b.storage.typed(S.self), po = out.storage.typed(S.self)
            parallelRows(a.count, perRow: 2, align: 512) { r in for i in r { po[i] = S(f((pa[i]).double, (pb[i]).double)) } }
            return out
        }
        guard let s = Broadcast.shape(a.shape, b.shape) else {
            preconditionFailure("cannot broadcast shapes \(a.shape) and \(b.shape)")
        }
        let out = Tensor(uninitializedShape: s, kind: S.kind)
        let pa = a.storage.typed(S.self), pb = b.storage.typed(S.self), po = out.storage.typed(S.self)
        if b.count == 1 && s == a.shape {
            let y = pb[0]
            for i in 0..<a.count { po[i] = S(f((pa[i]).double, (y).double)) }
            return out
        }
        if a.count == 1 && s == b.shape {
            let x = pa[0]
            for i in 0..<b.count { po[i] = S(f((x).double, (pb[i]).double)) }
            return out
        }
        // Fast paths for the two broadcasts neural layers use on [rows, F]: a bias row [F] (or [1, F]) and a
        // per-row column [rows, 1]; the general strided walk below costs several times more per element.
        if s == a.shape && s.count == 2 {
            let rows = s[0], inner = s[1]
            if b.count == inner && (b.rank == 1 || (b.rank == 2 && b.shape[0] == 1)) {
                for r in 0..<rows {
                    let o = po + r * inner, x = pa + r * inner
                    for k in 0..<inner { o[k] = S(f((x[k]).double, (pb[k]).double)) }
                }
                return out
            }
            if b.shape == [rows, 1] {
                for r in 0..<rows {
                    let o = po + r * inner, x = pa + r * inner, y = pb[r]
                    for k in 0..<inner { o[k] = S(f((x[k]).double, (y).double)) }
                }
                return out
            }
        }
        // A column against a row ([rows, 1] with [inner] or [1, inner]: radial bases of pair distances).
        if s.count == 2 && a.shape == [s[0], 1] && b.count == s[1] && (b.rank == 1 || b.shape == [1, s[1]]) {
            let rows = s[0], inner = s[1]
            for r in 0..<rows {
                let o = po + r * inner, x = pa[r]
                for k in 0..<inner { o[k] = S(f((x).double, (pb[k]).double)) }
            }
            return out
        }
        if s == b.shape && s.count == 2 && a.shape == [s[0], 1] {
            let rows = s[0], inner = s[1]
            for r in 0..<rows {
                let o = po + r * inner, y = pb + r * inner, x = pa[r]
                for k in 0..<inner { o[k] = S(f((x).double, (y[k]).double)) }
            }
            return out
        }
        let sa = Broadcast.strides(of: a.shape, in: s), sb = Broadcast.strides(of: b.shape, in: s)
        let inner = s[s.count - 1], ia = sa[s.count - 1], ib = sb[s.count - 1]
        forEachRow(s, sa, sb) { row, oa, ob in
            let o = po + row * inner
            for k in 0..<inner { o[k] = S(f((pa[oa + k * ia]).double, (pb[ob + k * ib]).double)) }
        }
        return out
    }

    /// Sum over broadcast dimensions so that the result has `target` shape (inverse of broadcasting).
    public func sum(toShape target: [Int]) -> Tensor {
        kind == .float64 ? sumT(Double.self, target) : sumT(Float.self, target)
    }

    func sumT<S: TapeScalar>(_: S.Type, _ target: [Int]) -> Tensor {
        if target == shape { return self }
        precondition(Broadcast.shape(target, shape) == shape, "cannot reduce shape \(shape) to \(target)")
        let out = Tensor(shape: target, repeating: 0, kind: S.kind)
        let po = out.storage.typed(S.self), pg = storage.typed(S.self)
        if out.count == 1 {
            po[0] = Tensor.sumBuffer(pg, count)
            return out
        }
        if shape.count == 2 && target.last == shape[1] && target.reduce(1, *) == shape[1] {
            // [rows, w] to [w] or [1, w] (bias gradients): each column sums its rows in row order, so columns split
            // over threads without changing a bit; only wide ones (narrow column parts read every row for a few
            // elements: at w = 64 eight parts took 5× the serial time).
            let rows = shape[0], w = shape[1]
            parallelRows(w, perRow: rows, align: 256) { cols in
                for i in 0..<rows { let g = pg + i * w; for k in cols { po[k] += g[k] } }
            }
            return out
        }
        let so = Broadcast.strides(of: target, in: shape)
        let r = shape.count, inner = shape[r - 1], io = so[r - 1]
        forEachRow(shape, so, so) { row, oo, _ in
            let g = pg + row * inner
            if io == 0 {
                po[oo] += Tensor.sumBuffer(g, inner)
            } else {
                for k in 0..<inner { po[oo + k] += g[k] }
            }
        }
        return out
    }

    /// Repeat along broadcast dimensions to `target` shape.
    public func broadcast(to target: [Int]) -> Tensor {
        kind == .float64 ? broadcastT(Double.self, target) : broadcastT(Float.self, target)
    }

    func broadcastT<S: TapeScalar>(_: S.Type, _ target: [Int]) -> Tensor {
        if target == shape { return self }
        precondition(Broadcast.shape(shape, target) == target, "cannot broadcast \(shape) to \(target)")
        if count == 1 { return Tensor(shape: target, repeating: storage.typed(S.self)[0].double, kind: S.kind) }
        let out = Tensor(uninitializedShape: target, kind: S.kind)
        let sa = Broadcast.strides(of: shape, in: target)
        let inner = target[target.count - 1], ia = sa[target.count - 1]
        let src = storage.typed(S.self), dst = out.storage.typed(S.self)
        forEachRow(target, sa, sa) { row, oa, _ in
            let d = dst + row * inner
            for k in 0..<inner { d[k] = src[oa + k * ia] }
        }
        return out
    }

    /// Pairwise sum with 4 accumulators (Swift keeps strict FP order, so a plain loop is not vectorised).
    @inline(__always)
    static func sumBuffer<S: TapeScalar>(_ p: UnsafePointer<S>, _ n: Int) -> S {
        var s0: S = 0, s1: S = 0, s2: S = 0, s3: S = 0
        var i = 0
        while i + 4 <= n { s0 += p[i]; s1 += p[i + 1]; s2 += p[i + 2]; s3 += p[i + 3]; i += 4 }
        while i < n { s0 += p[i]; i += 1 }
        return (s0 + s1) + (s2 + s3)
    }

    public func sum() -> Double {
        kind == .float64 ? Tensor.sumBuffer(storage.pointer, count) : Double(Tensor.sumBuffer(storage.typed(Float.self), count))
    }

    /// Sum over the given axes (negative axes count from the end).
    public func sum(axes: [Int], keepDims: Bool = false) -> Tensor {
        let ax = Tensor.normalizeAxes(axes, rank: rank)
        var kept = shape
        for a in ax { kept[a] = 1 }
        let r = sum(toShape: kept)
        return keepDims ? r : r.reshaped(shape.enumerated().filter { !ax.contains($0.offset) }.map { $0.element })
    }

    static func normalizeAxes(_ axes: [Int], rank: Int) -> [Int] {
        axes.map { a in
            let b = a < 0 ? a + rank : a
            precondition(b >= 0 && b < rank, "axis \(a) out of range for rank \(rank)")
            return b
        }
    }

    public func dot(_ other: Tensor) -> Double {
        precondition(count == other.count, "dot: \(shape) vs \(other.shape)")
        if kind == .float32 { return Double(cblas_sdot(Int32(count), storage.typed(Float.self), 1, other.storage.typed(Float.self), 1)) }
        return cblas_ddot(Int32(count), storage.pointer, 1, other.storage.pointer, 1)
    }

    public var norm: Double { dot(self).squareRoot() }
    public var maxAbs: Double { (kind == .float64 ? self : converted(to: .float64)).withUnsafeBufferPointer { p in p.reduce(0) { Swift.max($0, Swift.abs($1)) } } }

    public static func + (a: Tensor, b: Tensor) -> Tensor { zipWith(a, b, +) }
    public static func - (a: Tensor, b: Tensor) -> Tensor { zipWith(a, b, -) }
    public static func * (a: Tensor, b: Tensor) -> Tensor { zipWith(a, b, *) }
    public static func / (a: Tensor, b: Tensor) -> Tensor { zipWith(a, b, /) }
    public static func * (a: Tensor, s: Double) -> Tensor { a.map { $0 * s } }
    public static func * (s: Double, a: Tensor) -> Tensor { a.map { $0 * s } }
    public static func + (a: Tensor, s: Double) -> Tensor { a.map { $0 + s } }
    public static func - (a: Tensor, s: Double) -> Tensor { a.map { $0 - s } }
    public static prefix func - (a: Tensor) -> Tensor { a.map { -$0 } }

    /// In-place a += x (same shapes): the sums of `a + x`, without a new buffer when `a`'s is not shared.
    mutating func addInPlace(_ x: Tensor) {
        precondition(shape == x.shape, "addInPlace: \(shape) vs \(x.shape)")
        if kind == .float32 || x.kind == .float32 {
            // A gradient reaching a value of the other precision (only one-element constants mix) is converted.
            self = Tensor.zipWith(self, x.converted(to: kind), +)
            return
        }
        let q = x.storage.pointer
        withUnsafeMutableBufferPointer { p in
            guard let b = p.baseAddress else { return }
            parallelRows(p.count, perRow: 1, align: 512) { r in for i in r { b[i] = b[i] + q[i] } }
        }
    }

    /// In-place a += s·x (BLAS daxpy).
    public mutating func addScaled(_ x: Tensor, _ s: Double) {
        precondition(count == x.count, "addScaled: \(shape) vs \(x.shape)")
        let n = Int32(count)
        if kind == .float32 { self = Tensor.zipWith(self, x.converted(to: kind)) { a, b in a + s * b }; return }
        withUnsafeMutableBufferPointer { p in cblas_daxpy(n, s, x.storage.pointer, 1, p.baseAddress, 1) }
    }
}

// MARK: - Matrix products

extension Tensor {
    /// C = op(A)·op(B) for 2-D tensors; BLAS above tiny sizes, where its ~80 ns call overhead loses to a loop.
    public static func matmul(_ a: Tensor, _ b: Tensor, transposeA: Bool = false, transposeB: Bool = false) -> Tensor {
        a.kind == .float64 ? matmulT(Double.self, a, b, transposeA, transposeB) : matmulT(Float.self, a, b, transposeA, transposeB)
    }

    static func matmulT<S: TapeScalar>(_: S.Type, _ a: Tensor, _ b: Tensor, _ transposeA: Bool, _ transposeB: Bool) -> Tensor {
        precondition(a.rank == 2 && b.rank == 2, "matmul needs 2-D tensors, got \(a.shape) and \(b.shape)")
        let m = transposeA ? a.shape[1] : a.shape[0]
        let k = transposeA ? a.shape[0] : a.shape[1]
        let kb = transposeB ? b.shape[1] : b.shape[0]
        let n = transposeB ? b.shape[0] : b.shape[1]
        precondition(k == kb, "matmul: inner dimensions differ: \(a.shape)\(transposeA ? "ᵀ" : "") · \(b.shape)\(transposeB ? "ᵀ" : "")")
        let out = Tensor(uninitializedShape: [m, n], kind: S.kind)
        let pa = a.storage.typed(S.self), pb = b.storage.typed(S.self), pc = out.storage.typed(S.self)
        if m == 0 || n == 0 { return out }
        if k == 0 { pc.initialize(repeating: 0, count: m * n); return out }
        let lda = a.shape[1], ldb = b.shape[1]
        if m * n * k >= 4096 && (n == 1 || m == 1) {
            // Matrix-vector products: BLAS dgemv.
            if n == 1 {
                // c = op(A)·b with b a column (k × 1 or, transposed, 1 × k: contiguous either way).
                S.gemv(transposeA ? CblasTrans : CblasNoTrans, Int32(a.shape[0]), Int32(a.shape[1]), pa, Int32(lda), pb, pc)
            } else {
                // c = aᵀ·op(B) as op(B)ᵀ·a.
                S.gemv(transposeB ? CblasNoTrans : CblasTrans, Int32(b.shape[0]), Int32(b.shape[1]), pb, Int32(ldb), pa, pc)
            }
            return out
        }
        if m * n * k < 4096 || Swift.min(m, n) < 4 {
            // Small or skinny: plain loops (i-k-j order for contiguous inner access when possible).
            pc.initialize(repeating: 0, count: m * n)
            for i in 0..<m {
                let c = pc + i * n
                for p in 0..<k {
                    let aip = transposeA ? pa[p * lda + i] : pa[i * lda + p]
                    if aip == 0 { continue }
                    if transposeB {
                        for j in 0..<n { c[j] += aip * pb[j * ldb + p] }
                    } else {
                        let brow = pb + p * ldb
                        for j in 0..<n { c[j] += aip * brow[j] }
                    }
                }
            }
            return out
        }
        if transposeB && !transposeA && m > n && n * k <= 1 << 16 {
            // A·Wᵀ with a small W (a layer's weights, stored [out, in]): OpenBLAS has no small-matrix kernel for this
            // case at these sizes (its general kernel packs A block by block), so multiply by a transposed copy of W.
            return matmulT(S.self, a, b.transposed(), false, false)
        }
        let ta = transposeA ? CblasTrans : CblasNoTrans, tb = transposeB ? CblasTrans : CblasNoTrans
        // Fixed blocks of C's rows (A's rows or, transposed, columns), one BLAS call each, whatever the thread count:
        // OpenBLAS rounds a block the same wherever it is computed, but not always like a differently sized call
        // (its small-matrix kernels take products under a size), so the blocks, not the threads, decide the calls.
        let block = IntraOpThreads.productBlock(perRow: n * k), kBlock = IntraOpThreads.productBlock(perRow: m * n)
        if k > m && k >= 2 * kBlock {
            // Few output rows and a long inner dimension (the weight gradients Gᵀ·X over all pairs): fixed chunks of
            // 512 of the inner dimension, one partial product each (calls of kBlock accumulated in order), added in
            // chunk order (again independent of the threads).
            let chunk = 512
            let chunks = (k + chunk - 1) / chunk, size = m * n
            let partials = UnsafeMutablePointer<S>.allocate(capacity: chunks * size)
            defer { partials.deallocate() }
            parallelRows(chunks, perRow: chunk * size) { range in
                for q in range {
                    var k0 = q * chunk
                    let end = Swift.min(k, k0 + chunk)
                    while k0 < end {
                        let kc = Swift.min(kBlock, end - k0)
                        S.gemm(ta, tb, Int32(m), Int32(n), Int32(kc), pa + (transposeA ? k0 * lda : k0), Int32(lda),
                                    pb + (transposeB ? k0 : k0 * ldb), Int32(ldb), beta: k0 == q * chunk ? 0 : 1, partials + q * size, Int32(n))
                        k0 += kc
                    }
                }
            }
            // Each element sums its partials in chunk order; elements are independent, so they split.
            parallelRows(size, perRow: chunks, align: 512) { r in
                for i in r { pc[i] = partials[i] }
                for q in 1..<chunks { let p = partials + q * size; for i in r { pc[i] += p[i] } }
            }
            return out
        }
        parallelRows((m + block - 1) / block, perRow: block * n * k) { blocks in
            for q in blocks {
                let r0 = q * block, rows = Swift.min(block, m - r0)
                S.gemm(ta, tb, Int32(rows), Int32(n), Int32(k), pa + (transposeA ? r0 : r0 * lda),
                            Int32(lda), pb, Int32(ldb), beta: 0, pc + r0 * n, Int32(n))
            }
        }
        return out
    }

    /// Matrix-vector product y = op(A)·x for 2-D A and 1-D x.
    public static func matvec(_ a: Tensor, _ x: Tensor, transpose: Bool = false) -> Tensor {
        a.kind == .float64 ? matvecT(Double.self, a, x, transpose) : matvecT(Float.self, a, x, transpose)
    }

    static func matvecT<S: TapeScalar>(_: S.Type, _ a: Tensor, _ x: Tensor, _ transpose: Bool) -> Tensor {
        precondition(a.rank == 2, "matvec needs a 2-D matrix")
        let m = a.shape[0], n = a.shape[1]
        precondition(x.count == (transpose ? m : n), "matvec: \(a.shape) · \(x.shape)")
        let out = Tensor(shape: [transpose ? n : m], repeating: 0, kind: S.kind)
        S.gemv(transpose ? CblasTrans : CblasNoTrans, Int32(m), Int32(n), a.storage.typed(S.self), Int32(n), x.storage.typed(S.self), out.storage.typed(S.self))
        return out
    }

    /// Transpose of a 2-D tensor.
    public func transposed() -> Tensor {
        kind == .float64 ? transposedT(Double.self) : transposedT(Float.self)
    }

    func transposedT<S: TapeScalar>(_: S.Type) -> Tensor {
        precondition(rank == 2, "transposed() needs a 2-D tensor, got \(shape)")
        let m = shape[0], n = shape[1]
        let out = Tensor(uninitializedShape: [n, m], kind: S.kind)
        let src = storage.typed(S.self), dst = out.storage.typed(S.self)
        for i in 0..<m { for j in 0..<n { dst[j * m + i] = src[i * n + j] } }
        return out
    }

    /// General axis permutation: result.shape[k] = shape[perm[k]].
    public func permuted(_ perm: [Int]) -> Tensor {
        kind == .float64 ? permutedT(Double.self, perm) : permutedT(Float.self, perm)
    }

    func permutedT<S: TapeScalar>(_: S.Type, _ perm: [Int]) -> Tensor {
        precondition(perm.sorted() == Array(0..<rank), "invalid permutation \(perm) for rank \(rank)")
        if perm == Array(0..<rank) { return self }
        let outShape = perm.map { shape[$0] }
        var inStrides = [Int](repeating: 1, count: rank)
        for k in stride(from: rank - 2, through: 0, by: -1) { inStrides[k] = inStrides[k + 1] * shape[k + 1] }
        let sa = perm.map { inStrides[$0] }
        let out = Tensor(uninitializedShape: outShape, kind: S.kind)
        if out.count == 0 { return out }
        let src = storage.typed(S.self), dst = out.storage.typed(S.self)
        let inner = outShape[rank - 1], ia = sa[rank - 1]
        forEachRow(outShape, sa, sa) { row, oa, _ in
            let d = dst + row * inner
            for k in 0..<inner { d[k] = src[oa + k * ia] }
        }
        return out
    }
}

// MARK: - Indexing, slicing, concatenation

extension Tensor {
    /// Rows of a tensor picked by index along axis 0: result[m] = self[index[m]].
    public func gatherRows(_ index: [Int]) -> Tensor {
        kind == .float64 ? gatherRowsT(Double.self, index) : gatherRowsT(Float.self, index)
    }

    func gatherRowsT<S: TapeScalar>(_: S.Type, _ index: [Int]) -> Tensor {
        precondition(rank >= 1, "gatherRows needs rank ≥ 1")
        let n = shape[0], row = n == 0 ? 0 : count / n
        var outShape = shape
        outShape[0] = index.count
        let out = Tensor(uninitializedShape: outShape, kind: S.kind)
        let src = storage.typed(S.self), dst = out.storage.typed(S.self)
        index.withUnsafeBufferPointer { idx in
            if row == 1 {
                for m in 0..<idx.count {
                    let i = idx[m]
                    precondition(i >= 0 && i < n, "gatherRows: index \(i) out of range 0..<\(n)")
                    dst[m] = src[i]
                }
            } else if row == 3 {
                for m in 0..<idx.count {
                    let i = idx[m]
                    precondition(i >= 0 && i < n, "gatherRows: index \(i) out of range 0..<\(n)")
                    dst[3 * m] = src[3 * i]; dst[3 * m + 1] = src[3 * i + 1]; dst[3 * m + 2] = src[3 * i + 2]
                }
            } else {
                for m in 0..<idx.count {
                    let i = idx[m]
                    precondition(i >= 0 && i < n, "gatherRows: index \(i) out of range 0..<\(n)")
                    (dst + m * row).update(from: src + i * row, count: row)
                }
            }
        }
        return out
    }

    /// Segment sum: result[index[m]] += self[m], result has `count` rows.
    public func scatterAddRows(_ index: [Int], count rows: Int) -> Tensor {
        kind == .float64 ? scatterAddRowsT(Double.self, index, rows) : scatterAddRowsT(Float.self, index, rows)
    }

    func scatterAddRowsT<S: TapeScalar>(_: S.Type, _ index: [Int], _ rows: Int) -> Tensor {
        precondition(rank >= 1 && shape[0] == index.count, "scatterAddRows: \(shape[0]) rows vs \(index.count) indices")
        var outShape = shape
        outShape[0] = rows
        let out = Tensor(shape: outShape, repeating: 0, kind: S.kind)
        let row = index.isEmpty ? 0 : count / index.count
        let src = storage.typed(S.self), dst = out.storage.typed(S.self)
        index.withUnsafeBufferPointer { idx in
            if row == 1 {
                for m in 0..<idx.count {
                    let i = idx[m]
                    precondition(i >= 0 && i < rows, "scatterAddRows: index \(i) out of range 0..<\(rows)")
                    dst[i] += src[m]
                }
            } else if row == 3 {
                for m in 0..<idx.count {
                    let i = idx[m]
                    precondition(i >= 0 && i < rows, "scatterAddRows: index \(i) out of range 0..<\(rows)")
                    dst[3 * i] += src[3 * m]; dst[3 * i + 1] += src[3 * m + 1]; dst[3 * i + 2] += src[3 * m + 2]
                }
            } else {
                for m in 0..<idx.count { precondition(idx[m] >= 0 && idx[m] < rows, "scatterAddRows: index \(idx[m]) out of range 0..<\(rows)") }
                // Each column adds its source rows in order, so columns split over threads without changing a bit;
                // only wide rows (see sum(toShape:)).
                parallelRows(row, perRow: idx.count, align: 256) { cols in
                    for m in 0..<idx.count {
                        let d = dst + idx[m] * row, s = src + m * row
                        for k in cols { d[k] += s[k] }
                    }
                }
            }
        }
        return out
    }

    /// Elements `range` along `axis`.
    public func slice(axis: Int, _ range: Range<Int>) -> Tensor {
        kind == .float64 ? sliceT(Double.self, axis, range) : sliceT(Float.self, axis, range)
    }

    func sliceT<S: TapeScalar>(_: S.Type, _ axis: Int, _ range: Range<Int>) -> Tensor {
        let ax = Tensor.normalizeAxes([axis], rank: rank)[0]
        precondition(range.lowerBound >= 0 && range.upperBound <= shape[ax], "slice \(range) out of range for axis \(ax) of \(shape)")
        var outShape = shape
        outShape[ax] = range.count
        let outer = shape[..<ax].reduce(1, *), inner = shape[(ax + 1)...].reduce(1, *)
        let out = Tensor(uninitializedShape: outShape, kind: S.kind)
        let src = storage.typed(S.self), dst = out.storage.typed(S.self)
        let block = range.count * inner, srcBlock = shape[ax] * inner
        if block > 0 {
            for o in 0..<outer { (dst + o * block).update(from: src + o * srcBlock + range.lowerBound * inner, count: block) }
        }
        return out
    }

    /// Embeds `self` at `range` along `axis` of a zero tensor with `fullShape` (adjoint of slice).
    func padSlice(axis ax: Int, _ range: Range<Int>, fullShape: [Int]) -> Tensor {
        kind == .float64 ? padSliceT(Double.self, ax, range, fullShape) : padSliceT(Float.self, ax, range, fullShape)
    }

    func padSliceT<S: TapeScalar>(_: S.Type, _ ax: Int, _ range: Range<Int>, _ fullShape: [Int]) -> Tensor {
        let out = Tensor(shape: fullShape, repeating: 0, kind: S.kind)
        let outer = fullShape[..<ax].reduce(1, *), inner = fullShape[(ax + 1)...].reduce(1, *)
        let src = storage.typed(S.self), dst = out.storage.typed(S.self)
        let block = range.count * inner, dstBlock = fullShape[ax] * inner
        if block > 0 {
            for o in 0..<outer { (dst + o * dstBlock + range.lowerBound * inner).update(from: src + o * block, count: block) }
        }
        return out
    }

    /// Concatenation along `axis`; all other dimensions must agree.
    public static func concatenate(_ parts: [Tensor], axis: Int) -> Tensor {
        parts.first?.kind == .float32 ? concatenateT(Float.self, parts, axis) : concatenateT(Double.self, parts, axis)
    }

    static func concatenateT<S: TapeScalar>(_: S.Type, _ parts: [Tensor], _ axis: Int) -> Tensor {
        precondition(!parts.isEmpty, "concatenate of no tensors")
        let r = parts[0].rank
        let ax = normalizeAxes([axis], rank: r)[0]
        var outShape = parts[0].shape
        outShape[ax] = 0
        for p in parts {
            precondition(p.rank == r, "concatenate: ranks differ")
            for k in 0..<r where k != ax { precondition(p.shape[k] == parts[0].shape[k], "concatenate: shapes \(parts[0].shape) and \(p.shape) differ off axis \(ax)") }
            outShape[ax] += p.shape[ax]
        }
        let outer = outShape[..<ax].reduce(1, *), inner = outShape[(ax + 1)...].reduce(1, *)
        let out = Tensor(uninitializedShape: outShape, kind: S.kind)
        let dst = out.storage.typed(S.self)
        let dstBlock = outShape[ax] * inner
        var offset = 0
        for p in parts {
            let block = p.shape[ax] * inner
            if block > 0 {
                let src = p.storage.typed(S.self)
                for o in 0..<outer { (dst + o * dstBlock + offset).update(from: src + o * block, count: block) }
            }
            offset += block
        }
        return out
    }

    /// Max (or min) along an axis with the index of the selected element (first one on ties).
    func extremum(axis ax: Int, max: Bool) -> (values: Tensor, indices: [Int]) {
        kind == .float64 ? extremumT(Double.self, ax, max) : extremumT(Float.self, ax, max)
    }

    func extremumT<S: TapeScalar>(_: S.Type, _ ax: Int, _ max: Bool) -> (values: Tensor, indices: [Int]) {
        let outer = shape[..<ax].reduce(1, *), inner = shape[(ax + 1)...].reduce(1, *), n = shape[ax]
        precondition(n > 0, "max/min over an empty axis")
        var outShape = shape
        outShape.remove(at: ax)
        let out = Tensor(uninitializedShape: outShape, kind: S.kind)
        var idx = [Int](repeating: 0, count: outer * inner)
        let src = storage.typed(S.self), dst = out.storage.typed(S.self)
        for o in 0..<outer {
            for i in 0..<inner {
                var best = src[o * n * inner + i], bi = 0
                for k in 1..<n {
                    let v = src[(o * n + k) * inner + i]
                    if max ? v > best : v < best { best = v; bi = k }
                }
                dst[o * inner + i] = best
                idx[o * inner + i] = bi
            }
        }
        return (out, idx)
    }
}

/// A partition of a matrix's columns into consecutive groups, each with a weight: the structured, sparse
/// matrices of attention heads and spherical-harmonic degrees (a column-group sum is a product with a
/// block matrix of K rows and few columns, which dgemm handles poorly).
public struct ColumnGroups: Sendable, Equatable {
    public let sizes: [Int]
    public let weights: [Double]
    /// Column count (Σ sizes).
    public let columns: Int

    public init(sizes: [Int], weights: [Double]? = nil) {
        precondition(sizes.allSatisfy { $0 > 0 }, "column groups must be non-empty, got \(sizes)")
        precondition(weights == nil || weights!.count == sizes.count, "one weight per column group")
        self.sizes = sizes
        self.weights = weights ?? [Double](repeating: 1, count: sizes.count)
        columns = sizes.reduce(0, +)
    }

    /// `count` groups of `size` columns each, all with weight `weight`.
    public init(count: Int, size: Int, weight: Double = 1) {
        self.init(sizes: [Int](repeating: size, count: count), weights: [Double](repeating: weight, count: count))
    }

    public var count: Int { sizes.count }
}

extension Tensor {
    /// [R, C] → [R, G]: out[r, g] = w_g Σ_{c ∈ g} self[r, c].
    public func sumColumnGroups(_ groups: ColumnGroups) -> Tensor {
        kind == .float64 ? sumColumnGroupsT(Double.self, groups) : sumColumnGroupsT(Float.self, groups)
    }

    func sumColumnGroupsT<S: TapeScalar>(_: S.Type, _ groups: ColumnGroups) -> Tensor {
        precondition(rank == 2 && shape[1] == groups.columns, "sumColumnGroups: shape \(shape) does not have \(groups.columns) columns")
        let rows = shape[0], cols = groups.columns, g = groups.count
        let out = Tensor(uninitializedShape: [rows, g], kind: S.kind)
        let src = storage.typed(S.self), dst = out.storage.typed(S.self)
        groups.sizes.withUnsafeBufferPointer { sizes in
            groups.weights.withUnsafeBufferPointer { w in
                for r in 0..<rows {
                    var s = src + r * cols
                    let d = dst + r * g
                    for k in 0..<g {
                        var acc: S = 0
                        for c in 0..<sizes[k] { acc += s[c] }
                        d[k] = acc * S(w[k])
                        s += sizes[k]
                    }
                }
            }
        }
        return out
    }

    /// [R, G] → [R, C]: out[r, c] = w_g self[r, g] for c ∈ g (the adjoint of `sumColumnGroups`).
    public func repeatColumnGroups(_ groups: ColumnGroups) -> Tensor {
        kind == .float64 ? repeatColumnGroupsT(Double.self, groups) : repeatColumnGroupsT(Float.self, groups)
    }

    func repeatColumnGroupsT<S: TapeScalar>(_: S.Type, _ groups: ColumnGroups) -> Tensor {
        precondition(rank == 2 && shape[1] == groups.count, "repeatColumnGroups: shape \(shape) does not have \(groups.count) columns")
        let rows = shape[0], cols = groups.columns, g = groups.count
        let out = Tensor(uninitializedShape: [rows, cols], kind: S.kind)
        let src = storage.typed(S.self), dst = out.storage.typed(S.self)
        groups.sizes.withUnsafeBufferPointer { sizes in
            groups.weights.withUnsafeBufferPointer { w in
                for r in 0..<rows {
                    let s = src + r * g
                    var d = dst + r * cols
                    for k in 0..<g {
                        let v = s[k] * S(w[k])
                        for c in 0..<sizes[k] { d[c] = v }
                        d += sizes[k]
                    }
                }
            }
        }
        return out
    }
}
