import Atoms
import Potentials
import Tape

/// Energy and forces at given positions (forces already zeroed on fixed atoms).
public typealias ForceFunction = (Variable) -> (energy: Variable, forces: Variable)

/// State of a relaxer. The differentiable part is a fixed-order list of Variables (`tensors`), so that a
/// segment of steps can be checkpointed by storing only those; discrete bookkeeping (step counters, flags)
/// lives in plain stored properties and is copied with the value.
public protocol RelaxerState {
    /// Positions (generalised coordinates for cell relaxation), shape [N, 3].
    var positions: Variable { get }
    var tensors: [Variable] { get set }
    /// Energy and forces at `positions`, when already evaluated.
    var energy: Variable? { get set }
    var forces: Variable? { get set }
}

/// An optimizer in init/apply style (as JAX-MD's minimizers): `start` builds the state, `step` advances
/// it by one iteration. The same code runs on constants (fast, nothing recorded) or on tracked variables
/// (recorded on the tape for backpropagation through the relaxation). Decisions that depend on values —
/// branches, resets, the stopping rule — are taken on values and not differentiated; the arithmetic in
/// every branch, including max-step clamps, is.
public protocol Relaxer: Sendable {
    associatedtype State: RelaxerState
    /// Name as used on the command line (fire, fire-jaxmd, bfgs, lbfgs, frame).
    var name: String { get }
    /// Continuous hyperparameters that can be trained (by name, with their values).
    var hyperparameters: OrderedDictionary<Double> { get set }
    func start(positions: Variable, hyper: [String: Variable], evaluate: ForceFunction) -> State
    func step(_ state: State, hyper: [String: Variable], evaluate: ForceFunction) -> State
}

extension Relaxer {
    /// Hyperparameters as constants.
    public var constantHyper: [String: Variable] {
        var d: [String: Variable] = [:]
        for (k, v) in hyperparameters { d[k] = Variable(constant: v) }
        return d
    }
}

/// Largest per-atom norm of a [N, 3] tensor (ASE's fmax for forces); NaN when any entry is NaN (so that a
/// non-finite force can never pass for a small one).
public func maxRowNorm(_ t: Tensor) -> Double {
    t.withUnsafeBufferPointer { p in
        var m = 0.0
        var nan = false
        var i = 0
        while i + 2 < p.count {
            let r = p[i] * p[i] + p[i + 1] * p[i + 1] + p[i + 2] * p[i + 2]
            if r > m { m = r } else if r.isNaN { nan = true }
            i += 3
        }
        return nan ? .nan : m.squareRoot()
    }
}

/// Evaluates a potential for one structure during a relaxation: keeps a Verlet neighbour list (rebuilt
/// when an atom has moved more than skin/2) and zeroes forces on fixed atoms, as ASE's FixAtoms does.
public struct ForceEvaluator: Sendable {
    public let potential: any Potential
    public let structure: Structure
    public var skin: Double
    public private(set) var neighbors: VerletNeighborList
    public private(set) var evaluations = 0
    private var system: AtomicSystem
    private let freeMask: Tensor?

    public init(potential: any Potential, structure: Structure, skin: Double = 0.5) {
        self.potential = potential
        self.structure = structure
        self.skin = skin
        // A structure the list cannot be built for is not evaluated: the first evaluation reports the problem.
        let buildable = (try? NeighborList.validate(structure, cutoff: potential.cutoff + skin, name: "the structure",
                                                    extraBytesPerPair: potential.bytesPerPair)) != nil
        neighbors = buildable ? VerletNeighborList(structure, cutoff: potential.cutoff, skin: skin)
            : VerletNeighborList(unbuiltFor: structure.positions, cell: structure.cell, pbc: structure.pbc, cutoff: potential.cutoff, skin: skin)
        system = AtomicSystem(structures: [structure], lists: [neighbors.list])
        freeMask = (structure.fixed?.contains(true) ?? false) ? structure.freeMask : nil
    }

    public var neighborListBuilds: Int { neighbors.builds }

    /// Why the last evaluation was not done (positions or a cell that cannot be binned, a neighbour list beyond
    /// memory); its energy and forces were then NaN. Nil after a normal evaluation.
    public private(set) var problem: String?

