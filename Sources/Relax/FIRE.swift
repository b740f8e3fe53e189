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
    public var hyperparameters = OrderedDictionary<Double>()
    /// N_min: positive steps before dt may grow.
    public var nmin: Int

    public init(dt: Double = 0.1, maxstep: Double = 0.2, dtmax: Double = 1.0, nmin: Int = 5, finc: Double = 1.1,
                fdec: Double = 0.5, astart: Double = 0.1, fa: Double = 0.99) {
        hyperparameters["dt"] = dt
        hyperparameters["maxstep"] = maxstep
        hyperparameters["dtmax"] = dtmax
        hyperparameters["finc"] = finc
        hyperparameters["fdec"] = fdec
        hyperparameters["astart"] = astart
        hyperparameters["fa"] = fa
        self.nmin = nmin
    }

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

    public func start(positions: Variable, hyper: [String: Variable], evaluate: ForceFunction) -> State {
        // ASE starts with a = its `a` argument, which defaults to astart's value.
        State(positions: positions, velocity: Variable(constant: Tensor.zeros(positions.shape)), dt: hyper["dt"]!, a: hyper["astart"]!)
    }

    public func step(_ s: State, hyper h: [String: Variable], evaluate: ForceFunction) -> State {
        var s = s
        let f: Variable
        if let cached = s.forces { f = cached } else { (s.energy, f) = evaluate(s.positions); s.forces = f }
        var v: Variable
        if s.started {
            let vel = s.velocity
            let vf = (vel * f).sum().scalar
            if vf > 0 {
                let fnorm = (f * f).sum().sqrt(), vnorm = (vel * vel).sum().sqrt()
                v = vel * (1 - s.a) + f * s.a / fnorm * vnorm
                if s.downhillSteps > nmin {
                    // min(dt·finc, dtmax): the branch is taken on values, the chosen expression is differentiated.
                    let grown = s.dt * h["finc"]!
                    s.dt = grown.scalar <= h["dtmax"]!.scalar ? grown : h["dtmax"]!
                    s.a = s.a * h["fa"]!
                }
                s.downhillSteps += 1
            } else {
                v = vel * 0
                s.a = h["astart"]!
                s.dt = s.dt * h["fdec"]!
                s.downhillSteps = 0
            }
        } else {
            v = Variable(constant: Tensor.zeros(s.positions.shape))
            s.started = true
        }
        v = v + f * s.dt
        var dr = v * s.dt
        let normdr = (dr * dr).sum().sqrt()
        if normdr.scalar > h["maxstep"]!.scalar {
            dr = dr * h["maxstep"]! / normdr
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
    public var hyperparameters = OrderedDictionary<Double>()

    public init(eta: Double = 0.01, maxstep: Double = 0) {
        hyperparameters["eta"] = eta
        hyperparameters["maxstep"] = maxstep
    }

    public struct State: RelaxerState {
        public var positions: Variable
        public var energy: Variable?
        public var forces: Variable?
        public var tensors: [Variable] {
            get { [positions] }
            set { positions = newValue[0] }
        }
    }

    public func start(positions: Variable, hyper: [String: Variable], evaluate: ForceFunction) -> State {
        State(positions: positions)
    }

    public func step(_ s: State, hyper h: [String: Variable], evaluate: ForceFunction) -> State {
        var s = s
        let f: Variable
        if let cached = s.forces { f = cached } else { (s.energy, f) = evaluate(s.positions); s.forces = f }
        var dr = f * h["eta"]!
        let maxstep = h["maxstep"]!
        if maxstep.scalar > 0 {
            dr = clampLongestStep(dr, maxstep: maxstep)
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
