import Atoms
import Foundation
import Loss
import Potentials
import Relax
import Tape

/// How the gradient of a final-structure loss flows back through the relaxation.
public enum GradientMode: Equatable, Sendable, CustomStringConvertible, Codable {
    /// Record every step (memory grows with T).
    case full
    /// Store the relaxer state every k steps (default ⌈√T⌉) and recompute each segment in the backward
    /// pass: memory ~ √T, gradients bit-identical to `full`.
    case checkpoint(every: Int?)
    /// Differentiate only the last K steps (the first T − K run on values).
    case truncated(last: Int)
    /// Implicit differentiation at the converged minimum x* (F(x*, θ) = 0): solve H v = ∂L/∂x* by conjugate
    /// gradients with Hessian-vector products, then ∂L/∂θ = v·∂F/∂θ. Memory independent of T; relaxer
    /// hyperparameters get no gradient (the fixed point does not depend on them).
    case implicit
    /// Guided: a recorded window of the first K relaxer steps, then the same relaxation continued unrecorded to
    /// the minimum, with the loss
    ///
    ///     L(θ) = w·ΔQ(x_K(θ)) + (1 − w)·ΔQ(x*(θ)),   x_K = Φ^K(x_0; θ),   x* = lim Φ^n(x_K; θ), F(x*, θ) = 0,
    ///
    /// where Φ is one relaxer step and w the window weight. The first term is backpropagated through the window
    /// (checkpointed, bit-identical to recording it); the second is differentiated at the fixed point as in
    /// `implicit`. Inside a basin an isolated minimum attracts a neighbourhood of x_K, so ∂x*/∂x_K = 0 and
    /// dx*/dθ = −H⁻¹ ∂F/∂θ is the whole derivative: the sum is the exact gradient of L when the relaxation
    /// converges. The window term steers the early trajectory, and so the basin, which the fixed point alone
    /// cannot see. Memory: the window (∝ √K checkpointed) or one force graph at x*, whichever is larger.
    /// A short unrolled guidance window followed by an implicit phase is the idea of G-DEQ (Zhang, Dramko and
    /// Kyrillidis, 2026); its exact formulation is not public, this one is ours.
    case guided(window: Int, weight: Double)

    /// The window weight when `guided:K` gives none.
    public static let defaultGuidedWeight = 0.5

    /// The command-line form: full, checkpoint[:K], truncated:K, implicit, guided:K:W.
    public var description: String {
        switch self {
        case .full: return "full"
        case .checkpoint(let k): return k.map { "checkpoint:\($0)" } ?? "checkpoint"
        case .truncated(let k): return "truncated:\(k)"
        case .implicit: return "implicit"
        case .guided(let k, let w): return "guided:\(k):\(w)"
        }
    }

    /// Whether the mode relaxes to a minimum and differentiates there (implicit, guided) rather than
    /// differentiating the structure after T steps.
    public var differentiatesMinimum: Bool {
        switch self {
        case .implicit, .guided: return true
        default: return false
        }
    }

    public struct ParseError: Error, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }

    public static func parse(_ s: String) throws -> GradientMode {
        let parts = s.split(separator: ":").map(String.init)
        switch parts.first ?? "" {
        case "full" where parts.count == 1: return .full
        case "implicit" where parts.count == 1: return .implicit
        case "checkpoint":
            if parts.count == 1 { return .checkpoint(every: nil) }
            guard parts.count == 2, let k = Int(parts[1]), k > 0 else { throw ParseError(message: "checkpoint:K needs a positive integer K, got '\(s)'") }
            return .checkpoint(every: k)
        case "truncated":
            guard parts.count == 2, let k = Int(parts[1]), k > 0 else { throw ParseError(message: "truncated:K needs a positive integer K, got '\(s)'") }
            return .truncated(last: k)
        case "guided":
            guard (2...3).contains(parts.count), let k = Int(parts[1]), k > 0 else {
                throw ParseError(message: "guided:K[:W] needs a positive integer window K (and a weight 0 ≤ W ≤ 1), got '\(s)'")
            }
            let w = parts.count == 3 ? Double(parts[2]) : defaultGuidedWeight
            guard let w, w.isFinite, (0...1).contains(w) else { throw ParseError(message: "guided:K:W needs a window weight 0 ≤ W ≤ 1, got '\(s)'") }
            return .guided(window: k, weight: w)
        default:
            throw ParseError(message: "unknown gradient mode '\(s)' (full, checkpoint[:K], truncated:K, implicit, guided:K[:W])")
        }
    }

    /// Stored as its command-line form (config.json: "gradient": "checkpoint:6").
    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        let s = try c.decode(String.self)
        do { self = try GradientMode.parse(s) } catch let e as ParseError {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: e.message)
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}

