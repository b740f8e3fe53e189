import Foundation

// Elementwise operations. Each forward rule sits next to its backward rule; backward rules are written with
// differentiable operations so that they can be recorded (second derivatives).

// MARK: - Arithmetic with broadcasting

extension Variable {
    public static func + (a: Variable, b: Variable) -> Variable {
        let sa = a.shape, sb = b.shape
        return makeOp("add", [a, b], Tensor.zipWith(a.value, b.value, +), saving: .nothing) { c in
            [c.needs[0] ? c.grad.sum(toShape: sa) : nil,
             c.needs[1] ? c.grad.sum(toShape: sb) : nil]
        }
    }

    public static func - (a: Variable, b: Variable) -> Variable {
        let sa = a.shape, sb = b.shape
        return makeOp("sub", [a, b], Tensor.zipWith(a.value, b.value, -), saving: .nothing) { c in
            [c.needs[0] ? c.grad.sum(toShape: sa) : nil,
             c.needs[1] ? (-c.grad).sum(toShape: sb) : nil]
        }
    }

    public static func * (a: Variable, b: Variable) -> Variable {
        let sa = a.shape, sb = b.shape
        return makeOp("mul", [a, b], Tensor.zipWith(a.value, b.value, *), saving: .allInputs) { c in
            [c.needs[0] ? (c.grad * c.input(1)).sum(toShape: sa) : nil,
             c.needs[1] ? (c.grad * c.input(0)).sum(toShape: sb) : nil]
        }
    }

    public static func / (a: Variable, b: Variable) -> Variable {
        let sa = a.shape, sb = b.shape
        return makeOp("div", [a, b], Tensor.zipWith(a.value, b.value, /), saving: .inputs(1, output: true)) { c in
            let gb: Variable? = c.needs[1] ? (-(c.grad * c.output()) / c.input(1)).sum(toShape: sb) : nil
            return [c.needs[0] ? (c.grad / c.input(1)).sum(toShape: sa) : nil, gb]
        }
    }

    public static prefix func - (a: Variable) -> Variable {
        makeOp("neg", [a], a.value.map { -$0 }, saving: .nothing) { c in [-c.grad] }
    }

    // Scalar forms: no scalar tensor is allocated for the common cases.
    public static func * (a: Variable, s: Double) -> Variable {
        makeOp("scale", [a], a.value.map { $0 * s }, saving: .nothing) { c in [c.grad * s] }
    }
    public static func * (s: Double, a: Variable) -> Variable { a * s }
    public static func / (a: Variable, s: Double) -> Variable { a * (1 / s) }
    public static func + (a: Variable, s: Double) -> Variable {
        makeOp("addScalar", [a], a.value.map { $0 + s }, saving: .nothing) { c in [c.grad] }
    }
    public static func + (s: Double, a: Variable) -> Variable { a + s }
    public static func - (a: Variable, s: Double) -> Variable { a + (-s) }
    public static func - (s: Double, a: Variable) -> Variable { (-a) + s }
    public static func / (s: Double, a: Variable) -> Variable { Variable(constant: s) / a }

    public static func + (a: Variable, b: Tensor) -> Variable { a + Variable(constant: b) }
    public static func - (a: Variable, b: Tensor) -> Variable { a - Variable(constant: b) }
    public static func * (a: Variable, b: Tensor) -> Variable { a * Variable(constant: b) }
    public static func / (a: Variable, b: Tensor) -> Variable { a / Variable(constant: b) }

    public static func += (a: inout Variable, b: Variable) { a = a + b }
    public static func -= (a: inout Variable, b: Variable) { a = a - b }
}

// MARK: - Unary functions

extension Variable {
    /// The same values in `kind`'s precision (rounded to nearest when narrowing); the gradient goes back in the
    /// input's precision, so a single-precision stretch of a computation sits between two casts.
    public func cast(to kind: ScalarKind) -> Variable {
        if kind == value.kind { return self }
        let from = value.kind
        return makeOp("cast", [self], value.converted(to: kind), saving: .nothing) { c in [c.grad.cast(to: from)] }
    }

    public func exp() -> Variable {
        makeOp("exp", [self], value.map(Foundation.exp), saving: .outputs) { c in [c.grad * c.output()] }
    }

    public func log() -> Variable {
        makeOp("log", [self], value.map(Foundation.log), saving: .inputs(0)) { c in [c.grad / c.input(0)] }
    }

    public func sqrt() -> Variable {
        makeOp("sqrt", [self], value.map { $0.squareRoot() }, saving: .outputs) { c in [c.grad * 0.5 / c.output()] }
    }

    public func squared() -> Variable {
        makeOp("square", [self], value.map { $0 * $0 }, saving: .inputs(0)) { c in [c.grad * c.input(0) * 2] }
    }

