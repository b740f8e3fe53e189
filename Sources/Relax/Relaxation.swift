import Foundation
import Atoms
import Potentials
import Tape

/// Settings common to every relaxation run.
public struct RelaxationSettings: Sendable {
    /// Converged when the largest per-atom force (for cell relaxation: generalised force) is below fmax.
    public var fmax: Double = 0.05
    public var maxSteps: Int = 500
    public var relaxCell = false
    /// External pressure for cell relaxation (eV/Å³).
    public var pressure: Double = 0
    /// Verlet skin of the neighbour list (Å).
    public var skin: Double = 0.5
    public init() {}
}

/// One logged step of a relaxation (ASE's log line: step, energy, fmax).
public struct RelaxationStep {
    public let step: Int
    /// Energy (plus pV for cell relaxation), eV.
    public let energy: Double
    public let fmax: Double
    public let positions: Tensor
    public let cell: Tensor
    public let forces: Tensor
}

public struct RelaxationResult: Sendable {
    /// Final structure with `energy`, `forces` (and `stress` for cell relaxation) set; other calculator results
    /// the input carried are removed.
    public var structure: Structure
    public var converged: Bool
    public var steps: Int
    public var initialEnergy: Double
    public var finalEnergy: Double
    public var fmax: Double
    /// Largest per-atom displacement from the start (minimum image), Å.
    public var maxDisplacement: Double
    public var forceCalls: Int
    public var seconds: Double
}

/// Relaxes `structure` with `relaxer` (values only, nothing recorded), calling `onStep` for the initial
/// structure and after every step, as ASE's `irun` logs them.
public func relax<R: Relaxer>(_ structure: Structure, potential: any Potential, relaxer: R, settings: RelaxationSettings,
                              onStep: (RelaxationStep) -> Void = { _ in }) -> RelaxationResult {
    let t0 = Date()
    var evaluator = ForceEvaluator(potential: potential, structure: structure, skin: settings.skin)
    let params = potential.constantParameters
    let hyper = relaxer.constantHyper
    let filter = settings.relaxCell ? FrechetCellFilter(cell: structure.cell, atomCount: structure.count, pressure: settings.pressure) : nil
    var lastStress: Tensor? = nil
    var lastAtomForces = Tensor.zeros([structure.count, 3])
    var lastAtomEnergy = 0.0
    var current = (positions: structure.positions, cell: structure.cell)

    let evaluate: ForceFunction = { x in
        if let filter {
            let (pos, cell) = filter.atoms(from: x.value)
            current = (pos, cell)
            let ev = evaluator.evaluateWithStress(positions: pos, cell: cell)
            let stress = ev.stresses!.reshaped([3, 3])
            lastStress = stress
            lastAtomForces = ev.forces
            lastAtomEnergy = ev.energy
            let g = filter.generalizedForces(forces: ev.forces, stress: stress, cell: cell)
            return (Variable(constant: ev.energy + settings.pressure * Swift.abs(cell.determinant3x3)), Variable(constant: g))
        }
        current = (x.value, structure.cell)
        let (e, f) = evaluator.evaluate(positions: x, parameters: params)
        lastAtomForces = f.value
        lastAtomEnergy = e.scalar
        return (e, f)
    }

    let x0 = filter?.generalized(positions: structure.positions, cell: structure.cell) ?? structure.positions
    var state = relaxer.start(positions: Variable(constant: x0), hyper: hyper, evaluate: evaluate)
    var initialEnergy = 0.0
    var fmax = Double.infinity
    let outcome = unroll(relaxer, state: &state, hyper: hyper,
                         control: UnrollControl(maxSteps: settings.maxSteps, stopFmax: settings.fmax, checkEveryState: true, checkFinalState: true),
                         evaluate: evaluate) { s, step, m in
        let energy = s.energy?.scalar ?? .nan
        if step == 0 { initialEnergy = energy }
        fmax = m
        onStep(RelaxationStep(step: step, energy: energy, fmax: m, positions: current.positions, cell: current.cell, forces: lastAtomForces))
    }
    var final = structure
    final.removeCalculatorResults()  // the input's results (say, a stress) belong to the initial geometry
    final.positions = current.positions
    final.cell = current.cell
    final.energy = lastAtomEnergy
    final.forces = lastAtomForces
    if let s = lastStress { final.stress = s }
    let disp = Structure.minimumImage(current.positions - structure.positions, cell: structure.cell, pbc: structure.pbc)
    return RelaxationResult(structure: final, converged: outcome.stopped, steps: outcome.steps, initialEnergy: initialEnergy,
                            finalEnergy: state.energy!.scalar, fmax: fmax, maxDisplacement: maxRowNorm(disp),
                            forceCalls: evaluator.evaluations, seconds: Date().timeIntervalSince(t0))
}
