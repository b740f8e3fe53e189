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

    /// The gradient of the relaxed-structure loss after 10 FIRE steps with CHGNet 0.3.0, by backpropagation
    /// through the steps (which differentiates the forces with respect to the weights: CHGNet's second
    /// derivatives), against five-point differences of the unrolled loss for randomly chosen weights.
    @Test(.enabled(if: model != nil, skipMessage))
    func tenFIREStepsGradientMatchesFiniteDifferences() throws {
        let model = Self.model!
        // 8-atom Si cell rattled by 0.1 Å; the target is the start moved by a further random 0.05 Å.
        let s = rattledSilicon(repeats: 1, vacancy: false, rattle: 0.1, seed: 21)
        var rng = SeededGenerator(seed: 5)
        let example = RelaxationExample(name: "si8", initial: s, target: s.positions + rng.normalTensor([s.count, 3], scale: 0.05))
        var settings = BPTTSettings(relaxer: FIRE(), steps: 10)
        settings.mode = .full
        let params = Dictionary(uniqueKeysWithValues: model.parameters.map { ($0.key, $0.value) })
        let hyper = Dictionary(uniqueKeysWithValues: settings.relaxer.hyperparameters.map { ($0.key, $0.value) })
        let r = relaxationLossAndGradient(example, potential: model, parameters: params, hyper: hyper, settings: settings)
        #expect(r.steps == 10)
        // The unrolled loss on values: exactly 10 FIRE steps, then ΔQ against the target.
        var rs = RelaxationSettings()
        rs.fmax = 0
        rs.maxSteps = 10
        func loss(_ p: [String: Tensor]) -> Double {
            var m = model
            for (k, v) in p { m.parameters[k] = v }
            let x = relax(s, potential: m, relaxer: FIRE(), settings: rs).structure.positions
            return StructureLoss.deltaQ(Variable(constant: x), target: example.target, masses: s.masses, cell: s.cell, pbc: s.pbc).scalar
        }
        #expect(abs(loss(params) - r.loss) <= 1e-14 * r.loss)
        // Random weights among those the loss depends on.
        var candidates: [(String, Int)] = []
        let scale = r.gradients.values.map(\.maxAbs).max()!
        for name in params.keys.sorted() {
            let g = r.gradients[name]!
            for k in 0..<g.count where abs(g[flat: k]) > 1e-3 * scale { candidates.append((name, k)) }
        }
        for _ in 0..<3 {
            let (name, k) = candidates[rng.int(below: candidates.count)]
            let v = params[name]![flat: k], h = 1e-3 * max(1, abs(v))
            func at(_ d: Double) -> Double { var p = params; p[name]![flat: k] = v + d; return loss(p) }
            let fd = (8 * (at(h) - at(-h)) - (at(2 * h) - at(-2 * h))) / (12 * h)
            let tape = r.gradients[name]![flat: k]
            print("CHGNet BPTT (10 FIRE steps) ∂L/∂\(name)[\(k)]: tape \(tape), five-point FD \(fd)")
            #expect(abs(tape - fd) <= 1e-5 * max(abs(tape), abs(fd)) + 1e-6 * scale, "∂L/∂\(name)[\(k)]: \(tape) vs \(fd)")
        }
    }

    /// Checkpointed BPTT through CHGNet gives the bits of full BPTT, loss and every gradient: a checkpoint's first,
    /// discarded pass computes forces without recording their graph and its recomputation with it, so this holds only
    /// because every operation's recorded backward gives the values of its unrecorded one.
    @Test(.enabled(if: model != nil, skipMessage))
    func checkpointedGradientsEqualFullBitForBit() throws {
        let model = Self.model!
        let s = rattledSilicon(repeats: 1, vacancy: true, rattle: 0.1, seed: 4)
        var rng = SeededGenerator(seed: 6)
        let example = RelaxationExample(name: "si7", initial: s, target: s.positions + rng.normalTensor([s.count, 3], scale: 0.05))
        let params = Dictionary(uniqueKeysWithValues: model.parameters.map { ($0.key, $0.value) })
        for relaxer in [FIRE() as any Relaxer, ForceFollowing(eta: 0.01)] {
            func run(_ mode: GradientMode) -> BPTTResult {
                var settings = BPTTSettings(relaxer: relaxer, steps: 5)
                settings.mode = mode
                let hyper = Dictionary(uniqueKeysWithValues: relaxer.hyperparameters.map { ($0.key, $0.value) })
                return relaxationLossAndGradient(example, potential: model, parameters: params, hyper: hyper, settings: settings)
            }
            let full = run(.full)
            for mode in [GradientMode.checkpoint(every: nil), .checkpoint(every: 2), .checkpoint(every: 1)] {
                let r = run(mode)
                #expect(r.loss.bitPattern == full.loss.bitPattern, "\(relaxer.name) \(mode): loss \(r.loss) vs \(full.loss)")
                let differing = params.keys.filter { !r.gradients[$0]!.bitwiseEqual(full.gradients[$0]!) }
                #expect(differing.isEmpty, "\(relaxer.name) \(mode): \(differing.count) gradients differ from full mode's, e.g. \(differing.sorted().prefix(3))")
            }
        }
    }
}