    /// x^p for a constant exponent.
    public func pow(_ p: Double) -> Variable {
        if p == 1 { return self }
        if p == 2 { return squared() }
        // Small integer exponents by repeated multiplication: several times cheaper than pow().
        let k = Int(p)
        let forward: Tensor
        if Double(k) == p && Swift.abs(k) <= 8 {
            forward = value.map { x in
                var r = 1.0
                for _ in 0..<Swift.abs(k) { r *= x }
                return k < 0 ? 1 / r : r
            }
        } else {
            forward = value.map { Foundation.pow($0, p) }
        }
        return makeOp("pow", [self], forward, saving: .inputs(0)) { c in
            [c.grad * c.input(0).pow(p - 1) * p]
        }
    }

    /// a^b elementwise with broadcasting (a > 0 where b is differentiated).
    public func pow(_ b: Variable) -> Variable {
        let sa = shape, sb = b.shape
        return makeOp("powTensor", [self, b], Tensor.zipWith(value, b.value, Foundation.pow)) { c in
            let a = c.input(0), e = c.input(1)
            return [c.needs[0] ? (c.grad * e * a.pow(e - 1)).sum(toShape: sa) : nil,
                    c.needs[1] ? (c.grad * c.output() * a.log()).sum(toShape: sb) : nil]
        }
    }

    // Activations: when the backward pass is not recorded, one fused kernel computes g·f'(x); when it is,
    // the same derivative is built from differentiable operations.

    public func tanh() -> Variable {
        makeOp("tanh", [self], value.map(Foundation.tanh), saving: .outputs) { c in
            if !c.tape.isRecording {
                return [Variable(constant: Tensor.zipWith(c.grad.value, c.node.savedOutput(0)) { g, y in g * (1 - y * y) })]
            }
            let y = c.output()
            return [c.grad * (1 - y * y)]
        }
    }

    public func sigmoid() -> Variable {
        makeOp("sigmoid", [self], value.map(stableSigmoid), saving: .outputs) { c in
            if !c.tape.isRecording {
                return [Variable(constant: Tensor.zipWith(c.grad.value, c.node.savedOutput(0)) { g, y in g * (y * (1 - y)) })]
            }
            let y = c.output()
            return [c.grad * (y * (1 - y))]
        }
    }

    /// x·σ(x) (swish), in one pass with the inlined exp (the fused CHGNet kernels' σ). σ(x) is kept from the
    /// forward pass so the backward needs no second exp.
    public func silu() -> Variable {
        let out = Tensor(uninitializedShape: shape, kind: value.kind), sig = Tensor(uninitializedShape: shape, kind: value.kind)
        if value.kind == .float32 {
            let src = value.storage.typed(Float.self), po = out.storage.typed(Float.self), ps = sig.storage.typed(Float.self)
            parallelRows(value.count, perRow: 2, align: 512) { r in
                siluAndSigmoid(src + r.lowerBound, po + r.lowerBound, ps + r.lowerBound, count: r.count)
            }
        } else {
            let src = ptr(value), po = ptr(out), ps = ptr(sig)
            parallelRows(value.count, perRow: 2, align: 512) { r in
                siluAndSigmoid(src + r.lowerBound, po + r.lowerBound, ps + r.lowerBound, count: r.count)
            }
        }
        return makeOp("silu", [self], out, saving: .inputs(0)) { c in
            if !c.tape.isRecording {
                let g = c.grad.value, x = c.input(0).value
                if g.shape == x.shape {
                    return [Variable(constant: Tensor.zip3(g, x, sig) { g, x, s in g * (s * (1 + x * (1 - s))) })]
                }
                return [Variable(constant: Tensor.zipWith(g, Tensor.zipWith(x, sig) { x, s in
                    s * (1 + x * (1 - s))
                }, *))]
            }
            let x = c.input(0), s = x.sigmoid(precomputed: sig)
            return [c.grad * (s * (1 + x * (1 - s)))]
        }
    }

    /// σ(x) recorded with an already computed value (same bits as `sigmoid()`).
    func sigmoid(precomputed: Tensor) -> Variable {
        makeOp("sigmoid", [self], precomputed, saving: .outputs) { c in
            if !c.tape.isRecording {
                return [Variable(constant: Tensor.zipWith(c.grad.value, c.node.savedOutput(0)) { g, y in g * (y * (1 - y)) })]
            }
            let y = c.output()
            return [c.grad * (y * (1 - y))]
        }
    }

    /// log(1 + eˣ), evaluated stably.
    public func softplus() -> Variable {
        makeOp("softplus", [self], value.map { x in Swift.max(x, 0) + Foundation.log1p(Foundation.exp(-Swift.abs(x))) }, saving: .inputs(0)) { c in
            if !c.tape.isRecording {
                return [Variable(constant: Tensor.zipWith(c.grad.value, c.input(0).value) { g, x in g * stableSigmoid(x) })]
            }
            return [c.grad * c.input(0).sigmoid()]
        }
    }

