// Reductions, shape changes, indexing and matrix products, each with its backward rule.

// MARK: - Reductions and broadcasting

extension Variable {
    /// Sum of all elements (rank-0 result).
    public func sum() -> Variable {
        let s = shape
        return makeOp("sumAll", [self], Tensor(shape: [], repeating: value.sum(), kind: value.kind), saving: .nothing) { c in [c.grad.broadcast(to: s)] }
    }

    /// Sum over `axes` (negative axes count from the end).
    public func sum(axes: [Int], keepDims: Bool = false) -> Variable {
        let ax = Tensor.normalizeAxes(axes, rank: rank)
        var kept = shape
        for a in ax { kept[a] = 1 }
        let r = sum(toShape: kept)
        return keepDims ? r : r.reshaped(shape.enumerated().filter { !ax.contains($0.offset) }.map(\.element))
    }

    public func sum(axis: Int, keepDims: Bool = false) -> Variable { sum(axes: [axis], keepDims: keepDims) }

    public func mean() -> Variable { sum() * (1 / Double(Swift.max(count, 1))) }

    public func mean(axes: [Int], keepDims: Bool = false) -> Variable {
        let n = Tensor.normalizeAxes(axes, rank: rank).reduce(1) { $0 * shape[$1] }
        return sum(axes: axes, keepDims: keepDims) * (1 / Double(Swift.max(n, 1)))
    }

    /// Sum over broadcast dimensions down to `target` (the adjoint of `broadcast(to:)`).
    public func sum(toShape target: [Int]) -> Variable {
        if target == shape { return self }
        let s = shape
        return makeOp("sumTo", [self], value.sum(toShape: target), saving: .nothing) { c in [c.grad.broadcast(to: s)] }
    }

    /// Repeat along size-1 (or missing leading) dimensions to `target`.
    public func broadcast(to target: [Int]) -> Variable {
        if target == shape { return self }
        let s = shape
        return makeOp("broadcast", [self], value.broadcast(to: target), saving: .nothing) { c in [c.grad.sum(toShape: s)] }
    }

    /// Maximum along an axis; the gradient goes to the first maximal element (subgradient to the arg).
    public func max(axis: Int) -> Variable { extremum(axis: axis, max: true) }

    /// Minimum along an axis; the gradient goes to the first minimal element.
    public func min(axis: Int) -> Variable { extremum(axis: axis, max: false) }

    private func extremum(axis: Int, max: Bool) -> Variable {
        let ax = Tensor.normalizeAxes([axis], rank: rank)[0]
        let (vals, idx) = value.extremum(axis: ax, max: max)
        // One-hot mask of the selected elements: the backward is a broadcast times this constant mask.
        var mask = Tensor.zeros(shape)
        let outer = shape[..<ax].reduce(1, *), inner = shape[(ax + 1)...].reduce(1, *), n = shape[ax]
        mask.withUnsafeMutableBufferPointer { p in
            for o in 0..<outer { for i in 0..<inner { p[(o * n + idx[o * inner + i]) * inner + i] = 1 } }
        }
        var keptShape = shape
        keptShape[ax] = 1
        let s = shape
        return makeOp(max ? "max" : "min", [self], vals, saving: .nothing) { c in
            [c.grad.reshaped(keptShape).broadcast(to: s) * mask]
        }
    }

    /// Euclidean norm over the last axis, with gradient 0 (not NaN) where the norm is 0.
    public func norm(axis: Int = -1, keepDims: Bool = false) -> Variable {
        let ax = Tensor.normalizeAxes([axis], rank: rank)[0]
        let sq = value.map { $0 * $0 }.sum(axes: [ax], keepDims: true)
        let n = sq.map { $0.squareRoot() }
        let nonzero = n.map { $0 > 0 ? 1 : 0 }
        var outShape = shape
        outShape.remove(at: ax)
        let s = shape
        let out = makeOp("norm", [self], n, saving: .all) { c in
            // ∂|x|/∂x = x/|x|; dividing by 1 where the norm is 0 makes the (sub)gradient 0 there, not NaN.
            let nn = select(nonzero, c.output(), Variable(constant: 1))
            return [(c.grad / nn).broadcast(to: s) * c.input(0)]
        }
        return keepDims ? out : out.reshaped(outShape)
    }
}

// MARK: - Shape changes

extension Variable {
    public func reshaped(_ newShape: [Int]) -> Variable {
        let r = value.reshaped(newShape)
        if r.shape == shape { return self }
        let s = shape
        return makeOp("reshape", [self], r, saving: .nothing) { c in [c.grad.reshaped(s)] }
    }

    /// Transpose of a 2-D variable.
    public func transposed() -> Variable {
        makeOp("transpose", [self], value.transposed(), saving: .nothing) { c in [c.grad.transposed()] }
    }

    /// Axis permutation: result.shape[k] = shape[perm[k]].
    public func permuted(_ perm: [Int]) -> Variable {
        var inverse = [Int](repeating: 0, count: perm.count)
        for (k, p) in perm.enumerated() { inverse[p] = k }
        return makeOp("permute", [self], value.permuted(perm), saving: .nothing) { c in [c.grad.permuted(inverse)] }
    }

