// Fused message-passing product: elementwise products of row-gathered factors, optionally scatter-added.
//
// Message passing over pairs p = (i, j) multiplies per-atom rows picked by i or j with per-pair rows and sums
// the result onto atoms: q[i] ⊙ w[p] ⊙ k[j], or Σ_{p: i} w[p] ⊙ v[j]. Written with gatherRows, * and
// scatterAddRows, every factor is first copied to a [pairs × features] tensor and every product streams
// them through memory again, in the forward pass and in each (recorded) backward pass. One fused operation
// reads the small per-atom tables in place and writes one result. Its derivative with respect to each factor
// is again such a product (of the upstream gradient and the other factors, scattered by that factor's
// gather index), so the operation is closed under differentiation and second derivatives come for free.

/// A factor of `gatheredProduct`: `variable`'s rows picked by `rows` (nil: row p of the variable itself).
public struct GatheredFactor {
    public let variable: Variable
    public let rows: [Int]?

    public init(_ variable: Variable, _ rows: [Int]? = nil) {
        self.variable = variable
        self.rows = rows
    }
}

/// out[p] = f₀[r₀(p)] ⊙ f₁[r₁(p)] ⊙ … (products left to right, elementwise over a row) for p < P, where
/// r_k(p) = rows_k[p] or p. With `scatterInto`, out[scatterInto[p]] += that product over `count` rows
/// instead. Equal to the composition of gatherRows, * and scatterAddRows, without the intermediate tensors.
public func gatheredProduct(_ factors: [GatheredFactor], scatterInto scatter: [Int]? = nil, count: Int = 0) -> Variable {
    let rows = factors.map(\.rows), rowCounts = factors.map { $0.variable.shape[0] }
    let out = Tensor.gatheredProduct(factors.map(\.variable.value), rows: rows, scatterInto: scatter, count: count)
    // The rule captures indices and sizes only: a captured Variable would hold the tape (a reference cycle).
    return makeOp("gatheredProduct", factors.map(\.variable), out, saving: .allInputs) { c in
        (0..<rows.count).map { m -> Variable? in
            guard c.needs[m] else { return nil }
            // ∂/∂f_m: the upstream gradient, read at the output row of p, times the other factors, summed
            // into f_m's row r_m(p).
            var fs = [GatheredFactor(c.grad, scatter)]
            for k in 0..<rows.count where k != m { fs.append(GatheredFactor(c.input(k), rows[k])) }
            return gatheredProduct(fs, scatterInto: rows[m], count: rowCounts[m])
        }
    }
}

extension Tensor {
    /// Kernel of `gatheredProduct` (see there). Every factor has rank ≥ 1 and the same trailing shape.
    public static func gatheredProduct(_ factors: [Tensor], rows: [[Int]?], scatterInto scatter: [Int]?, count: Int) -> Tensor {
        factors.first?.kind == .float32 ? gatheredProductT(Float.self, factors, rows, scatter, count) : gatheredProductT(Double.self, factors, rows, scatter, count)
    }

    static func gatheredProductT<S: TapeScalar>(_: S.Type, _ factors: [Tensor], _ rows: [[Int]?], _ scatter: [Int]?, _ count: Int) -> Tensor {
        precondition(!factors.isEmpty && factors.count == rows.count, "gatheredProduct: one row index (or nil) per factor")
        let trailing = Array(factors[0].shape.dropFirst())
        let width = trailing.reduce(1, *)
        let pairs = rows[0]?.count ?? factors[0].shape[0]
        for (k, f) in factors.enumerated() {
            precondition(f.rank >= 1 && Array(f.shape.dropFirst()) == trailing,
                         "gatheredProduct: factor \(k) has shape \(f.shape), expected [rows] + \(trailing)")
            if let r = rows[k] {
                precondition(r.count == pairs, "gatheredProduct: factor \(k) has \(r.count) row indices, expected \(pairs)")
                let n = f.shape[0]
                precondition(r.allSatisfy { $0 >= 0 && $0 < n }, "gatheredProduct: factor \(k): row index out of range 0..<\(n)")
            } else {
                precondition(f.shape[0] == pairs, "gatheredProduct: factor \(k) has \(f.shape[0]) rows, expected \(pairs)")
            }
        }
        if let s = scatter {
            precondition(s.count == pairs, "gatheredProduct: \(s.count) scatter indices for \(pairs) rows")
            precondition(s.allSatisfy { $0 >= 0 && $0 < count }, "gatheredProduct: scatter index out of range 0..<\(count)")
        }
        let out = scatter == nil ? Tensor(uninitializedShape: [pairs] + trailing, kind: S.kind) : Tensor(shape: [count] + trailing, repeating: 0, kind: S.kind)
        let dst = out.storage.typed(S.self)
        let nf = factors.count
        // Row offsets (row index × width) of every factor for every p, and of the output: one flat table, so
        // the loop below does no optional or bounds-checked array access.
        let offsets = UnsafeMutablePointer<Int>.allocate(capacity: (nf + 1) * pairs)
        defer { offsets.deallocate() }
        for (k, r) in (rows + [scatter]).enumerated() {
            let o = offsets + k * pairs
            if let r { for p in 0..<pairs { o[p] = r[p] * width } } else { for p in 0..<pairs { o[p] = p * width } }
        }
        let src = factors.map { UnsafePointer($0.storage.typed(S.self)) }
        let outOffsets = offsets + nf * pairs
        let accumulate = scatter != nil
        switch nf {
        case 1:
            let a0 = src[0], oa = offsets
            for p in 0..<pairs {
                let d = dst + outOffsets[p], a = a0 + oa[p]
                if accumulate { for c in 0..<width { d[c] += a[c] } } else { for c in 0..<width { d[c] = a[c] } }
            }
        case 2:
            let a0 = src[0], b0 = src[1], oa = offsets, ob = offsets + pairs
            for p in 0..<pairs {
                let d = dst + outOffsets[p], a = a0 + oa[p], b = b0 + ob[p]
                if accumulate { for c in 0..<width { d[c] += a[c] * b[c] } } else { for c in 0..<width { d[c] = a[c] * b[c] } }
            }
        case 3:
            let a0 = src[0], b0 = src[1], e0 = src[2], oa = offsets, ob = offsets + pairs, oe = offsets + 2 * pairs
            for p in 0..<pairs {
                let d = dst + outOffsets[p], a = a0 + oa[p], b = b0 + ob[p], e = e0 + oe[p]
                if accumulate {
                    for c in 0..<width { d[c] += a[c] * b[c] * e[c] }
                } else {
                    for c in 0..<width { d[c] = a[c] * b[c] * e[c] }
                }
            }
        default:
            for p in 0..<pairs {
                let d = dst + outOffsets[p]
                for c in 0..<width {
                    var v = src[0][offsets[p] + c]
                    for k in 1..<nf { v *= src[k][offsets[k * pairs + p] + c] }
                    if accumulate { d[c] += v } else { d[c] = v }
                }
            }
        }
        return out
    }
}