    /// Checks positions and cell before the potential sees them (O(N)): a non-finite or absurdly large
    /// coordinate, or a list that would not fit in memory, is not evaluated (`problem` says why). Otherwise
    /// rebuilds the neighbour list when atoms moved enough, and returns true.
    private mutating func prepare(_ positions: Tensor, _ cell: Tensor) -> Bool {
        problem = NeighborList.problem(positions: positions, cell: cell, pbc: structure.pbc, cutoff: neighbors.cutoff + neighbors.skin)
        guard problem == nil else { return false }
        guard neighbors.needsRebuild(positions: positions, cell: cell) else { return true }
        do {
            try NeighborList.validate(positions: positions, cell: cell, pbc: structure.pbc, cutoff: neighbors.cutoff + neighbors.skin,
                                      name: "the structure", extraBytesPerPair: potential.bytesPerPair)
        } catch {
            problem = "\(error)"
            return false
        }
        neighbors.update(positions: positions, cell: cell)
        system = AtomicSystem(structures: [structure], lists: [neighbors.list])
        return true
    }

    /// Energy and forces at `positions` with the structure's cell; parameters as given (tracked for
    /// training, constants otherwise). NaN (see `problem`) for positions that cannot be evaluated.
    public mutating func evaluate(positions: Variable, cell: Variable? = nil, parameters: [String: Variable]) -> (energy: Variable, forces: Variable) {
        let c = cell ?? Variable(constant: structure.cell)
        guard prepare(positions.value, c.value) else {
            return (Variable(constant: Tensor(scalar: .nan)), Variable(constant: Self.nan(positions.value.shape)))
        }
        evaluations += 1
        var (e, f) = potential.energyAndForces(system, positions: positions, cells: c.reshaped([1, 3, 3]), parameters: parameters)
        if let m = freeMask { f = f * m }
        return (e.reshaped([]), f)
    }

    /// Energy, forces and stress (values) at `positions` and `cell` (NaN, see `problem`, when they cannot be evaluated).
    public mutating func evaluateWithStress(positions: Tensor, cell: Tensor) -> Evaluation {
        guard prepare(positions, cell) else {
            return Evaluation(energies: Tensor(shape: [1], [.nan]), forces: Self.nan(positions.shape), stresses: Self.nan([1, 3, 3]))
        }
        evaluations += 1
        var ev = potential.evaluate(system, positions: positions, cells: cell.reshaped([1, 3, 3]), stress: true)
        if let m = freeMask { ev.forces = ev.forces * m }
        return ev
    }

    static func nan(_ shape: [Int]) -> Tensor { Tensor(shape: shape, [Double](repeating: .nan, count: shape.reduce(1, *))) }
}

/// Why a relaxation stopped before converging or running out of steps: a non-finite energy, force, position
/// or cell, or positions the potential cannot be evaluated at. Never "converged".
public struct RelaxationFailure: Error, Sendable, Equatable, CustomStringConvertible {
    /// The step whose state failed (0: the input structure itself).
    public var step: Int
    public var reason: String

    public init(step: Int, reason: String) {
        self.step = step
        self.reason = reason
    }

    public var description: String { "step \(step): \(reason)" }

    /// The check every relaxation loop runs once per step, on the state it is about to log or continue from
    /// (O(N)): energy, forces, positions and cell finite, plus the force evaluator's `problem`, if any. Loops
    /// that unroll a relaxation (values or recorded on a tape) call it after each force evaluation and stop
    /// at the first failure, keeping the last state that passed.
    public static func check(step: Int, energy: Double, forces: Tensor, positions: Tensor, cell: Tensor? = nil,
                             evaluatorProblem: String? = nil) -> RelaxationFailure? {
        if let p = evaluatorProblem { return RelaxationFailure(step: step, reason: p) }
        func firstBad(_ t: Tensor) -> Int? {
            t.withUnsafeBufferPointer { p in
                for i in 0..<p.count where !p[i].isFinite { return i }
                return nil
            }
        }
        if let i = firstBad(positions) { return RelaxationFailure(step: step, reason: "atom \(i / 3 + 1) has a non-finite position") }
        if let c = cell, firstBad(c) != nil { return RelaxationFailure(step: step, reason: "the cell became non-finite") }
        if !energy.isFinite { return RelaxationFailure(step: step, reason: "the energy is \(energy)") }
        if let i = firstBad(forces) { return RelaxationFailure(step: step, reason: "the force on atom \(i / 3 + 1) is \(forces.array[i])") }
        return nil
    }
}
