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
        // A structure the list cannot be built for is not evaluated: the first evaluation reports the problem.
        let buildable = (try? NeighborList.validate(structure, cutoff: potential.cutoff + skin, name: "the structure",
                                                    extraBytesPerPair: potential.bytesPerPair)) != nil
        neighbors = buildable ? VerletNeighborList(structure, cutoff: potential.cutoff, skin: skin)
            : VerletNeighborList(unbuiltFor: structure.positions, cell: structure.cell, pbc: structure.pbc, cutoff: potential.cutoff, skin: skin)
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

    /// Why the last evaluation was not done (positions or a cell that cannot be binned, a neighbour list beyond
    /// memory); its energy and forces were then NaN. Nil after a normal evaluation.
    public private(set) var problem: String?

    /// Checks positions and cell before the potential sees them (O(N)): a non-finite or absurdly large
    /// coordinate, or a list that would not fit in memory, is not evaluated (`problem` says why). Otherwise
    /// returns the graph, its neighbour list rebuilt when atoms moved enough.
    private mutating func prepare(_ positions: Tensor, _ cell: Tensor) -> AtomicSystem? {
        problem = NeighborList.problem(positions: positions, cell: cell, pbc: structure.pbc, cutoff: neighbors.cutoff + neighbors.skin)
        guard problem == nil else { return nil }
        guard neighbors.needsRebuild(positions: positions, cell: cell) else { return graph }
        do {
            try NeighborList.validate(positions: positions, cell: cell, pbc: structure.pbc, cutoff: neighbors.cutoff + neighbors.skin,
                                      name: "the structure", extraBytesPerPair: potential.bytesPerPair)
        } catch {
            problem = "\(error)"
            return nil
        }
        return system(positions: positions, cell: cell)
    }

    /// Energy and forces at `positions` with the structure's cell; parameters as given (tracked for
    /// training, constants otherwise). NaN (see `problem`) for positions that cannot be evaluated.
    public mutating func evaluate(positions: Variable, cell: Variable? = nil, parameters: [String: Variable]) -> (energy: Variable, forces: Variable) {
        let c = cell ?? Variable(constant: structure.cell)
        guard let sys = prepare(positions.value, c.value) else {
            return (Variable(constant: Tensor(scalar: .nan)), Variable(constant: Self.nan(positions.value.shape)))
        }
        evaluations += 1
        var (e, f) = potential.energyAndForces(sys, positions: positions, cells: c.reshaped([1, 3, 3]), parameters: parameters)
        if let m = freeMask { f = f * m }
        return (e.reshaped([]), f)
    }

    /// Energy, forces and stress (values) at `positions` and `cell` (NaN, see `problem`, when they cannot be evaluated).
    public mutating func evaluateWithStress(positions: Tensor, cell: Tensor) -> Evaluation {
        guard let sys = prepare(positions, cell) else {
            return Evaluation(energies: Tensor(shape: [1], [.nan]), forces: Self.nan(positions.shape), stresses: Self.nan([1, 3, 3]))
        }
        evaluations += 1
        var ev = potential.evaluate(sys, positions: positions, cells: cell.reshaped([1, 3, 3]), stress: true)
        if let m = freeMask { ev.forces = ev.forces * m }
        return ev
    }

    static func nan(_ shape: [Int]) -> Tensor { Tensor(shape: shape, [Double](repeating: .nan, count: shape.reduce(1, *))) }
}
