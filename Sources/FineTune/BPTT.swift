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

    public var description: String {
        switch self {
        case .full: return "full"
        case .checkpoint(let k): return k.map { "checkpoint:\($0)" } ?? "checkpoint"
        case .truncated(let k): return "truncated:\(k)"
        case .implicit: return "implicit"
        }
    }

    public struct ParseError: Error, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }

    public static func parse(_ s: String) throws -> GradientMode {
        let parts = s.split(separator: ":").map(String.init)
        switch parts[0] {
        case "full" where parts.count == 1: return .full
        case "implicit" where parts.count == 1: return .implicit
        case "checkpoint":
            if parts.count == 1 { return .checkpoint(every: nil) }
            guard parts.count == 2, let k = Int(parts[1]), k > 0 else { throw ParseError(message: "checkpoint:K needs a positive integer K, got '\(s)'") }
            return .checkpoint(every: k)
        case "truncated":
            guard parts.count == 2, let k = Int(parts[1]), k > 0 else { throw ParseError(message: "truncated:K needs a positive integer K, got '\(s)'") }
            return .truncated(last: k)
        default:
            throw ParseError(message: "unknown gradient mode '\(s)' (full, checkpoint[:K], truncated:K, implicit)")
        }
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
    /// Where the example was read ("train.xyz: frame 3"), for messages; nil for examples built in code.
    public var source: String?

    /// How messages name the example: its source and name.
    public var displayName: String { source.map { "\($0) (\(name))" } ?? name }

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

/// Settings of a differentiable relaxation.
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
    public var gradients: [String: Tensor]
    public var hyperGradients: [String: Double]
    public var finalPositions: Tensor
    public var steps: Int
    /// fmax at the final positions when known (from the last force evaluation).
    public var fmax: Double?
    public var tapeNodes: Int
    public var cgIterations: Int = 0
}

/// Mass-weighted ΔQ of the relaxed structure against the example's target, and its gradient with respect
/// to the potential's parameters and the trainable relaxer hyperparameters.
public func relaxationLossAndGradient(_ example: RelaxationExample, potential: any Potential, parameters: [String: Tensor],
                                      hyper: [String: Double], settings: BPTTSettings) -> BPTTResult {
    func open<R: Relaxer>(_ r: R) -> BPTTResult {
        if settings.mode == .implicit {
            return implicitGradient(example, potential: potential, parameters: parameters, relaxer: r, hyper: hyper, settings: settings)
        }
        return unrolledGradient(example, potential: potential, parameters: parameters, relaxer: r, hyper: hyper, settings: settings)
    }
    return open(settings.relaxer)
}

/// Holds what a checkpointed segment's first (forward) execution decided, so its recomputation in the
/// backward pass replays exactly the same steps.
final class SegmentRecord<S> {
    var state: S?
    var evaluator: ForceEvaluator?
    var steps: Int?
    var stopped = false
}