/// One training example: the initial structure and the reference (DFT-)relaxed positions.
public struct RelaxationExample: Sendable {
    public var name: String
    public var initial: Structure
    public var target: Tensor
    public var targetEnergy: Double?
    /// Reference energy of the initial structure (eV), when known: with `targetEnergy` it gives the reference
    /// relaxation energy, which (unlike absolute energies) compares across DFT codes and pseudopotentials.
    public var initialEnergy: Double?
    /// A label for grouping results, e.g. the defect kind.
    public var group: String?

    public init(name: String, initial: Structure, target: Tensor, targetEnergy: Double? = nil, initialEnergy: Double? = nil, group: String? = nil) {
        precondition(target.shape == initial.positions.shape, "target positions must have shape \(initial.positions.shape)")
        self.name = name
        self.initial = initial
        self.target = target
        self.targetEnergy = targetEnergy
        self.initialEnergy = initialEnergy
        self.group = group
    }
}

/// Settings of a differentiable relaxation. The relaxer carries its hyperparameters, the potential (given
/// beside the settings) its parameters.
public struct BPTTSettings: Sendable {
    public var relaxer: any Relaxer
    /// Number of relaxation steps T (the unroll length).
    public var steps: Int
    public var mode: GradientMode = .checkpoint(every: nil)
    /// Stop early when fmax falls below this (decided on values, not differentiated); nil runs all T steps.
    public var stopFmax: Double? = nil
    /// Relaxer hyperparameters to differentiate (and train).
    public var trainableHyper: [String] = []
    public var skin: Double = 0.5
    /// Implicit mode: relaxation converged to this fmax before differentiating, and CG tolerance.
    public var implicitFmax: Double = 1e-6
    public var implicitMaxSteps: Int = 5000
    public var cgTolerance: Double = 1e-10
    /// Weight of the per-atom energy error at the final structure (0: ΔQ only; unrolled modes only).
    public var energyWeight: Double = 0

    public init(relaxer: any Relaxer, steps: Int) {
        self.relaxer = relaxer
        self.steps = steps
    }
}

/// Loss, gradients and diagnostics of one example.
public struct BPTTResult: Sendable {
    public var loss: Double
    /// ∂L/∂θ for every parameter of the potential.
    public var gradients: [String: Tensor]
    /// ∂L/∂h for the trainable relaxer hyperparameters.
    public var hyperGradients: [String: Double]
    public var finalPositions: Tensor
    public var steps: Int
    /// fmax at the final positions when known (from the last force evaluation).
    public var fmax: Double?
    public var tapeNodes: Int
    public var cgIterations: Int = 0
    /// Implicit and guided modes: why the implicit-function-theorem term was left out of `gradients` (nil when it
    /// is in). It holds only at a minimum: a relaxation that stopped short of `implicitFmax`, or a Hessian on
    /// which conjugate gradients fail (negative curvature: a saddle point; or no convergence), gives no gradient
    /// rather than a wrong one.
    public var fixedPointFailure: String? = nil
}

/// Mass-weighted ΔQ of the relaxed structure against the example's target, and its gradient with respect
/// to the potential's parameters (their values are the potential's) and the trainable relaxer
/// hyperparameters (their values are the relaxer's).
public func relaxationLossAndGradient(_ example: RelaxationExample, potential: any Potential, settings: BPTTSettings) -> BPTTResult {
    func open<R: Relaxer>(_ r: R) -> BPTTResult {
        switch settings.mode {
        case .implicit: return implicitGradient(example, potential: potential, relaxer: r, settings: settings)
        case .guided(let k, let w): return guidedGradient(example, potential: potential, relaxer: r, settings: settings, window: k, weight: w)
        default: return unrolledGradient(example, potential: potential, relaxer: r, settings: settings)
        }
    }
    return open(settings.relaxer)
}

