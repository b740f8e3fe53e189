import Foundation
import Testing
import Cluster
import Potentials
import Relax
@testable import FineTune

/// The batch gradient over ranks (threads standing in for MPI processes): losses, gradients and the count of
/// structures without a minimum are one process's, for uneven and empty shards.
@Suite("data-parallel batch gradient")
struct DataParallelGradientTests {
    @Test func ranksGiveOneProcessGradientAndFixedPointCount() {
        // Some structures of the batch reach the implicit fmax within the step budget and some do not, spread
        // over the ranks' shards: every rank must count the whole batch's failures.
        let target = StillingerWeber(sigma: 2.0951 * 1.01, lambda: 23.1)
        let examples = [0.01, 0.1, 0.01, 0.1, 0.1].enumerated().map { k, rattle in
            example(rattledSilicon(repeats: 1, vacancy: true, rattle: rattle, seed: UInt64(k + 1)), targetPotential: target)
        }
        let settings = {
            var s = BPTTSettings(relaxer: FIRE(), steps: 1)
            s.mode = .implicit
            s.implicitFmax = 1e-6
            s.implicitMaxSteps = 130   // structures 0 and 2 converge in 111 and 124 steps, the others need 137-155
            return s
        }()
        let pot = StillingerWeber(), trainable = ["sigma", "lambda"]
        let one = batchGradient(examples, potential: pot, settings: settings, trainable: trainable, threads: 1)
        #expect(one.fixedPointFailures > 0 && one.fixedPointFailures < examples.count, "failures: \(one.fixedPointFailures)")
        for ranks in [2, 3, 6] {
            let all = ThreadHub(size: ranks).run { w in
                batchGradient(examples, potential: pot, settings: settings, trainable: trainable, threads: 1, communicator: w)
            }
            for (r, g) in all.enumerated() {
                #expect(g.fixedPointFailures == one.fixedPointFailures, "\(ranks) ranks, rank \(r)")
                #expect(g.losses.map(\.bitPattern) == one.losses.map(\.bitPattern), "\(ranks) ranks, rank \(r)")
                for (name, t) in one.gradients { #expect(g.gradients[name]!.bitwiseEqual(t), "\(ranks) ranks, rank \(r): \(name)") }
            }
        }
    }
}
