import Atoms
import Tape

/// Neighbour information of one or more structures, batched into one graph for a potential.
///
/// Atoms of structure s are `atomOffsets[s]..<atomOffsets[s+1]`; pairs are directed (i, j, image shift)
/// in global atom indices, sorted by i, within the list's cutoff (which may include a skin; potentials
/// must give pairs beyond their own cutoff exactly zero weight).
public struct AtomicSystem: Sendable {
    public let numbers: [Int]
    public let atomOffsets: [Int]
    public let atomStructure: [Int]
    public let pairs: NeighborList
    /// Structure index of each pair.
    public let pairStructure: [Int]
    public let pbc: [[Bool]]

    public var structureCount: Int { atomOffsets.count - 1 }
    public var atomCount: Int { numbers.count }

    /// Batches structures with their neighbour lists (one list per structure, built by the caller).
    public init(structures: [Structure], lists: [NeighborList]) {
        precondition(structures.count == lists.count, "one neighbour list per structure")
        var nums: [Int] = [], offs = [0], atomS: [Int] = []
        var fi: [Int] = [], fj: [Int] = [], fs: [Int] = [], ps: [Int] = []
        for (s, (st, nl)) in zip(structures, lists).enumerated() {
            precondition(nl.atomCount == st.count, "neighbour list of structure \(s) has \(nl.atomCount) atoms, structure has \(st.count)")
            let o = offs.last!
            nums += st.numbers
            atomS += Array(repeating: s, count: st.count)
            fi += nl.first.map { $0 + o }
            fj += nl.second.map { $0 + o }
            fs += nl.shifts
            ps += Array(repeating: s, count: nl.pairCount)
            offs.append(o + st.count)
        }
        numbers = nums
        atomOffsets = offs
        atomStructure = atomS
        let cutoff = lists.map(\.cutoff).min() ?? 0
        pairs = NeighborList(first: fi, second: fj, shifts: fs, atomCount: nums.count, cutoff: cutoff)
        pairStructure = ps
        pbc = structures.map(\.pbc)
    }

    /// One structure, neighbour list built at `cutoff`.
    public init(_ structure: Structure, cutoff: Double) {
        self.init(structures: [structure], lists: [NeighborList.build(structure, cutoff: cutoff)])
    }

    private init(numbers: [Int], atomOffsets: [Int], atomStructure: [Int], pairs: NeighborList, pairStructure: [Int], pbc: [[Bool]]) {
        self.numbers = numbers
        self.atomOffsets = atomOffsets
        self.atomStructure = atomStructure
        self.pairs = pairs
        self.pairStructure = pairStructure
        self.pbc = pbc
    }

    /// Pair vectors r_ij = x_j − x_i + S·cell_s on the tape; positions [N, 3], cells [S, 3, 3].
    public func pairVectors(positions: Variable, cells: Variable) -> Variable {
        let d = positions.gatherRows(pairs.second) - positions.gatherRows(pairs.first)
        guard pairs.hasShifts else { return d }
        if structureCount == 1 && !cells.isTracked { return d + pairs.shiftVectors(cell: cells.value.reshaped([3, 3])) }
        let shifts = Variable(constant: pairs.shiftTensor)
        if structureCount == 1 { return d + matmul(shifts, cells.reshaped([3, 3])) }
        // Per-pair cell: Σ_k S_pk · cell_{s(p),k,:}
        let cellOfPair = cells.reshaped([structureCount, 9]).gatherRows(pairStructure).reshaped([pairs.pairCount, 3, 3])
        return d + (shifts.reshaped([pairs.pairCount, 3, 1]) * cellOfPair).sum(axis: 1)
    }

    /// The system restricted to pairs shorter than `cutoff` at the given positions (values only: which
    /// pairs are kept is not differentiated; the pairs dropped contribute zero to cutoff potentials).
    public func within(_ cutoff: Double, positions: Tensor, cells: Tensor) -> AtomicSystem {
        let r = structureCount == 1 ? pairs.pairVectors(positions: positions, cell: cells.reshaped([3, 3]))
            : pairVectors(positions: Variable(constant: positions), cells: Variable(constant: cells)).value
        let rc2 = cutoff * cutoff
        var keep: [Int] = []
        keep.reserveCapacity(pairs.pairCount)
        r.withUnsafeBufferPointer { p in
            for q in 0..<pairs.pairCount {
                let d2 = p[3 * q] * p[3 * q] + p[3 * q + 1] * p[3 * q + 1] + p[3 * q + 2] * p[3 * q + 2]
                if d2 < rc2 { keep.append(q) }
            }
        }
        if keep.count == pairs.pairCount { return self }
        return subset(pairs: keep, cutoff: cutoff)
    }

