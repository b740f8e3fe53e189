import Foundation
import Atoms
import Tape

/// FIRE as in ASE 3.29 (`ase.optimize.FIRE`, Bitzek et al., PRL 97, 170201 (2006)), with ASE's defaults
/// and its exact order of operations:
///
///     f = F(x)
///     if first step: v = 0
///     elif v·f > 0: v = (1−a)v + a·f/|f|·|v|; if N > Nmin: dt = min(dt·finc, dtmax), a *= fa; N += 1
///     else: v = 0, a = astart, dt *= fdec, N = 0
///     v += dt·f;  dr = dt·v;  if |dr| > maxstep: dr = maxstep·dr/|dr|;  x += dr
///
/// Norms are over all 3N components (masses are ignored, as in ASE). Differentiable hyperparameters:
/// `dt` (initial time step), `dtmax`, `maxstep`, `astart`; `finc`, `fdec`, `fa` too.
public struct FIRE: Relaxer {
    public var name: String { "fire" }
    public var hyperparameters: Hyper<Double>
    /// N_min: positive steps before dt may grow.
    public var nmin: Int

    /// dt (initial time step, ASE time units), maxstep (Å), dtmax, finc, fdec, astart, fa.
    public struct Hyper<T> {
        public var dt, maxstep, dtmax, finc, fdec, astart, fa: T

        public func map<U>(_ f: (String, T) -> U) -> Hyper<U> {
            Hyper<U>(dt: f("dt", dt), maxstep: f("maxstep", maxstep), dtmax: f("dtmax", dtmax), finc: f("finc", finc),
                     fdec: f("fdec", fdec), astart: f("astart", astart), fa: f("fa", fa))
        }
    }

    public init(dt: Double = 0.1, maxstep: Double = 0.2, dtmax: Double = 1.0, nmin: Int = 5, finc: Double = 1.1,
                fdec: Double = 0.5, astart: Double = 0.1, fa: Double = 0.99) {
        hyperparameters = Hyper(dt: dt, maxstep: maxstep, dtmax: dtmax, finc: finc, fdec: fdec, astart: astart, fa: fa)
        self.nmin = nmin
    }

    public func inputs(_ variable: (String, Double) -> Variable) -> Hyper<Variable> { hyperparameters.map(variable) }

    public struct State: RelaxerState {
        public var positions: Variable
        public var velocity: Variable
        public var dt: Variable
        public var a: Variable
        /// False before the first step (ASE's `vel is None`).
        public var started = false
        /// ASE's Nsteps (consecutive downhill steps).
        public var downhillSteps = 0
        public var energy: Variable?
        public var forces: Variable?

        public var tensors: [Variable] {
            get { [positions, velocity, dt, a] }
            set { positions = newValue[0]; velocity = newValue[1]; dt = newValue[2]; a = newValue[3] }
        }
    }

    public func start(positions: Variable, hyper: Hyper<Variable>, evaluate: ForceFunction) -> State {
        // ASE starts with a = its `a` argument, which defaults to astart's value.
        State(positions: positions, velocity: Variable(constant: Tensor.zeros(positions.shape)), dt: hyper.dt, a: hyper.astart)
    }

    public func step(_ s: State, hyper h: Hyper<Variable>, evaluate: ForceFunction) -> State {
        var s = s
        let f = s.currentForces(evaluate)
        var v: Variable
        if s.started {
            let vel = s.velocity
            let vf = (vel * f).sum().scalar
            if vf > 0 {
                let fnorm = (f * f).sum().sqrt(), vnorm = (vel * vel).sum().sqrt()
                v = vel * (1 - s.a) + f * s.a / fnorm * vnorm
                if s.downhillSteps > nmin {
                    // min(dt·finc, dtmax): the branch is taken on values, the chosen expression is differentiated.
                    let grown = s.dt * h.finc
                    s.dt = grown.scalar <= h.dtmax.scalar ? grown : h.dtmax
                    s.a = s.a * h.fa
                }
                s.downhillSteps += 1
            } else {
                v = vel * 0
                s.a = h.astart
                s.dt = s.dt * h.fdec
                s.downhillSteps = 0
            }
        } else {
            v = Variable(constant: Tensor.zeros(s.positions.shape))
            s.started = true
        }
        v = v + f * s.dt
        var dr = v * s.dt
        let normdr = (dr * dr).sum().sqrt()
        if normdr.scalar > h.maxstep.scalar {
            dr = dr * h.maxstep / normdr
        }
        s.velocity = v
        s.positions = s.positions + dr
        s.energy = nil
        s.forces = nil
        return s
    }
}

/// Force-following ("frame", the update of Dramko et al. 2025): x ← x + η·F, optionally clamped so that
/// no atom moves more than `maxstep` (the whole step is scaled, as ASE's BFGS does). Hyperparameters:
/// `eta` (Å²/eV) and `maxstep` (Å; ≤ 0 disables the clamp).
public struct ForceFollowing: Relaxer {
    public var name: String { "frame" }
    public var hyperparameters: Hyper<Double>

    public struct Hyper<T> {
        public var eta, maxstep: T

        public func map<U>(_ f: (String, T) -> U) -> Hyper<U> { Hyper<U>(eta: f("eta", eta), maxstep: f("maxstep", maxstep)) }
    }

    public init(eta: Double = 0.01, maxstep: Double = 0) {
        hyperparameters = Hyper(eta: eta, maxstep: maxstep)
    }

    public func inputs(_ variable: (String, Double) -> Variable) -> Hyper<Variable> { hyperparameters.map(variable) }

    public struct State: RelaxerState {
        public var positions: Variable
        public var energy: Variable?
        public var forces: Variable?
        public var tensors: [Variable] {
            get { [positions] }
            set { positions = newValue[0] }
        }
    }

    public func start(positions: Variable, hyper: Hyper<Variable>, evaluate: ForceFunction) -> State {
        State(positions: positions)
    }

    public func step(_ s: State, hyper h: Hyper<Variable>, evaluate: ForceFunction) -> State {
        var s = s
        let f = s.currentForces(evaluate)
        var dr = f * h.eta
        if h.maxstep.scalar > 0 {
            dr = clampLongestStep(dr, maxstep: h.maxstep)
        }
        s.positions = s.positions + dr
        s.energy = nil
        s.forces = nil
        return s
    }
}

/// Scales a step [N, 3] so that its longest per-atom displacement is at most `maxstep` (ASE's
/// `determine_step`: scaled when longest ≥ maxstep). The scaling is differentiated.
func clampLongestStep(_ dr: Variable, maxstep: Variable) -> Variable {
    let lengths = dr.norm(axis: -1)
    let longest = lengths.max(axis: 0)
    if longest.scalar >= maxstep.scalar {
        return dr * (maxstep / longest)
    }
    return dr
}

extension FIRE.Hyper: Equatable where T: Equatable {}
extension FIRE.Hyper: Sendable where T: Sendable {}
extension FIRE.Hyper: RelaxerHyperparameters where T == Double {
    public func mapValues(_ f: (String, Double) -> Double) -> Self { map(f) }
}
extension ForceFollowing.Hyper: Equatable where T: Equatable {}
extension ForceFollowing.Hyper: Sendable where T: Sendable {}
extension ForceFollowing.Hyper: RelaxerHyperparameters where T == Double {
    public func mapValues(_ f: (String, Double) -> Double) -> Self { map(f) }
}