/// The tape leaves of one differentiable relaxation: potential parameters (all tracked) and relaxer
/// hyperparameters (tracked when trainable), in a fixed order so that checkpointed segments can pass them
/// as inputs and rebuild them.
struct RelaxationLeaves<R: Relaxer> {
    let parameterNames: [String]
    var parameters: [String: Variable]
    var hyper: R.Inputs
    /// The hyperparameter variables in field order.
    var hyperList: [Variable]
    let trainableHyper: [(index: Int, name: String)]

    init(tape: Tape, potential: any Potential, relaxer: R, trainable: [String]) {
        parameterNames = potential.parameters.keys.sorted()
        var p: [String: Variable] = [:]
        for k in parameterNames { p[k] = tape.variable(potential.parameters[k]!) }
        parameters = p
        var list: [Variable] = [], train: [(Int, String)] = []
        hyper = relaxer.inputs { name, v in
            let x = trainable.contains(name) ? tape.variable(v) : Variable(constant: v)
            if trainable.contains(name) { train.append((list.count, name)) }
            list.append(x)
            return x
        }
        hyperList = list
        trainableHyper = train
    }

    /// All leaves as one list: parameters (sorted by name), then hyperparameters (field order).
    var all: [Variable] { parameterNames.map { parameters[$0]! } + hyperList }

    /// Leaves rebuilt from `vars` laid out as `all`.
    func rebuilt(from vars: ArraySlice<Variable>, relaxer: R) -> (parameters: [String: Variable], hyper: R.Inputs) {
        var p: [String: Variable] = [:]
        var k = vars.startIndex
        for name in parameterNames { p[name] = vars[k]; k += 1 }
        let h = relaxer.inputs { _, _ in defer { k += 1 }; return vars[k] }
        return (p, h)
    }

    func detached(relaxer: R) -> (parameters: [String: Variable], hyper: R.Inputs) {
        rebuilt(from: ArraySlice(all.map(\.detached)), relaxer: relaxer)
    }
}

/// Holds what a checkpointed segment's first (forward) execution decided, so its recomputation in the
/// backward pass replays exactly the same steps.
final class SegmentRecord<S> {
    var state: S?
    var evaluator: ForceEvaluator?
    var steps: Int?
    var stopped = false
}

/// The state with its tensors detached (constants) and no cached energy; `dropForces` also forgets the
/// cached forces (states that keep forces in `tensors` ignore that).
func detachedState<S: RelaxerState>(_ s: S, dropForces: Bool) -> S {
    var out = s
    out.tensors = out.tensors.map(\.detached)
    out.energy = nil
    if dropForces { out.forces = nil }
    return out
}

/// A relaxation recorded on a tape from the example's initial structure: the state reached (its positions a
/// function of the leaves), the force evaluator there, steps taken, whether the stop rule ended it, and the
/// last fmax seen.
struct RecordedUnroll<R: Relaxer> {
    var state: R.State
    var evaluator: ForceEvaluator
    var steps: Int
    var stopped: Bool
    var fmax: Double?
}