    /// The system with only the given pairs (in the given order, which must keep them sorted by center);
    /// `cutoff` is recorded as the new list's cutoff.
    public func subset(pairs keep: [Int], cutoff: Double) -> AtomicSystem {
        let sub = pairs.subset(keep)
        return AtomicSystem(numbers: numbers, atomOffsets: atomOffsets, atomStructure: atomStructure,
                            pairs: NeighborList(first: sub.first, second: sub.second, shifts: sub.shifts, atomCount: atomCount, cutoff: cutoff),
                            pairStructure: keep.map { pairStructure[$0] }, pbc: pbc)
    }

    /// Sum of per-atom values [N] or [N, 1] into per-structure values [S].
    public func sumPerStructure(_ atomValues: Variable) -> Variable {
        let v = atomValues.reshaped([atomCount])
        if structureCount == 1 { return v.sum().reshaped([1]) }
        return v.scatterAddRows(atomStructure, count: structureCount)
    }
}

/// An interatomic potential: per-structure energies as a tape expression of positions, cells and named
/// parameters. Forces (−∂E/∂x) and stress (cell derivative) come from the tape, so every potential is
/// differentiable to second order with respect to positions and parameters.
public protocol Potential: Sendable {
    /// Kind tag stored in model files ("lj", "sw", "so3krates", …).
    var kind: String { get }
    /// Interaction cutoff (Å): pairs beyond it do not contribute.
    var cutoff: Double { get }
    /// Named parameter tensors (the trainable set).
    var parameters: OrderedDictionary<Tensor> { get set }
    /// Hyperparameters and provenance, stored as strings in model files' `__metadata__`.
    var metadata: [String: String] { get }
    /// Energies [S] of the batched structures.
    func energies(_ system: AtomicSystem, positions: Variable, cells: Variable, parameters: [String: Variable]) -> Variable
    /// Atomic numbers the potential can evaluate; nil: every element (classical potentials treat every atom
    /// alike). Callers check structures with `checkInput` before evaluating: an uncovered element is an error.
    var coveredElements: Set<Int>? { get }
    /// Memory one neighbour pair takes in an evaluation with forces (features, tape), bytes: a lower estimate
    /// used to refuse structures whose evaluation could not fit in memory.
    var bytesPerPair: Double { get }
    /// Throws a `PotentialSpecError` when a parameter or hyperparameter makes no physical sense (not finite, a
    /// length that is not positive, a cutoff beyond `PotentialLimits.maximumCutoff`). Run after loading a
    /// model, parsing a specification and every optimizer step.
    func checkParameters() throws
}

/// Bounds on what a potential may ask for.
public enum PotentialLimits {
    /// Largest interaction cutoff accepted, Å: ten times what interatomic potentials use (5–10 Å). Beyond it a
    /// cutoff is a unit or typing mistake, and its neighbour lists would grow with its cube.
    public static let maximumCutoff = 100.0
    /// Smallest interaction cutoff accepted, Å: the closest two atoms of a structure file may be (its readers
    /// refuse closer ones), so a potential with a shorter cutoff could never see a pair.
    public static let minimumCutoff = 0.1

    /// Why `cutoff` is outside [minimumCutoff, maximumCutoff] (or not a number), or nil.
    public static func cutoffProblem(_ cutoff: Double) -> String? {
        guard cutoff.isFinite && cutoff > 0 else { return "the cutoff must be a positive length, got \(cutoff) Å" }
        if cutoff > maximumCutoff { return "cutoff \(cutoff) Å is beyond \(maximumCutoff) Å (interatomic potentials use 5–10 Å)" }
        if cutoff < minimumCutoff { return "cutoff \(cutoff) Å is below \(minimumCutoff) Å, closer than atoms may be: the potential would never see a pair" }
        return nil
    }
}

/// A structure a potential cannot evaluate: an element it does not cover, or a neighbour list beyond memory.
public struct PotentialInputError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}

