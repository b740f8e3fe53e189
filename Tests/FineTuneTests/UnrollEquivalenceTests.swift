import Foundation
import Testing
import Tape
import Atoms
import Potentials
import Relax
@testable import FineTune

/// One loop for every relaxation: a plain `relax` (values only) and the recorded unroll of BPTT (full,
/// checkpointed, truncated) take the same steps, so they reach the same positions to the last bit.
@Suite("relax and the recorded unroll agree bit for bit")
struct UnrollEquivalenceTests {
    static let relaxers = RelaxerFactory.names

    @Test(arguments: relaxers)
    func recordedUnrollReachesTheRelaxedPositions(_ name: String) throws {
        let s = rattledSilicon(repeats: 2, vacancy: true, rattle: 0.06, seed: 11)
        let pot = StillingerWeber(sigma: 2.0951 * 1.01, lambda: 22)
        let relaxer = try RelaxerFactory.make(name, overrides: name == "frame" ? ["eta": 0.02] : [:])
        let steps = 12
        var rs = RelaxationSettings()
        rs.fmax = 0  // never converged: exactly `steps` steps
        rs.maxSteps = steps
        let plain = relax(s, potential: pot, relaxer: relaxer, settings: rs)
        #expect(plain.steps == steps)
        let example = RelaxationExample(name: "si63", initial: s, target: s.positions)
        for mode in [GradientMode.full, .checkpoint(every: 5), .truncated(last: 4)] {
            var settings = BPTTSettings(relaxer: relaxer, steps: steps)
            settings.mode = mode
            settings.trainableHyper = relaxer.hyperparameters.names
            let recorded = relaxationLossAndGradient(example, potential: pot, settings: settings)
            #expect(recorded.steps == steps)
            #expect(recorded.finalPositions.bitwiseEqual(plain.structure.positions), "\(name), \(mode): positions differ by \(recorded.finalPositions.maxAbsDifference(plain.structure.positions)) Å")
        }
        // And with a stop rule: the same step at which fmax first falls below the threshold.
        var stopping = rs
        stopping.fmax = 0.5
        stopping.maxSteps = 200
        let stopped = relax(s, potential: pot, relaxer: relaxer, settings: stopping)
        var settings = BPTTSettings(relaxer: relaxer, steps: 200)
        settings.mode = .full
        settings.stopFmax = 0.5
        let recorded = relaxationLossAndGradient(example, potential: pot, settings: settings)
        #expect(stopped.converged && recorded.steps == stopped.steps, "\(name): \(recorded.steps) vs \(stopped.steps) steps")
        #expect(recorded.finalPositions.bitwiseEqual(stopped.structure.positions), "\(name) with a stop rule")
    }
}
