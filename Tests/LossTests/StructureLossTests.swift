import Foundation
import Testing
import Atoms
@testable import Loss
import Tape

/// ΔQ and RMSD (mass weighting, minimum image, the gradient at zero) and the error summaries of Loss.
@Suite struct StructureLossTests {
    /// ΔQ = sqrt(Σ m_j |x_j − x*_j|²): one Si atom 0.1 Å off and one C atom 0.2 Å off, computed by hand.
    @Test func deltaQIsMassWeighted() {
        let cell = Tensor(shape: [3, 3], [10, 0, 0, 0, 10, 0, 0, 0, 10])
        let s = Structure(numbers: [14, 6], positions: Tensor(shape: [2, 3], [1, 1, 1, 3, 3, 3]), cell: cell, pbc: [true, true, true])
        let target = Tensor(shape: [2, 3], [1.1, 1, 1, 3, 3.2, 3])
        let dq = StructureLoss.deltaQ(s, target)
        let expected = (s.masses[0] * 0.1 * 0.1 + s.masses[1] * 0.2 * 0.2).squareRoot()
        #expect(abs(dq - expected) < 1e-12, "\(dq) vs \(expected)")
        let rmsd = StructureLoss.rmsd(Variable(constant: s.positions), target: target, cell: cell, pbc: s.pbc).scalar
        #expect(abs(rmsd - ((0.01 + 0.04) / 2).squareRoot()) < 1e-12)
    }

    /// A reference position one cell vector away (reference files keep positions unwrapped) is the same position;
    /// without periodicity it is not.
    @Test func deltaQTakesTheMinimumImage() {
        let cell = Tensor(shape: [3, 3], [5, 0, 0, 0, 5, 0, 0, 0, 5])
        let x = Tensor(shape: [1, 3], [0.1, 0.2, 0.3])
        let image = Tensor(shape: [1, 3], [0.1 + 5, 0.2 - 5, 0.3 + 0.05])
        let periodic = Structure(numbers: [14], positions: x, cell: cell, pbc: [true, true, true])
        #expect(abs(StructureLoss.deltaQ(periodic, image) - (periodic.masses[0] * 0.05 * 0.05).squareRoot()) < 1e-12)
        let molecule = Structure(numbers: [14], positions: x, cell: cell, pbc: [false, false, false])
        #expect(StructureLoss.deltaQ(molecule, image) > 5)
    }

    /// The gradient of ΔQ agrees with central finite differences away from zero and is 0 (not NaN) at x = x*.
    @Test func deltaQGradient() {
        let cell = Tensor(shape: [3, 3], [6, 0, 0, 0, 6, 0, 0, 0, 6])
        var rng = SeededGenerator(seed: 5)
        let target = rng.uniformTensor([4, 3], 0, 6)
        let masses = [28.085, 28.085, 12.011, 28.085]
        let f: @Sendable ([Variable]) -> Variable = { v in StructureLoss.deltaQ(v[0], target: target, masses: masses, cell: cell, pbc: [true, true, true]) }
        let check = GradCheck.firstOrder(f, at: [target + rng.normalTensor([4, 3], scale: 0.1)])
        #expect(check.passed(tolerance: 1e-7), "\(check.relativeErrors)")
        let tape = Tape()
        let x = tape.variable(target)
        let g = tape.gradient(of: f([x]), wrt: [x])[0].value
        #expect(g.isFinite && g.maxAbs == 0)
    }

    @Test func errorSummary() {
        let s = ErrorSummary([0.05, 0.2, 0.4, 1.0], thresholds: [0.1, 0.3])
        #expect(s.n == 4 && abs(s.mean - 0.4125) < 1e-15 && abs(s.median - 0.3) < 1e-15 && s.max == 1.0)
        #expect(s.fractionBelow == ["0.1": 0.25, "0.3": 0.5])
        #expect(ErrorSummary([3, 1, 2]).median == 2)
        #expect(ErrorSummary([]).mean.isNaN)
        let imp = ErrorSummary.relativeImprovement(before: [2, 1, 0], after: [1, 1.5, 0])
        #expect(imp.values == [0.5, -0.5, 0] && imp.mean == 0 && imp.median == 0)
    }

    /// The basin test's bond graph is Atoms' BondGraph (one definition for Loss and Dynamics).
    @Test func topologyUsesTheAtomsBondGraph() {
        var si = Structure.diamond(repeats: 2)
        var rng = SeededGenerator(seed: 3)
        si.positions = si.positions + rng.normalTensor([si.count, 3], scale: 0.1)
        let graph = BondGraph.bonds(si, positions: si.positions)
        let topology = BondingTopology.bonds(si, positions: si.positions)
        #expect(Set(graph.map { BondingTopology.Bond(i: $0.i, j: $0.j, shift: $0.shift) }) == topology && topology.count == graph.count)
        #expect(graph.allSatisfy { $0.length < 1.2 * 2 * BondGraph.radius(14) })
    }
}
