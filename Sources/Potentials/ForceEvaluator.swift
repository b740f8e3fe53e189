import Atoms
import Tape

/// Verlet neighbour lists of R replicas of one system (same species, cell and periodicity; positions per
/// replica) and the batched graph of the replicas evaluated together: the one neighbour-list bookkeeping of
/// relaxations and implicit differentiation (`ForceEvaluator`, one replica) and of batched molecular dynamics.
///
/// A replica's list is built when it has none, or rebuilt when an atom has moved more than skin/2 (or the cell
/// changed) since its last build. `prepare(r)` is called first and gives the positions to build at: molecular
/// dynamics wraps the replica into the cell there, a relaxation keeps its positions. The batched graph is
/// rebuilt when a list is, or when the set of replicas changes.
public struct VerletGraphs: Sendable {
    public let structure: Structure
    public let cutoff: Double
    public let skin: Double
    public private(set) var lists: [VerletNeighborList?]
    private var cached: (replicas: [Int], system: AtomicSystem)?
    /// Neighbour-list builds so far, over all replicas.
    public private(set) var builds = 0

    public init(structure: Structure, replicas: Int, cutoff: Double, skin: Double) {
        self.structure = structure
        self.cutoff = cutoff
        self.skin = skin
        lists = Array(repeating: nil, count: replicas)
    }

    /// Forgets replica r's list (its positions were replaced, e.g. a restart from a stored state).
    public mutating func reset(_ r: Int) {
        lists[r] = nil
        cached = nil
    }

    /// The batched graph of `replicas` at `positions(r)` with `cell`, lists refreshed where needed.
    public mutating func system(_ replicas: [Int], cell: Tensor, positions: (Int) -> Tensor, prepare: (Int) -> Tensor) -> AtomicSystem {
        var rebuilt = false
        for r in replicas {
            if let l = lists[r], !l.needsRebuild(positions: positions(r), cell: cell) { continue }
            lists[r] = VerletNeighborList(positions: prepare(r), cell: cell, pbc: structure.pbc, cutoff: cutoff, skin: skin)
            builds += 1
            rebuilt = true
        }
        if !rebuilt, let c = cached, c.replicas == replicas { return c.system }
        let system = AtomicSystem(structures: Array(repeating: structure, count: replicas.count), lists: replicas.map { lists[$0]!.list })
        cached = (replicas, system)
        return system
    }
}

/// Evaluates a potential for one structure whose atoms move (a relaxation, implicit differentiation at its
/// minimum): keeps a Verlet neighbour list and the graph built from it (`VerletGraphs` with one replica), and
/// zeroes forces on fixed atoms, as ASE's FixAtoms does.
public struct ForceEvaluator: Sendable {
    public let potential: any Potential
    public let structure: Structure
    public var skin: Double
    private var graphs: VerletGraphs
    public private(set) var evaluations = 0
    private let freeMask: Tensor?

    public init(potential: any Potential, structure: Structure, skin: Double = 0.5) {
        self.potential = potential
        self.structure = structure
        self.skin = skin
        graphs = VerletGraphs(structure: structure, replicas: 1, cutoff: potential.cutoff, skin: skin)
        freeMask = (structure.fixed?.contains(true) ?? false) ? structure.freeMask : nil
        _ = system(positions: structure.positions, cell: structure.cell)
    }

    public var neighborListBuilds: Int { graphs.builds }

    /// The graph for `positions` and `cell` (the neighbour list refreshed when needed).
    public mutating func system(positions: Tensor, cell: Tensor) -> AtomicSystem {
        graphs.system([0], cell: cell, positions: { _ in positions }, prepare: { _ in positions })
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
