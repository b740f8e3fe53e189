import Atoms
import Foundation
import Tape

/// When a simulation counts as unstable, as in StABlE training (S. Raja, I. Amin, F. Pedregosa, A. S.
/// Krishnapriyan, "Stability-aware training of machine learning force fields with differentiable Boltzmann
/// estimators", Trans. Mach. Learn. Res. 2025; arXiv:2402.13984): the largest deviation of a bond from its
/// reference length above `maxBondDeviation` (0.25 Å in training, 0.5 Å in evaluation), or two atoms closer
/// than `minimumDistance`; a non-finite energy or force always counts.
public struct InstabilityCriterion: Codable, Sendable, Equatable {
    /// Threshold on max_bond |d − d_ref| (Å); nil: not checked.
    public var maxBondDeviation: Double?
    /// Threshold on the smallest interatomic distance (Å); nil: not checked.
    public var minimumDistance: Double?

    public init(maxBondDeviation: Double? = 0.25, minimumDistance: Double? = nil) {
        self.maxBondDeviation = maxBondDeviation
        self.minimumDistance = minimumDistance
    }

    /// StABlE's training threshold (0.25 Å).
    public static let training = InstabilityCriterion(maxBondDeviation: 0.25)
    /// StABlE's evaluation threshold (0.5 Å).
    public static let evaluation = InstabilityCriterion(maxBondDeviation: 0.5)
}

/// The outcome of one check of one configuration.
public struct StabilityReport: Sendable {
    /// Largest bond deviation (Å), global criterion.
    public var maxBondDeviation: Double
    /// Smallest interatomic distance (Å), or nil when not checked.
    public var minimumDistance: Double?
    /// Per atom, the largest deviation of its bonds (local criterion).
    public var atomDeviations: [Double]
    /// Atoms whose neighbourhood breaks the bond threshold (where the instability is).
    public var unstableAtoms: [Int]
    public var unstable: Bool
}

/// Checks configurations of one system against a criterion, with the system's reference bonds.
public struct StabilityMonitor: Sendable {
    public let bonds: BondSet
    public let criterion: InstabilityCriterion
    public let cell: Tensor
    public let pbc: [Bool]
    public let atomCount: Int

    public init(bonds: BondSet, criterion: InstabilityCriterion, structure: Structure) {
        self.bonds = bonds
        self.criterion = criterion
        cell = structure.cell
        pbc = structure.pbc
        atomCount = structure.count
    }

    public func check(_ positions: Tensor, finite: Bool = true) -> StabilityReport {
        guard finite, positions.isFinite else {
            return StabilityReport(maxBondDeviation: .infinity, minimumDistance: 0, atomDeviations: Array(repeating: .infinity, count: atomCount),
                                   unstableAtoms: Array(0..<atomCount), unstable: true)
        }
        let local = bonds.atomDeviations(positions, cell: cell, pbc: pbc, atomCount: atomCount)
        let maxDev = local.max() ?? 0
        var unstable = false
        var atoms: [Int] = []
        if let t = criterion.maxBondDeviation {
            atoms = local.indices.filter { local[$0] > t }
            unstable = maxDev > t
        }
        var dmin: Double?
        if let t = criterion.minimumDistance {
            var s = Structure(numbers: Array(repeating: 14, count: atomCount), positions: positions, cell: cell, pbc: pbc)
            s.customMasses = nil
            let d = Dynamics.minimumDistance(s, cutoff: Swift.max(t * 1.5, 1))
            dmin = d
            if !(d >= t) { unstable = true }
        }
        return StabilityReport(maxBondDeviation: maxDev, minimumDistance: dmin, atomDeviations: local, unstableAtoms: atoms, unstable: unstable)
    }
}
