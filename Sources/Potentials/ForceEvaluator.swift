import Atoms
import Tape

/// Evaluates a potential for one structure whose atoms move (a relaxation, implicit differentiation at its
/// minimum): keeps a Verlet neighbour list (rebuilt when an atom has moved more than skin/2) and the batched
/// graph built from it, and zeroes forces on fixed atoms, as ASE's FixAtoms does.
public struct ForceEvaluator: Sendable {
    public let potential: any Potential
    public let structure: Structure
    public var skin: Double
    public private(set) var neighbors: VerletNeighborList
    public private(set) var evaluations = 0
    private var graph: AtomicSystem
    private let freeMask: Tensor?

    public init(potential: any Potential, structure: Structure, skin: Double = 0.5) {
        self.potential = potential
        self.structure = structure
        self.skin = skin
        neighbors = VerletNeighborList(structure, cutoff: potential.cutoff, skin: skin)
        graph = AtomicSystem(structures: [structure], lists: [neighbors.list])
        freeMask = (structure.fixed?.contains(true) ?? false) ? structure.freeMask : nil
    }

    public var neighborListBuilds: Int { neighbors.builds }

    /// The graph for `positions` and `cell` (the neighbour list refreshed when needed).
    public mutating func system(positions: Tensor, cell: Tensor) -> AtomicSystem {
        if neighbors.update(positions: positions, cell: cell) {
            graph = AtomicSystem(structures: [structure], lists: [neighbors.list])
        }
        return graph
    }

    /// Energy and forces at `positions` with the structure's cell; parameters as given (tracked for
    /// training, constants otherwise).
    public mutating func evaluate(positions: Variable, cell: Variable? = nil, parameters: [String: Variable]) -> (energy: Variable, forces: Variable) {
        let c = cell ?? Variable(constant: structure.cell)
        let sys = system(positions: positions.value, cell: c.value)
        evaluations += 1
        var (e, f) = potential.energyAndForces(sys, positions: positions, cells: c.reshaped([1, 3, 3]), parameters: parameters)
        if let m = freeMask { f = f * m }
        return (e.reshaped([]), f)
    }

    /// Energy, forces and stress (values) at `positions` and `cell`.
    public mutating func evaluateWithStress(positions: Tensor, cell: Tensor) -> Evaluation {
        let sys = system(positions: positions, cell: cell)
        evaluations += 1
        var ev = potential.evaluate(sys, positions: positions, cells: cell.reshaped([1, 3, 3]), stress: true)
        if let m = freeMask { ev.forces = ev.forces * m }
        return ev
    }
}
