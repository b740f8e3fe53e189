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

/// Largest per-atom norm of a [N, 3] tensor (ASE's fmax for forces).
public func maxRowNorm(_ t: Tensor) -> Double {
    t.withUnsafeBufferPointer { p in
        var m = 0.0
        var i = 0
        while i + 2 < p.count {
            m = Swift.max(m, p[i] * p[i] + p[i + 1] * p[i + 1] + p[i + 2] * p[i + 2])
            i += 3
        }
        return m.squareRoot()
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
        neighbors = VerletNeighborList(structure, cutoff: potential.cutoff, skin: skin)
        system = AtomicSystem(structures: [structure], lists: [neighbors.list])
        freeMask = (structure.fixed?.contains(true) ?? false) ? structure.freeMask : nil
    }

    public var neighborListBuilds: Int { neighbors.builds }

    /// Energy and forces at `positions` with the structure's cell; parameters as given (tracked for
    /// training, constants otherwise).
    public mutating func evaluate(positions: Variable, cell: Variable? = nil, parameters: [String: Variable]) -> (energy: Variable, forces: Variable) {
        let c = cell ?? Variable(constant: structure.cell)
        if neighbors.update(positions: positions.value, cell: c.value) {
            system = AtomicSystem(structures: [structure], lists: [neighbors.list])
        }
        evaluations += 1
        var (e, f) = potential.energyAndForces(system, positions: positions, cells: c.reshaped([1, 3, 3]), parameters: parameters)
        if let m = freeMask { f = f * m }
        return (e.reshaped([]), f)
    }

    /// Energy, forces and stress (values) at `positions` and `cell`.
    public mutating func evaluateWithStress(positions: Tensor, cell: Tensor) -> Evaluation {
        if neighbors.update(positions: positions, cell: cell) {
            system = AtomicSystem(structures: [structure], lists: [neighbors.list])
        }
        evaluations += 1
        var ev = potential.evaluate(system, positions: positions, cells: cell.reshaped([1, 3, 3]), stress: true)
        if let m = freeMask { ev.forces = ev.forces * m }
        return ev
    }
}