    /// log(1 + eˣ) − shift in one pass (shift = ln 2 is SchNet's shifted softplus): e^{−|x|} gives both the value
    /// and σ(x), the derivative, which the backward pass reuses instead of a second exp. exp and log1p are the
    /// inlined ones of FastMath.swift (within 2 ulp of libm's); one node instead of two.
    public func softplus(minus shift: Double) -> Variable {
        let out = Tensor(uninitializedShape: shape, kind: value.kind), sig = Tensor(uninitializedShape: shape, kind: value.kind)
        if value.kind == .float32 {
            let src = value.storage.typed(Float.self), po = out.storage.typed(Float.self), ps = sig.storage.typed(Float.self)
            parallelRows(value.count, perRow: 2, align: 512) { r in
                softplusAndSigmoid(src + r.lowerBound, po + r.lowerBound, ps + r.lowerBound, count: r.count, minus: Float(shift))
            }
        } else {
            let src = ptr(value), po = ptr(out), ps = ptr(sig)
            parallelRows(value.count, perRow: 2, align: 512) { r in
                softplusAndSigmoid(src + r.lowerBound, po + r.lowerBound, ps + r.lowerBound, count: r.count, minus: shift)
            }
        }
        return makeOp("softplus", [self], out, saving: .inputs(0)) { c in
            if !c.tape.isRecording { return [Variable(constant: Tensor.zipWith(c.grad.value, sig, *))] }
            return [c.grad * c.input(0).sigmoid(precomputed: sig)]
        }
    }

    public func cos() -> Variable {
        makeOp("cos", [self], value.map(Foundation.cos), saving: .inputs(0)) { c in [-(c.grad * c.input(0).sin())] }
    }

    public func sin() -> Variable {
        makeOp("sin", [self], value.map(Foundation.sin), saving: .inputs(0)) { c in [c.grad * c.input(0).cos()] }
    }

    /// |x|, with subgradient 0 at 0.
    public func abs() -> Variable {
        let sign = value.map { $0 > 0 ? 1 : ($0 < 0 ? -1 : 0) }
        return makeOp("abs", [self], value.map { Swift.abs($0) }, saving: .nothing) { c in [c.grad * sign] }
    }

    /// max(x, 0).
    public func relu() -> Variable {
        let mask = value.map { $0 > 0 ? 1 : 0 }
        return makeOp("relu", [self], value.map { Swift.max($0, 0) }, saving: .nothing) { c in [c.grad * mask] }
    }
}

@inline(__always)
func stableSigmoid(_ x: Double) -> Double {
    if x >= 0 { return 1 / (1 + Foundation.exp(-x)) }
    let e = Foundation.exp(x)
    return e / (1 + e)
}

// MARK: - Selection

/// Elementwise `mask ? a : b` with broadcasting of all three (mask: nonzero = true, not differentiated).
public func select(_ mask: Tensor, _ a: Variable, _ b: Variable) -> Variable {
    let sa = a.shape, sb = b.shape
    guard let s1 = Broadcast.shape(mask.shape, sa), let s = Broadcast.shape(s1, sb) else {
        preconditionFailure("select: cannot broadcast \(mask.shape), \(sa), \(sb)")
    }
    let m = mask.broadcast(to: s), av = a.value.broadcast(to: s), bv = b.value.broadcast(to: s)
    let out = Tensor(uninitializedShape: s)
    let pm = m.storage.pointer, pa = av.storage.pointer, pb = bv.storage.pointer, po = out.storage.pointer
    for i in 0..<out.count { po[i] = pm[i] != 0 ? pa[i] : pb[i] }
    return makeOp("select", [a, b], out, saving: .nothing) { c in
        let zero = Variable(constant: 0)
        return [c.needs[0] ? select(m, c.grad, zero).sum(toShape: sa) : nil,
                c.needs[1] ? select(m, zero, c.grad).sum(toShape: sb) : nil]
    }
}

/// Elementwise maximum; the gradient goes to `a` where a ≥ b, else to `b` (subgradient to the argument).
public func maximum(_ a: Variable, _ b: Variable) -> Variable {
    select(Tensor.zipWith(a.value, b.value) { $0 >= $1 ? 1 : 0 }, a, b)
}

/// Elementwise minimum; the gradient goes to `a` where a ≤ b, else to `b`.
public func minimum(_ a: Variable, _ b: Variable) -> Variable {
    select(Tensor.zipWith(a.value, b.value) { $0 <= $1 ? 1 : 0 }, a, b)
}
