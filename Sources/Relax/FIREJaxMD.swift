import Foundation
import Atoms
import Tape

/// FIRE as in JAX-MD (`jax_md.minimize.fire_descent`): velocity-Verlet with unit mass, momentum mixing with
/// |F| regularised by 1e-6, no max-step clamp:
///
///     p += dt/2·F;  x += dt·p;  F = F(x);  p += dt/2·F
///     p += α(F·|p|/|F| − p);  n = (F·p ≥ 0) ? n + 1 : 0
///     if F·p > 0 and n > n_min: dt = min(dt·f_inc, dt_max), α *= f_α
///     if F·p < 0: dt *= f_dec, α = α_start, p = 0
///
/// JAX-MD stores these constants, dt and α as float16 (even with x64 enabled); `float16: true` reproduces
/// that rounding exactly (rounding is not differentiated), for step-by-step agreement with JAX-MD.
public struct FIREJaxMD: Relaxer {
    public var name: String { "fire-jaxmd" }
    public var hyperparameters: Hyper<Double>
    public var nmin: Int
    public var float16: Bool

    /// JAX-MD's names: dt_start, dt_max, f_inc, f_dec, alpha_start, f_alpha.
    public struct Hyper<T> {
        public var dtStart, dtMax, fInc, fDec, alphaStart, fAlpha: T

        public func map<U>(_ f: (String, T) -> U) -> Hyper<U> {
            Hyper<U>(dtStart: f("dt_start", dtStart), dtMax: f("dt_max", dtMax), fInc: f("f_inc", fInc), fDec: f("f_dec", fDec),
                     alphaStart: f("alpha_start", alphaStart), fAlpha: f("f_alpha", fAlpha))
        }
    }

    public init(dtStart: Double = 0.1, dtMax: Double = 0.4, nmin: Int = 5, fInc: Double = 1.1, fDec: Double = 0.5,
                alphaStart: Double = 0.1, fAlpha: Double = 0.99, float16: Bool = false) {
        func r(_ x: Double) -> Double { float16 ? Double(Float16(x)) : x }
        hyperparameters = Hyper(dtStart: r(dtStart), dtMax: r(dtMax), fInc: r(fInc), fDec: r(fDec), alphaStart: r(alphaStart), fAlpha: r(fAlpha))
        self.nmin = nmin
        self.float16 = float16
    }

    public func inputs(_ variable: (String, Double) -> Variable) -> Hyper<Variable> { hyperparameters.map(variable) }

    public struct State: RelaxerState {
        public var positions: Variable
        public var momentum: Variable
        public var force: Variable
        public var dt: Variable
        public var alpha: Variable
        public var positiveSteps = 0
        public var energy: Variable?
        public var forces: Variable? {
            get { force }
            set { if let f = newValue { force = f } }
        }
        public var tensors: [Variable] {
            get { [positions, momentum, force, dt, alpha] }
            set { positions = newValue[0]; momentum = newValue[1]; force = newValue[2]; dt = newValue[3]; alpha = newValue[4] }
        }
    }

    /// Rounds a scalar to float16 in float16 mode, keeping its gradient path (JAX treats the cast as identity).
    private func round16(_ v: Variable) -> Variable {
        guard float16 else { return v }
        return v + (Double(Float16(v.scalar)) - v.scalar)
    }

    public func start(positions: Variable, hyper: Hyper<Variable>, evaluate: ForceFunction) -> State {
        let (e, f) = evaluate(positions)
        var s = State(positions: positions, momentum: Variable(constant: Tensor.zeros(positions.shape)), force: f,
                      dt: hyper.dtStart, alpha: hyper.alphaStart)
        s.energy = e
        return s
    }

    public func step(_ s: State, hyper h: Hyper<Variable>, evaluate: ForceFunction) -> State {
        var s = s
        let halfDt = s.dt * 0.5
        var p = s.momentum + s.force * halfDt
        s.positions = s.positions + p * s.dt
        let (e, f) = evaluate(s.positions)
        s.energy = e
        s.force = f
        p = p + f * halfDt
        let fNorm = ((f * f).sum() + 1e-6).sqrt()
        let pNorm = (p * p).sum().sqrt()
        let fp = (f * p).sum().scalar
        p = p + (f * pNorm / fNorm - p) * s.alpha
        s.positiveSteps = fp >= 0 ? s.positiveSteps + 1 : 0
        if fp > 0 && s.positiveSteps > nmin {
            let grown = round16(s.dt * h.fInc)
            s.dt = grown.scalar <= h.dtMax.scalar ? grown : h.dtMax
            s.alpha = round16(s.alpha * h.fAlpha)
        }
        if fp < 0 {
            s.dt = round16(s.dt * h.fDec)
            s.alpha = h.alphaStart
            p = p * 0
        }
        s.momentum = p
        return s
    }
}

extension FIREJaxMD.Hyper: Equatable where T: Equatable {}
extension FIREJaxMD.Hyper: Sendable where T: Sendable {}
extension FIREJaxMD.Hyper: RelaxerHyperparameters where T == Double {
    public func mapValues(_ f: (String, Double) -> Double) -> Self { map(f) }
}