/// Records T relaxer steps from `example.initial` as `mode` (full, checkpointed or truncated) records them.
func recordUnroll<R: Relaxer>(_ example: RelaxationExample, potential: any Potential, relaxer: R, leaves: RelaxationLeaves<R>, tape: Tape,
                              steps T: Int, mode: GradientMode, stopFmax stop: Double?, skin: Double) -> RecordedUnroll<R> {
    var evaluator = ForceEvaluator(potential: potential, structure: example.initial, skin: skin)
    var lastFmax: Double? = nil
    var stepsDone = 0
    var stopped = false

    // Truncated mode: the first T − K steps on values, the rest recorded.
    var recordedFrom = 0
    if case .truncated(let k) = mode { recordedFrom = Swift.max(0, T - k) }
    let constants = leaves.detached(relaxer: relaxer)
    let x0 = Variable(constant: example.initial.positions)
    var state = relaxer.start(positions: x0, hyper: recordedFrom > 0 ? constants.hyper : leaves.hyper) { x in
        evaluator.evaluate(positions: x, parameters: recordedFrom > 0 ? constants.parameters : leaves.parameters)
    }
    if recordedFrom > 0 {
        let prefix = unroll(relaxer, state: &state, hyper: constants.hyper, control: UnrollControl(maxSteps: recordedFrom, stopFmax: stop)) { x in
            evaluator.evaluate(positions: x, parameters: constants.parameters)
        }
        stepsDone = prefix.steps
        stopped = prefix.stopped
        lastFmax = prefix.fmax ?? lastFmax
        // Restart recording from the values reached; cached forces must be recomputed on the tape.
        state = detachedState(state, dropForces: true)
    }

    if case .checkpoint(let every) = mode {
        let k = every ?? Int(Double(T).squareRoot().rounded(.up))
        while stepsDone < T && !stopped {
            let segment = checkpointedSegment(relaxer, state: state, evaluator: evaluator, leaves: leaves, tape: tape,
                                              steps: Swift.min(k, T - stepsDone), stopFmax: stop)
            state = segment.state
            evaluator = segment.evaluator
            stepsDone += segment.steps
            stopped = segment.stopped
        }
    } else if !stopped {
        let rest = unroll(relaxer, state: &state, hyper: leaves.hyper, control: UnrollControl(maxSteps: T - stepsDone, stopFmax: stop)) { x in
            evaluator.evaluate(positions: x, parameters: leaves.parameters)
        }
        stepsDone += rest.steps
        stopped = rest.stopped
        lastFmax = rest.fmax ?? lastFmax
    }
    return RecordedUnroll(state: state, evaluator: evaluator, steps: stepsDone, stopped: stopped, fmax: lastFmax)
}

/// ∂loss/∂θ for every potential parameter and ∂loss/∂h for the trainable relaxer hyperparameters.
func leafGradients<R: Relaxer>(of loss: Variable, leaves: RelaxationLeaves<R>, tape: Tape) -> (parameters: [String: Tensor], hyper: [String: Double]) {
    let wrt = leaves.parameterNames.map { leaves.parameters[$0]! } + leaves.trainableHyper.map { leaves.hyperList[$0.index] }
    let g = tape.gradient(of: loss, wrt: wrt)
    var grads: [String: Tensor] = [:], hgrads: [String: Double] = [:]
    for (i, name) in leaves.parameterNames.enumerated() { grads[name] = g[i].value }
    for (i, h) in leaves.trainableHyper.enumerated() { hgrads[h.name] = g[leaves.parameterNames.count + i].scalar }
    return (grads, hgrads)
}

func unrolledGradient<R: Relaxer>(_ example: RelaxationExample, potential: any Potential, relaxer: R, settings: BPTTSettings) -> BPTTResult {
    let tape = Tape()
    defer { tape.reset() }
    let leaves = RelaxationLeaves(tape: tape, potential: potential, relaxer: relaxer, trainable: settings.trainableHyper)
    var run = recordUnroll(example, potential: potential, relaxer: relaxer, leaves: leaves, tape: tape, steps: settings.steps,
                           mode: settings.mode, stopFmax: settings.stopFmax, skin: settings.skin)
    let s = example.initial
    var loss = StructureLoss.deltaQ(run.state.positions, target: example.target, masses: s.masses, cell: s.cell, pbc: s.pbc)
    if settings.energyWeight > 0, let eRef = example.targetEnergy {
        // Energy term w·|E(x_T) − E_ref|/N (eV/atom): meaningful when the reference energies share the
        // model's energy zero (e.g. the model was pretrained on the same DFT code).
        let (e, _) = run.evaluator.evaluate(positions: run.state.positions, parameters: leaves.parameters)
        loss = loss + ((e - eRef) * (1 / Double(s.count))).abs() * settings.energyWeight
    }
    let nodes = tape.nodeCount
    let (grads, hgrads) = leafGradients(of: loss, leaves: leaves, tape: tape)
    var fmax = run.fmax
    if let f = run.state.forces { fmax = maxRowNorm(f.value) }
    return BPTTResult(loss: loss.scalar, gradients: grads, hyperGradients: hgrads, finalPositions: run.state.positions.value,
                      steps: run.steps, fmax: fmax, tapeNodes: nodes)
}