    /// Elements `range` along `axis`.
    public func slice(axis: Int, _ range: Range<Int>) -> Variable {
        let ax = Tensor.normalizeAxes([axis], rank: rank)[0]
        if range == 0..<shape[ax] { return self }
        let s = shape
        return makeOp("slice", [self], value.slice(axis: ax, range), saving: .nothing) { c in [c.grad.padSlice(axis: ax, range, fullShape: s)] }
    }

    /// Column `k` of the last axis, keeping the axis (shape [..., 1]).
    public func column(_ k: Int) -> Variable { slice(axis: -1, k..<(k + 1)) }

    /// Zero tensor of `fullShape` with `self` placed at `range` along `axis` (adjoint of slice).
    func padSlice(axis ax: Int, _ range: Range<Int>, fullShape: [Int]) -> Variable {
        makeOp("padSlice", [self], value.padSlice(axis: ax, range, fullShape: fullShape), saving: .nothing) { c in [c.grad.slice(axis: ax, range)] }
    }

    /// Concatenation along `axis`.
    public static func concatenate(_ parts: [Variable], axis: Int) -> Variable {
        precondition(!parts.isEmpty, "concatenate of no variables")
        if parts.count == 1 { return parts[0] }
        let ax = Tensor.normalizeAxes([axis], rank: parts[0].rank)[0]
        var ranges: [Range<Int>] = []
        var o = 0
        for p in parts { ranges.append(o..<(o + p.shape[ax])); o += p.shape[ax] }
        return makeOp("concat", parts, Tensor.concatenate(parts.map(\.value), axis: ax), saving: .nothing) { c in
            ranges.enumerated().map { k, r in c.needs[k] ? c.grad.slice(axis: ax, r) : nil }
        }
    }

    /// Stacks equal-shape variables along a new leading axis.
    public static func stack(_ parts: [Variable]) -> Variable {
        concatenate(parts.map { $0.reshaped([1] + $0.shape) }, axis: 0)
    }
}

// MARK: - Indexing (pairs ↔ atoms)

extension Variable {
    /// Rows picked along axis 0: result[m] = self[index[m]]. Backward: scatter-add.
    public func gatherRows(_ index: [Int]) -> Variable {
        let n = shape[0]
        return makeOp("gather", [self], value.gatherRows(index), saving: .nothing) { c in [c.grad.scatterAddRows(index, count: n)] }
    }

    /// Segment sum: result[index[m]] += self[m] over `count` rows. Backward: gather.
    public func scatterAddRows(_ index: [Int], count rows: Int) -> Variable {
        makeOp("scatterAdd", [self], value.scatterAddRows(index, count: rows), saving: .nothing) { c in [c.grad.gatherRows(index)] }
    }
}

// MARK: - Column groups (attention heads, spherical-harmonic degrees)

extension Variable {
    /// [R, C] → [R, G]: weighted sums over consecutive column groups. Equal to a product with a constant
    /// block matrix, without the dense matrix.
    public func sumColumnGroups(_ groups: ColumnGroups) -> Variable {
        makeOp("sumColumnGroups", [self], value.sumColumnGroups(groups), saving: .nothing) { c in [c.grad.repeatColumnGroups(groups)] }
    }

    /// [R, G] → [R, C]: each column repeated over its group, times the group's weight (adjoint of
    /// `sumColumnGroups`).
    public func repeatColumnGroups(_ groups: ColumnGroups) -> Variable {
        makeOp("repeatColumnGroups", [self], value.repeatColumnGroups(groups), saving: .nothing) { c in [c.grad.sumColumnGroups(groups)] }
    }
}

// MARK: - Matrix products

/// op(A)·op(B) for 2-D variables.
public func matmul(_ a: Variable, _ b: Variable, transposeA ta: Bool = false, transposeB tb: Bool = false) -> Variable {
    makeOp("matmul", [a, b], Tensor.matmul(a.value, b.value, transposeA: ta, transposeB: tb), saving: .allInputs) { c in
        let g = c.grad, av = c.input(0), bv = c.input(1)
        var ga: Variable? = nil, gb: Variable? = nil
        if c.needs[0] { ga = ta ? matmul(bv, g, transposeA: tb, transposeB: true) : matmul(g, bv, transposeB: !tb) }
        if c.needs[1] { gb = tb ? matmul(g, av, transposeA: true, transposeB: ta) : matmul(av, g, transposeA: !ta) }
        return [ga, gb]
    }
}

/// Batched outer products of rows: [P, a] ⊗ [P, b] → [P, a, b].
public func outerRows(_ x: Variable, _ y: Variable) -> Variable {
    precondition(x.rank == 2 && y.rank == 2 && x.shape[0] == y.shape[0], "outerRows: shapes \(x.shape) and \(y.shape)")
    return x.reshaped([x.shape[0], x.shape[1], 1]) * y.reshaped([y.shape[0], 1, y.shape[1]])
}

/// Outer product of two vectors: [a] ⊗ [b] → [a, b].
public func outer(_ x: Variable, _ y: Variable) -> Variable {
    x.reshaped([x.count, 1]) * y.reshaped([1, y.count])
}

/// Row-wise dot products of two [P, d] variables → [P].
public func rowDot(_ x: Variable, _ y: Variable) -> Variable { (x * y).sum(axis: -1) }