extension Potential {
    public var coveredElements: Set<Int>? { nil }
    public var bytesPerPair: Double { 512 }
    public func checkParameters() throws { try checkCommonParameters() }

    /// The checks every potential shares: finite parameters, a positive finite cutoff within the limit.
    public func checkCommonParameters() throws {
        for (name, t) in parameters where !t.isFinite {
            let i = t.array.firstIndex { !$0.isFinite } ?? 0
            throw PotentialSpecError(message: "\(kind): parameter \(name) has a non-finite value (\(t.array[i])\(t.count > 1 ? " at index \(i)" : ""))")
        }
        if let p = PotentialLimits.cutoffProblem(cutoff) { throw PotentialSpecError(message: "\(kind): \(p)") }
    }

    /// Elements of `numbers` this potential does not cover (sorted atomic numbers; empty when all are covered).
    public func uncoveredElements(_ numbers: [Int]) -> [Int] {
        guard let covered = coveredElements else { return [] }
        return Array(Set(numbers).subtracting(covered)).sorted()
    }

    /// "NAME contains C, H, which POTENTIAL does not cover (its elements: …)", or nil when every element of
    /// `numbers` is covered.
    public func coverageProblem(_ numbers: [Int], name: String, potentialName: String? = nil) -> String? {
        let missing = uncoveredElements(numbers)
        guard !missing.isEmpty else { return nil }
        let known = (coveredElements ?? []).sorted()
        let knownText = known.count > 20 ? "Z = \(known.first!)…\(known.last!)" : known.map(Self.symbol).joined(separator: ", ")
        return "\(name) contains \(missing.map(Self.symbol).joined(separator: ", ")), which \(potentialName ?? kind) does not cover (its elements: \(knownText))"
    }

    /// Checks that this potential can evaluate `structure`: every element covered, a neighbour list (cutoff plus
    /// `skin`) that can be built and, with the evaluation's own per-pair memory, fits `MemoryBudget`. `name` names
    /// the structure and `potentialName` the potential in messages (default: its kind).
    public func checkInput(_ structure: Structure, name: String, potentialName: String? = nil, skin: Double = 0) throws {
        if let m = coverageProblem(structure.numbers, name: name, potentialName: potentialName) { throw PotentialInputError(message: m) }
        do {
            try NeighborList.validate(structure, cutoff: cutoff + skin, name: name, extraBytesPerPair: bytesPerPair)
        } catch let e as NeighborListError {
            throw PotentialInputError(message: e.message)
        }
    }

    static func symbol(_ z: Int) -> String { z >= 0 && z < Elements.symbols.count ? Elements.symbols[z] : "Z=\(z)" }
}

extension Potential {
    /// The parameters as untracked Variables.
    public var constantParameters: [String: Variable] {
        var d: [String: Variable] = [:]
        for (k, v) in parameters { d[k] = Variable(constant: v) }
        return d
    }

    /// The parameters as leaves on `tape`, in the order of `parameters.keys`.
    public func parameterLeaves(on tape: Tape) -> [String: Variable] {
        var d: [String: Variable] = [:]
        for (k, v) in parameters { d[k] = tape.variable(v) }
        return d
    }

    public var parameterCount: Int { parameters.reduce(0) { $0 + $1.value.count } }
}

/// Energies, forces and (optionally) stresses of a batch, as plain values.
public struct Evaluation: Sendable {
    public var energies: Tensor
    /// Forces [N, 3] (eV/Å).
    public var forces: Tensor
    /// Stress per structure [S, 3, 3] (eV/Å³, ASE convention: σ = (1/V)∂E/∂ε, positive = tensile).
    public var stresses: Tensor?
    public var energy: Double { energies.sum() }

    public init(energies: Tensor, forces: Tensor, stresses: Tensor?) {
        self.energies = energies
        self.forces = forces
        self.stresses = stresses
    }
}

