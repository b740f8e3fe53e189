import Atoms
import Cluster
import Foundation
import Loss
import Potentials
import Relax
import Tape

extension JSONEncoder {
    static var sorted: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return e
    }
}

/// Outcome of relaxing one example with a model.
public struct ExampleEvaluation: Codable, Sendable {
    public var name: String
    public var group: String?
    public var deltaQ: Double
    public var initialDeltaQ: Double
    public var rmsd: Double
    public var converged: Bool
    public var fmax: Double
    public var steps: Int
    public var energy: Double
    /// Model energy at the relaxed structure minus the reference relaxed energy, per atom (when known). Only
    /// meaningful when model and reference share an energy zero (same DFT code and settings).
    public var energyErrorPerAtom: Double?
    /// Model relaxation energy minus the reference one, (E_final − E_initial)_model − (E_relaxed − E_initial)_ref
    /// in eV (when both reference energies are known): the energy error at the relaxed structure measured from
    /// the initial one, independent of the energy zero.
    public var relaxationEnergyError: Double?
    /// Bonds present in only one of the final and the reference structure (see `BondingTopology`); -1 when
    /// the relaxation diverged (non-finite positions).
    public var differingBonds: Int
    /// Same basin as the reference: ΔQ below the basin threshold and the same bonding topology.
    public var sameBasin: Bool
    /// Why the relaxation failed (non-finite energy, forces or positions; see `RelaxationFailure`), or nil. A
    /// failed relaxation is never converged; its ΔQ is that of the last state that passed the check.
    public var failure: String? = nil
}

/// The "same basin as the reference" criterion of `relaxft evaluate`.
public struct BasinCriterion: Codable, Sendable, Equatable {
    /// ΔQ (amu^½·Å) below which a structure may count as in the reference's basin.
    public var deltaQ: Double
    /// Bond cut-off factor on the sum of covalent radii.
    public var bondScale: Double

    public init(deltaQ: Double = 1.0, bondScale: Double = BondingTopology.defaultScale) {
        self.deltaQ = deltaQ
        self.bondScale = bondScale
    }
}

/// Relaxes every example with `potential` under `protocol` (on `threads` threads) and scores the result:
/// example i → evaluation i. With several ranks each relaxes its contiguous share and every rank gets all results
/// in input order, the values one process computes (each relaxation is independent of the others). `progress`
/// gets the number done after each round of `threads` structures (with several ranks, this rank's count scaled to
/// the whole set: an estimate).
public func evaluateRelaxations(_ examples: [RelaxationExample], potential: any Potential, protocol p: RelaxationProtocol,
                                threads: Int = 1, basin: BasinCriterion = BasinCriterion(), communicator comm: any Communicator,
                                progress: (Int) -> Void = { _ in }) throws -> [ExampleEvaluation] {
    let share = comm.shard(of: examples.count)
    return try comm.shardedMap(examples.count) { mine in
        evaluateRelaxations(Array(examples[mine]), potential: potential, protocol: p, threads: threads, basin: basin) { done in
            progress(done == share.count ? examples.count : done * examples.count / Swift.max(share.count, 1))
        }
    }
}

/// Relaxes every example with `potential` under `protocol` (on `threads` threads) and scores the result:
/// example i → evaluation i. `progress` gets the number done after each round of `threads` structures.
public func evaluateRelaxations(_ examples: [RelaxationExample], potential: any Potential, protocol p: RelaxationProtocol,
                                threads: Int = 1, basin: BasinCriterion = BasinCriterion(),
                                progress: (Int) -> Void = { _ in }) -> [ExampleEvaluation] {
    var out: [ExampleEvaluation] = []
    let round = Swift.max(threads, 1)
    var start = 0
    while start < examples.count {
        let part = Array(examples[start..<Swift.min(start + round, examples.count)])
        out += parallelMap(part.count, threads: threads) { evaluateRelaxation(part[$0], potential: potential, protocol: p, basin: basin) }
        start += round
        progress(out.count)
    }
    return out
}

/// Relaxes one example under `protocol` and scores the result against its reference.
public func evaluateRelaxation(_ ex: RelaxationExample, potential: any Potential, protocol p: RelaxationProtocol,
                               basin: BasinCriterion = BasinCriterion()) -> ExampleEvaluation {
    let r = relax(ex.initial, potential: potential, relaxer: p.relaxer, settings: p.settings)
    let s = ex.initial
    let x = r.structure.positions
    let dq = StructureLoss.deltaQ(Variable(constant: x), target: ex.target, masses: s.masses, cell: s.cell, pbc: s.pbc).scalar
    let dq0 = StructureLoss.deltaQ(Variable(constant: s.positions), target: ex.target, masses: s.masses, cell: s.cell, pbc: s.pbc).scalar
    let rmsd = StructureLoss.rmsd(Variable(constant: x), target: ex.target, cell: s.cell, pbc: s.pbc).scalar
    // A failed relaxation has no final energy to score (it may have failed at its first step): no energy errors.
    let scored = r.failure == nil && r.finalEnergy.isFinite && r.initialEnergy.isFinite
    let eErr = scored ? ex.targetEnergy.map { (r.finalEnergy - $0) / Double(s.count) } : nil
    var relaxErr: Double? = nil
    if scored, let e1 = ex.targetEnergy, let e0 = ex.initialEnergy { relaxErr = (r.finalEnergy - r.initialEnergy) - (e1 - e0) }
    // A diverged relaxation (non-finite positions) has no bond graph: -1, never the same basin.
    let bonds = x.array.allSatisfy(\.isFinite) ? BondingTopology.differingBonds(s, positions: x, reference: ex.target, scale: basin.bondScale) : -1
    // A failed relaxation (see `RelaxationFailure`) is never converged nor in the reference's basin.
    let failed = r.failure != nil
    return ExampleEvaluation(name: ex.name, group: ex.group, deltaQ: dq, initialDeltaQ: dq0, rmsd: rmsd, converged: !failed && r.fmax < p.convergedFmax,
                             fmax: r.fmax, steps: r.steps, energy: r.finalEnergy, energyErrorPerAtom: eErr,
                             relaxationEnergyError: relaxErr, differingBonds: failed ? -1 : bonds,
                             sameBasin: !failed && bonds == 0 && dq < basin.deltaQ, failure: r.failure?.description)
}