func unrolledGradient<R: Relaxer>(_ example: RelaxationExample, potential: any Potential, parameters: [String: Tensor],
                                  relaxer: R, hyper: [String: Double], settings: BPTTSettings) -> BPTTResult {
    let tape = Tape()
    defer { tape.reset() }
    let paramNames = parameters.keys.sorted()
    let hyperNames = hyper.keys.sorted()
    var paramLeaves: [String: Variable] = [:]
    for k in paramNames { paramLeaves[k] = tape.variable(parameters[k]!) }
    var hyperVars: [String: Variable] = [:]
    for k in hyperNames { hyperVars[k] = settings.trainableHyper.contains(k) ? tape.variable(hyper[k]!) : Variable(constant: hyper[k]!) }
    var evaluator = ForceEvaluator(potential: potential, structure: example.initial, skin: settings.skin)
    let T = settings.steps
    let stop = settings.stopFmax
    var lastFmax: Double? = nil

    // Truncated mode: the first T − K steps on values, the rest recorded.
    var recordedFrom = 0
    if case .truncated(let k) = settings.mode { recordedFrom = Swift.max(0, T - k) }
    let constParams = paramLeaves.mapValues { $0.detached }
    let constHyper = hyperVars.mapValues { $0.detached }
    var stepsDone = 0
    var stopped = false

    let x0 = Variable(constant: example.initial.positions)
    var state = relaxer.start(positions: x0, hyper: recordedFrom > 0 ? constHyper : hyperVars) { x in
        evaluator.evaluate(positions: x, parameters: recordedFrom > 0 ? constParams : paramLeaves)
    }
    func ensureForces(_ s: inout R.State, _ ev: inout ForceEvaluator, _ p: [String: Variable]) {
        if s.forces == nil {
            let (e, f) = ev.evaluate(positions: s.positions, parameters: p)
            s.energy = e
            s.forces = f
        }
    }
    // Unrecorded prefix.
    while stepsDone < recordedFrom && !stopped {
        if let stopF = stop {
            ensureForces(&state, &evaluator, constParams)
            lastFmax = maxRowNorm(state.forces!.value)
            if lastFmax! < stopF { stopped = true; break }
        }
        state = relaxer.step(state, hyper: constHyper) { x in evaluator.evaluate(positions: x, parameters: constParams) }
        stepsDone += 1
    }
    if recordedFrom > 0 {
        // Restart recording from the values reached.
        state.tensors = state.tensors.map { $0.detached }
        state.energy = nil
        // Cached forces must be recomputed on the tape (states that carry forces keep them in `tensors`,
        // and ignore this).
        state.forces = nil
    }

    var segment: Int? = nil
    if case .checkpoint(let k) = settings.mode { segment = k ?? Int(Double(T).squareRoot().rounded(.up)) }
    if let k = segment {
        while stepsDone < T && !stopped {
            let n = Swift.min(k, T - stepsDone)
            // Only constants may be captured by the segment body: tracked inputs go through `inputs`.
            var template = state
            template.tensors = template.tensors.map { $0.detached }
            template.energy = nil
            let startEvaluator = evaluator
            let record = SegmentRecord<R.State>()
            let nT = template.tensors.count
            let inputs = state.tensors + paramNames.map { paramLeaves[$0]! } + hyperNames.map { hyperVars[$0]! }
            let outs = tape.checkpoint(inputs) { vars in
                var s = template
                s.tensors = Array(vars[0..<nT])
                var p: [String: Variable] = [:], h: [String: Variable] = [:]
                for (i, name) in paramNames.enumerated() { p[name] = vars[nT + i] }
                for (i, name) in hyperNames.enumerated() { h[name] = vars[nT + paramNames.count + i] }
                var ev = startEvaluator
                var done = 0
                var stoppedHere = false
                let limit = record.steps ?? n
                while done < limit {
                    if stop != nil {
                        ensureForces(&s, &ev, p)
                        if record.steps == nil, maxRowNorm(s.forces!.value) < stop! { stoppedHere = true; break }
                    }
                    s = relaxer.step(s, hyper: h) { x in ev.evaluate(positions: x, parameters: p) }
                    done += 1
                }
                if record.steps == nil {
                    record.steps = done
                    record.stopped = stoppedHere
                    record.evaluator = ev
                    var kept = s
                    kept.tensors = kept.tensors.map { $0.detached }
                    kept.energy = nil
                    record.state = kept
                }
                return s.tensors
            }
            state = record.state!
            state.tensors = outs
            state.energy = nil
            state.forces = nil
            evaluator = record.evaluator!
            stepsDone += record.steps!
            stopped = record.stopped
        }
    } else {
        while stepsDone < T && !stopped {
            if let stopF = stop {
                ensureForces(&state, &evaluator, paramLeaves)
                lastFmax = maxRowNorm(state.forces!.value)
                if lastFmax! < stopF { stopped = true; break }
            }
            state = relaxer.step(state, hyper: hyperVars) { x in evaluator.evaluate(positions: x, parameters: paramLeaves) }
            stepsDone += 1
        }
    }
    let s = example.initial
    var loss = StructureLoss.deltaQ(state.positions, target: example.target, masses: s.masses, cell: s.cell, pbc: s.pbc)
    if settings.energyWeight > 0, let eRef = example.targetEnergy {
        // Energy term w·|E(x_T) − E_ref|/N (eV/atom): meaningful when the reference energies share the
        // model's energy zero (e.g. the model was pretrained on the same DFT code).
        let (e, _) = evaluator.evaluate(positions: state.positions, parameters: paramLeaves)
        loss = loss + ((e - eRef) * (1 / Double(s.count))).abs() * settings.energyWeight
    }
    let trainable = hyperNames.filter { settings.trainableHyper.contains($0) }
    let wrt = paramNames.map { paramLeaves[$0]! } + trainable.map { hyperVars[$0]! }
    let nodes = tape.nodeCount
    let g = tape.gradient(of: loss, wrt: wrt)
    var grads: [String: Tensor] = [:], hgrads: [String: Double] = [:]
    for (i, name) in paramNames.enumerated() { grads[name] = g[i].value }
    for (i, name) in trainable.enumerated() { hgrads[name] = g[paramNames.count + i].scalar }
    if let f = state.forces { lastFmax = maxRowNorm(f.value) }
    return BPTTResult(loss: loss.scalar, gradients: grads, hyperGradients: hgrads, finalPositions: state.positions.value,
                      steps: stepsDone, fmax: lastFmax, tapeNodes: nodes)
}

