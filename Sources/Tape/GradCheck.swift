// Finite-difference checks of tape derivatives, usable from tests and from the CLI.

public struct GradCheckReport: CustomStringConvertible, Sendable {
    /// Per input: max |analytic − numeric| / max(max |analytic|, max |numeric|) (norm-wise relative error).
    public var relativeErrors: [Double]
    public var absoluteErrors: [Double]
    public var analytic: [Tensor]
    public var numeric: [Tensor]

    public var maxRelativeError: Double { relativeErrors.max() ?? 0 }
    public var maxAbsoluteError: Double { absoluteErrors.max() ?? 0 }

    public func passed(tolerance: Double) -> Bool {
        maxRelativeError <= tolerance && analytic.allSatisfy(\.isFinite)
    }

    public var description: String {
        relativeErrors.indices.map { k in
            "input \(k): rel \(formatShort(relativeErrors[k])), abs \(formatShort(absoluteErrors[k])), |g| \(formatShort(analytic[k].maxAbs))"
        }.joined(separator: "; ")
    }

    init(analytic: [Tensor], numeric: [Tensor]) {
        self.analytic = analytic
        self.numeric = numeric
        let abs = zip(analytic, numeric).map { $0.maxAbsDifference($1) }
        absoluteErrors = abs
        relativeErrors = zip(analytic, numeric).enumerated().map { k, pair in
            let scale = Swift.max(pair.0.maxAbs, pair.1.maxAbs)
            return scale == 0 ? 0 : abs[k] / scale
        }
    }
}

func formatShort(_ x: Double) -> String {
    if x == 0 { return "0" }
    let e = Int((Swift.abs(x)).log10Floor)
    let m = x / pow10(e)
    return "\((m * 100).rounded() / 100)e\(e)"
}

private func pow10(_ e: Int) -> Double {
    var r = 1.0
    if e >= 0 { for _ in 0..<e { r *= 10 } } else { for _ in 0..<(-e) { r /= 10 } }
    return r
}

private extension Double {
    var log10Floor: Double {
        var e = 0.0, v = self
        while v >= 10 { v /= 10; e += 1 }
        while v < 1 && v > 0 { v *= 10; e -= 1 }
        return e
    }
}

public enum GradCheck {
    /// Central differences of the scalar f against the tape gradient, at `inputs`.
    /// The step for element i is `step`·max(1, |x_i|).
    public static func firstOrder(_ f: ([Variable]) -> Variable, at inputs: [Tensor], step: Double = 1e-6) -> GradCheckReport {
        let tape = Tape()
        let xs = inputs.map { tape.variable($0) }
        let y = f(xs)
        precondition(y.count == 1, "GradCheck needs a scalar function, got shape \(y.shape)")
        let analytic = tape.gradient(of: y, wrt: xs).map(\.value)
        let numeric = inputs.indices.map { k in numericalGradient(f, at: inputs, input: k, step: step) }
        return GradCheckReport(analytic: analytic, numeric: numeric)
    }

    /// Hessian-vector product by double backward (the backward pass recorded and differentiated again)
    /// against central differences of the tape gradient along `direction` (one tensor per input; random
    /// when nil). A direction that is nonzero on one input only checks the mixed derivatives ∂²f/∂x_j∂x_k.
    public static func secondOrder(_ f: ([Variable]) -> Variable, at inputs: [Tensor], direction: [Tensor]? = nil,
                                   step: Double = 1e-5, seed: UInt64 = 1) -> GradCheckReport {
        var rng = SeededGenerator(seed: seed)
        let v = direction ?? inputs.map { rng.normalTensor($0.shape) }
        precondition(v.count == inputs.count, "direction needs one tensor per input")
        let tape = Tape()
        let xs = inputs.map { tape.variable($0) }
        let y = f(xs)
        let g = tape.gradient(of: y, wrt: xs, createGraph: true)
        var gv = Variable(constant: 0)
        for (gk, vk) in zip(g, v) { gv = gv + (gk * vk).sum() }
        let analytic = tape.gradient(of: gv, wrt: xs).map(\.value)

        func grad(at shift: Double) -> [Tensor] {
            let t = Tape()
            let x = zip(inputs, v).map { t.variable($0 + $1 * shift) }
            return t.gradient(of: f(x), wrt: x).map(\.value)
        }
        let gp = grad(at: step), gm = grad(at: -step)
        let numeric = zip(gp, gm).map { ($0 - $1) * (1 / (2 * step)) }
        return GradCheckReport(analytic: analytic, numeric: numeric)
    }

    static func numericalGradient(_ f: ([Variable]) -> Variable, at inputs: [Tensor], input k: Int, step: Double) -> Tensor {
        var out = Tensor.zeros(inputs[k].shape)
        var x = inputs
        for i in 0..<inputs[k].count {
            let xi = inputs[k][flat: i]
            let h = step * Swift.max(1, Swift.abs(xi))
            // Use the representable steps actually taken.
            let up = xi + h, down = xi - h
            x[k][flat: i] = up
            let fp = f(x.map { Variable(constant: $0) }).scalar
            x[k][flat: i] = down
            let fm = f(x.map { Variable(constant: $0) }).scalar
            x[k][flat: i] = xi
            out[flat: i] = (fp - fm) / (up - down)
        }
        return out
    }
}