extension Potential {
    /// Energies and forces (and stresses) with the potential's own parameters, nothing kept afterwards.
    public func evaluate(_ system: AtomicSystem, positions: Tensor, cells: Tensor, stress: Bool = false) -> Evaluation {
        let tape = Tape()
        let x = tape.variable(positions)
        let c = Variable(constant: cells.reshaped([system.structureCount, 3, 3]))
        let p = constantParameters
        if !stress {
            let e = energies(system, positions: x, cells: c, parameters: p)
            let g = tape.gradient(of: e.sum(), wrt: [x])[0].value
            return Evaluation(energies: e.value, forces: -g, stresses: nil)
        }
        let eps = tape.variable(Tensor.zeros([system.structureCount, 3, 3]))
        let (xs, cs) = Self.strained(system, positions: x, cells: c, strain: eps)
        let e = energies(system, positions: xs, cells: cs, parameters: p)
        let g = tape.gradient(of: e.sum(), wrt: [x, eps])
        return Evaluation(energies: e.value, forces: -g[0].value, stresses: Self.stressFromVirial(g[1].value, cells: cells))
    }

    /// Energies and forces as tape expressions, differentiable again when the tape needs higher order (forces
    /// are then recorded with `createGraph: true`). The tape is that of the positions, cells or parameters,
    /// whichever is tracked (untracked positions become a fresh leaf, so that forces still depend on tracked
    /// parameters); with nothing tracked, a private tape is used and constants are returned.
    public func energyAndForces(_ system: AtomicSystem, positions: Variable, cells: Variable,
                                parameters: [String: Variable]) -> (energy: Variable, forces: Variable) {
        let owner = positions.tape ?? cells.tape ?? parameters.values.first(where: \.isTracked)?.tape
        guard let tape = owner, tape.isRecording else {
            let ev = evaluateWith(system, positions: positions.value, cells: cells.value, parameters: parameters)
            return (Variable(constant: ev.energies), Variable(constant: ev.forces))
        }
        let x = positions.isTracked ? positions : tape.variable(positions.value)
        let e = energies(system, positions: x, cells: cells, parameters: parameters)
        let g = tape.gradient(of: e.sum(), wrt: [x], createGraph: tape.needsHigherOrder)[0]
        return (e, -g)
    }

    /// Like `evaluate`, with explicit parameter values (constants or detached).
    func evaluateWith(_ system: AtomicSystem, positions: Tensor, cells: Tensor, parameters: [String: Variable]) -> Evaluation {
        let tape = Tape()
        let x = tape.variable(positions)
        let p = parameters.mapValues { $0.detached }
        let e = energies(system, positions: x, cells: Variable(constant: cells.reshaped([system.structureCount, 3, 3])), parameters: p)
        let g = tape.gradient(of: e.sum(), wrt: [x])[0].value
        return Evaluation(energies: e.value, forces: -g, stresses: nil)
    }

    /// Positions and cells deformed by (I + ε_s) per structure: x' = x(I + ε), cell' = cell(I + ε).
    public static func strained(_ system: AtomicSystem, positions x: Variable, cells c: Variable, strain eps: Variable) -> (Variable, Variable) {
        let s = system.structureCount
        if s == 1 {
            let e = eps.reshaped([3, 3])
            return (x + matmul(x, e), (c.reshaped([3, 3]) + matmul(c.reshaped([3, 3]), e)).reshaped([1, 3, 3]))
        }
        let n = system.atomCount
        let epsAtom = eps.reshaped([s, 9]).gatherRows(system.atomStructure).reshaped([n, 3, 3])
        let xs = x + (x.reshaped([n, 3, 1]) * epsAtom).sum(axis: 1)
        let cs = c + (c.reshaped([s, 3, 3, 1]) * eps.reshaped([s, 1, 3, 3])).sum(axis: 2)
        return (xs, cs)
    }

    /// σ_s = sym(∂E/∂ε_s)/V_s for structures with a cell (zeros otherwise).
    public static func stressFromVirial(_ dEdEps: Tensor, cells: Tensor) -> Tensor {
        let s = dEdEps.count / 9
        var out = Tensor.zeros([s, 3, 3])
        let c = cells.reshaped([s, 9]), w = dEdEps.reshaped([s, 9])
        for k in 0..<s {
            let vol = Swift.abs(c.slice(axis: 0, k..<(k + 1)).reshaped([3, 3]).determinant3x3)
            guard vol > 1e-12 else { continue }
            for a in 0..<3 { for b in 0..<3 {
                out[k, a, b] = 0.5 * (w[k, 3 * a + b] + w[k, 3 * b + a]) / vol
            } }
        }
        return out
    }
}