/// Guided mode (see `GradientMode.guided`): L = w·ΔQ(x_K) + (1 − w)·ΔQ(x*). The window is recorded (checkpointed
/// every ⌈√K⌉ steps) and backpropagated first and its tape freed; then the relaxer's state at x_K (velocities,
/// step sizes and all) continues unrecorded, through the same `unroll` loop, until fmax < `implicitFmax`, so
/// that x* is the minimum the plain relaxation from x_0 reaches; the implicit adjoint there adds
/// (1 − w)·vᵀ∂F/∂θ with H v = ∂ΔQ/∂x*. Relaxer hyperparameters get the window's gradient only (x* does not
/// depend on them). w = 1 is BPTT of the K steps (no continuation); w = 0 is implicit mode, the window run on
/// values only.
func guidedGradient<R: Relaxer>(_ example: RelaxationExample, potential: any Potential, relaxer: R, settings: BPTTSettings,
                                window K: Int, weight w: Double) -> BPTTResult {
    let s = example.initial
    let tape = Tape()
    defer { tape.reset() }
    let leaves = RelaxationLeaves(tape: tape, potential: potential, relaxer: relaxer, trainable: settings.trainableHyper)
    let window = recordUnroll(example, potential: potential, relaxer: relaxer, leaves: leaves, tape: tape, steps: K,
                              mode: .checkpoint(every: nil), stopFmax: settings.stopFmax, skin: settings.skin)
    let windowLoss = StructureLoss.deltaQ(window.state.positions, target: example.target, masses: s.masses, cell: s.cell, pbc: s.pbc)
    var grads: [String: Tensor] = [:]
    var hgrads = Dictionary(uniqueKeysWithValues: settings.trainableHyper.map { ($0, 0.0) })
    if w > 0 {
        (grads, hgrads) = leafGradients(of: windowLoss * w, leaves: leaves, tape: tape)
    }
    let windowNodes = tape.nodeCount
    if w == 1 {
        return BPTTResult(loss: windowLoss.scalar, gradients: grads, hyperGradients: hgrads, finalPositions: window.state.positions.value,
                          steps: window.steps, fmax: window.fmax, tapeNodes: windowNodes)
    }
    // Continue on values: the window's tape is no longer needed (nor anything recorded on it).
    var state = detachedState(window.state, dropForces: true)
    tape.reset()
    var evaluator = window.evaluator
    let parameters = potential.constantParameters
    let rest = unroll(relaxer, state: &state, hyper: relaxer.constantHyper,
                      control: UnrollControl(maxSteps: Swift.max(settings.implicitMaxSteps - window.steps, 0), stopFmax: settings.implicitFmax,
                                             checkFinalState: true)) { x in
        evaluator.evaluate(positions: x, parameters: parameters)
    }
    let xStar = state.positions.value
    let star = implicitAdjoint(example, potential: potential, at: xStar, settings: settings)
    // Without a minimum only the window's term is kept.
    let failure = fixedPointFailure(fmax: rest.fmax, steps: window.steps + rest.steps, cg: star.cgFailure, settings: settings)
    for (name, g) in star.gradients {
        let scaled = failure != nil ? Tensor.zeros(g.shape) : w == 0 ? g : g * (1 - w)
        grads[name] = grads[name].map { $0 + scaled } ?? scaled
    }
    return BPTTResult(loss: w * windowLoss.scalar + (1 - w) * star.loss, gradients: grads, hyperGradients: hgrads, finalPositions: xStar,
                      steps: window.steps + rest.steps, fmax: rest.fmax, tapeNodes: Swift.max(windowNodes, star.tapeNodes),
                      cgIterations: star.cgIterations, fixedPointFailure: failure)
}

