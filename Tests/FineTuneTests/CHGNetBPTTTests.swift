import Foundation
import Testing
import Tape
import Atoms
import Potentials
import Relax
import Loss
@testable import FineTune

@Suite struct CHGNetBPTTTests {
    static let path = ModelStore.path(of: "chgnet-0.3.0")
    static let model: (any Potential)? = try? ModelFile.load(path).potential
    static let skipMessage = Comment(rawValue: "CHGNet weights not found at \(path): run 'relaxft models pull chgnet-0.3.0' (or set RELAXFT_HOME)")

    /// A rattled diamond Si cell with a vacancy and a target 0.05 Å (rms per component) away from it.
    static func vacancyExample(repeats: Int, targetSeed: UInt64) -> RelaxationExample {
        let s = rattledSilicon(repeats: repeats, vacancy: true, rattle: 0.1, seed: 4)
        var rng = SeededGenerator(seed: targetSeed)
        return RelaxationExample(name: "si\(s.count)", initial: s, target: s.positions + rng.normalTensor([s.count, 3], scale: 0.05))
    }

    /// The gradient of the relaxed-structure loss after 10 FIRE steps with CHGNet 0.3.0, by backpropagation
    /// through the steps (which differentiates the forces with respect to the weights: CHGNet's second
    /// derivatives), against five-point differences of the unrolled loss for randomly chosen weights.
    @Test(.enabled(if: model != nil, skipMessage))
    func tenFIREStepsGradientMatchesFiniteDifferences() throws {
        checkTenFIREStepsGradient(Self.model!, label: "CHGNet")
    }

    /// Checkpointed BPTT through CHGNet gives the bits of full BPTT, loss and every gradient: a checkpoint's first,
    /// discarded pass computes forces without recording their graph and its recomputation with it, so this holds only
    /// because every operation's recorded backward gives the values of its unrecorded one.
    @Test(.enabled(if: model != nil, skipMessage))
    func checkpointedGradientsEqualFullBitForBit() throws {
        let model = Self.model!
        let example = Self.vacancyExample(repeats: 1, targetSeed: 6)
        let names = Array(model.parameters.keys)
        for relaxer in [FIRE() as any Relaxer, ForceFollowing(eta: 0.01)] {
            func run(_ mode: GradientMode) -> BPTTResult {
                var settings = BPTTSettings(relaxer: relaxer, steps: 5)
                settings.mode = mode
                return relaxationLossAndGradient(example, potential: model, settings: settings)
            }
            let full = run(.full)
            for mode in [GradientMode.checkpoint(every: nil), .checkpoint(every: 2), .checkpoint(every: 1)] {
                let r = run(mode)
                #expect(r.loss.bitPattern == full.loss.bitPattern, "\(relaxer.name) \(mode): loss \(r.loss) vs \(full.loss)")
                let differing = names.filter { !r.gradients[$0]!.bitwiseEqual(full.gradients[$0]!) }
                #expect(differing.isEmpty, "\(relaxer.name) \(mode): \(differing.count) gradients differ from full mode's, e.g. \(differing.sorted().prefix(3))")
            }
        }
    }

    /// Two threads on one structure (the trainers' spare threads go inside its operations) give the bits of one: a
    /// BPTT gradient through five FIRE steps of CHGNet on a 63-atom cell, large enough that products and fused
    /// operations are split.
    @Test(.enabled(if: model != nil, skipMessage))
    func twoThreadsOnOneStructureGiveTheBitsOfOne() throws {
        let model = Self.model!
        let example = Self.vacancyExample(repeats: 2, targetSeed: 7)
        let settings = BPTTSettings(relaxer: FIRE(), steps: 3)
        let one = parallelMap(1, threads: 1) { _ in relaxationLossAndGradient(example, potential: model, settings: settings) }[0]
        let splitsBefore = IntraOpThreads.splits
        let two = parallelMap(1, threads: 2) { _ in relaxationLossAndGradient(example, potential: model, settings: settings) }[0]
        #expect(IntraOpThreads.splits - splitsBefore >= 100, "only \(IntraOpThreads.splits - splitsBefore) operations were split over threads")
        #expect(two.loss.bitPattern == one.loss.bitPattern, "loss \(two.loss) vs \(one.loss)")
        let differing = one.gradients.keys.filter { !two.gradients[$0]!.bitwiseEqual(one.gradients[$0]!) }
        #expect(differing.isEmpty, "\(differing.count) gradients differ, e.g. \(differing.sorted().prefix(3))")
    }
}