/// Implicit gradient at the converged minimum (see `GradientMode.implicit`). Rigid translations make the
/// Hessian singular under periodic boundary conditions; they are projected out of the right-hand side and
/// of every CG iterate (and fixed atoms are removed from the system).
func implicitGradient<R: Relaxer>(_ example: RelaxationExample, potential: any Potential, parameters: [String: Tensor],
                                  relaxer: R, hyper: [String: Double], settings: BPTTSettings) -> BPTTResult {
    var pot = potential
    for (k, v) in parameters { pot.parameters[k] = v }
    var rs = RelaxationSettings()
    rs.fmax = settings.implicitFmax
    rs.maxSteps = settings.implicitMaxSteps
    rs.skin = settings.skin
    var r = relaxer
    for (k, v) in hyper { r.hyperparameters[k] = v }
    let relaxed = relax(example.initial, potential: pot, relaxer: r, settings: rs)
    let xStar = relaxed.structure.positions
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
    let paramNames = parameters.keys.sorted()
    var paramLeaves: [String: Variable] = [:]
    for k in paramNames { paramLeaves[k] = tape.variable(parameters[k]!) }
    let system = AtomicSystem(structures: [s], lists: [NeighborList.build(positions: xStar, cell: s.cell, pbc: s.pbc, cutoff: pot.cutoff + settings.skin)])
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
    let (v, iterations) = conjugateGradient(hvp, rhs, tolerance: settings.cgTolerance, maxIterations: 10 * rhs.count)
    // ∂L/∂θ = v·∂F/∂θ = −∂(∇E·v)/∂θ.
    let contracted = (gradE * Variable(constant: v)).sum()
    let g = tape.gradient(of: contracted, wrt: paramNames.map { paramLeaves[$0]! })
    var grads: [String: Tensor] = [:]
    for (i, name) in paramNames.enumerated() { grads[name] = -g[i].value }
    return BPTTResult(loss: loss.scalar, gradients: grads, hyperGradients: [:], finalPositions: xStar, steps: relaxed.steps,
                      fmax: relaxed.fmax, tapeNodes: tape.nodeCount, cgIterations: iterations)
}

/// Conjugate gradients for a symmetric positive (semi-)definite operator on the range of the projector.
func conjugateGradient(_ apply: (Tensor) -> Tensor, _ b: Tensor, tolerance: Double, maxIterations: Int) -> (Tensor, Int) {
    var x = Tensor.zeros(b.shape)
    var r = b, p = b
    var rr = r.dot(r)
    let stop = tolerance * tolerance * Swift.max(rr, 1e-300)
    var k = 0
    while k < maxIterations && rr > stop {
        let ap = apply(p)
        let pap = p.dot(ap)
        guard pap > 0 else { break }
        let alpha = rr / pap
        x.addScaled(p, alpha)
        r.addScaled(ap, -alpha)
        let rr2 = r.dot(r)
        p = r + p * (rr2 / rr)
        rr = rr2
        k += 1
    }
    return (x, k)
}