/// Up to `steps` steps from `state` as one checkpointed segment: the body keeps no intermediates and is
/// recomputed in the backward pass, replaying the number of steps its first execution took.
func checkpointedSegment<R: Relaxer>(_ relaxer: R, state: R.State, evaluator: ForceEvaluator, leaves: RelaxationLeaves<R>, tape: Tape,
                                     steps n: Int, stopFmax: Double?) -> (state: R.State, evaluator: ForceEvaluator, steps: Int, stopped: Bool) {
    // Only constants may be captured by the segment body: tracked inputs go through `inputs`.
    let template = detachedState(state, dropForces: false)
    let record = SegmentRecord<R.State>()
    let nT = template.tensors.count
    let outs = tape.checkpoint(state.tensors + leaves.all) { vars in
        var s = template
        s.tensors = Array(vars[0..<nT])
        let (p, h) = leaves.rebuilt(from: vars[nT...], relaxer: relaxer)
        var ev = evaluator
        // The first execution decides when to stop; the recomputation replays as many steps.
        let control = record.steps.map { UnrollControl(maxSteps: $0) } ?? UnrollControl(maxSteps: n, stopFmax: stopFmax)
        let outcome = unroll(relaxer, state: &s, hyper: h, control: control) { x in ev.evaluate(positions: x, parameters: p) }
        if record.steps == nil {
            record.steps = outcome.steps
            record.stopped = outcome.stopped
            record.evaluator = ev
            record.state = detachedState(s, dropForces: false)
        }
        return s.tensors
    }
    var next = record.state!
    next.tensors = outs
    next.energy = nil
    next.forces = nil
    return (next, record.evaluator!, record.steps!, record.stopped)
}

/// Implicit gradient at the converged minimum (see `GradientMode.implicit`): relax to `implicitFmax` with the
/// plain relaxation, then `implicitAdjoint` there.
func implicitGradient<R: Relaxer>(_ example: RelaxationExample, potential pot: any Potential, relaxer: R, settings: BPTTSettings) -> BPTTResult {
    var rs = RelaxationSettings()
    rs.fmax = settings.implicitFmax
    rs.maxSteps = settings.implicitMaxSteps
    rs.skin = settings.skin
    let relaxed = relax(example.initial, potential: pot, relaxer: relaxer, settings: rs)
    let xStar = relaxed.structure.positions
    let star = implicitAdjoint(example, potential: pot, at: xStar, settings: settings)
    // The fixed point does not depend on the relaxer: trained hyperparameters get a zero gradient.
    let hgrads = Dictionary(uniqueKeysWithValues: settings.trainableHyper.map { ($0, 0.0) })
    let failure = fixedPointFailure(fmax: relaxed.fmax, steps: relaxed.steps, cg: star.cgFailure, settings: settings)
    return BPTTResult(loss: star.loss, gradients: failure == nil ? star.gradients : star.gradients.mapValues { Tensor.zeros($0.shape) },
                      hyperGradients: hgrads, finalPositions: xStar, steps: relaxed.steps,
                      fmax: relaxed.fmax, tapeNodes: star.tapeNodes, cgIterations: star.cgIterations, fixedPointFailure: failure)
}

/// Why x* is no minimum the implicit gradient holds at, or nil: the relaxation ended at `fmax` (not below
/// `implicitFmax`) or conjugate gradients failed.
func fixedPointFailure(fmax: Double?, steps: Int, cg: String?, settings: BPTTSettings) -> String? {
    guard let f = fmax, f < settings.implicitFmax else {
        return "the relaxation stopped at fmax \(fmax.map { String(format: "%.3g", $0) } ?? "unknown") eV/Å after \(steps) steps, not below \(settings.implicitFmax)"
    }
    return cg
}

/// ΔQ(x*) and its gradient with respect to the potential's parameters at a minimum x* of the potential
/// (F(x*, θ) = 0), by the implicit-function theorem: dx*/dθ = H⁻¹ ∂F/∂θ with H = ∇²E(x*), so
/// ∂ΔQ/∂θ = vᵀ ∂F/∂θ with H v = ∂ΔQ/∂x*, solved by conjugate gradients on Hessian-vector products of one
/// recorded force graph. Rigid translations make the Hessian singular under periodic boundary conditions; they
/// are projected out of the right-hand side and of every CG iterate (and fixed atoms are removed from the
/// system).
func implicitAdjoint(_ example: RelaxationExample, potential pot: any Potential, at xStar: Tensor, settings: BPTTSettings)
    -> (loss: Double, gradients: [String: Tensor], tapeNodes: Int, cgIterations: Int, cgFailure: String?) {
    let s = example.initial

    // ∂L/∂x*.
    let t1 = Tape()
    let xv = t1.variable(xStar)
    let loss = StructureLoss.deltaQ(xv, target: example.target, masses: s.masses, cell: s.cell, pbc: s.pbc)
    var rhs = t1.gradient(of: loss, wrt: [xv])[0].value

    // Hessian-vector products on one recorded graph of ∇E(x*).
    let tape = Tape()
    defer { tape.reset() }
    let x = tape.variable(xStar)
    let paramNames = pot.parameters.keys.sorted()
    var paramLeaves: [String: Variable] = [:]
    for k in paramNames { paramLeaves[k] = tape.variable(pot.parameters[k]!) }
    // The graph at x* (neighbour list to cutoff plus skin), as a force evaluator starting there builds it.
    var atMinimum = s
    atMinimum.positions = xStar
    var evaluator = ForceEvaluator(potential: pot, structure: atMinimum, skin: settings.skin)
    let system = evaluator.system(positions: xStar, cell: s.cell)
    let e = pot.energies(system, positions: x, cells: Variable(constant: s.cell.reshaped([1, 3, 3])), parameters: paramLeaves).sum()
    let gradE = tape.gradient(of: e, wrt: [x], createGraph: true)[0]
    let free = s.freeMask
    let project: (Tensor) -> Tensor = { v in
        var w = v * free
        if s.pbc.contains(true) && !(s.fixed?.contains(true) ?? false) {
            // Remove the uniform translation (mean displacement over atoms).
            let mean = w.sum(axes: [0], keepDims: true) * (1 / Double(s.count))
            w = w - mean
        }
        return w
    }
    let hvp: (Tensor) -> Tensor = { v in
        project(tape.vjp(of: [gradE], seeds: [Variable(constant: v)], wrt: [x])[0].value)
    }
    rhs = project(rhs)
    let (v, iterations, cgFailure) = conjugateGradient(hvp, rhs, tolerance: settings.cgTolerance, maxIterations: 10 * rhs.count)
    // ∂L/∂θ = v·∂F/∂θ = −∂(∇E·v)/∂θ.
    let contracted = (gradE * Variable(constant: v)).sum()
    let g = tape.gradient(of: contracted, wrt: paramNames.map { paramLeaves[$0]! })
    var grads: [String: Tensor] = [:]
    for (i, name) in paramNames.enumerated() { grads[name] = -g[i].value }
    return (loss.scalar, grads, tape.nodeCount, iterations, cgFailure)
}

/// Conjugate gradients for a symmetric positive (semi-)definite operator on the range of the projector; the
/// third value says why the solve failed (non-positive curvature pᵀAp ≤ 0, or the tolerance not reached), nil
/// when it converged.
func conjugateGradient(_ apply: (Tensor) -> Tensor, _ b: Tensor, tolerance: Double, maxIterations: Int) -> (Tensor, Int, String?) {
    var x = Tensor.zeros(b.shape)
    var r = b, p = b
    var rr = r.dot(r)
    let stop = tolerance * tolerance * Swift.max(rr, 1e-300)
    var k = 0
    while k < maxIterations && rr > stop {
        let ap = apply(p)
        let pap = p.dot(ap)
        guard pap > 0 else {
            return (x, k, "the Hessian has non-positive curvature along a conjugate-gradient direction (pᵀHp = \(String(format: "%.3g", pap))): not a minimum")
        }
        let alpha = rr / pap
        x.addScaled(p, alpha)
        r.addScaled(ap, -alpha)
        let rr2 = r.dot(r)
        p = r + p * (rr2 / rr)
        rr = rr2
        k += 1
    }
    guard rr <= stop else {
        return (x, k, "conjugate gradients reached relative residual \(String(format: "%.3g", (rr / Swift.max(b.dot(b), 1e-300)).squareRoot())) after \(k) iterations, not \(tolerance)")
    }
    return (x, k, nil)
}
