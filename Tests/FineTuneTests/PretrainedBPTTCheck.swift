import Foundation
import Testing
import Tape
import Atoms
import Potentials
import Relax
import Loss
@testable import FineTune

/// The 8-atom Si cell rattled by 0.1 Å with its target (the start moved by a further random 0.05 Å), 10 FIRE steps
/// recorded in full, and the model's parameters; the generator continues after the target.
func tenFIREStepsProblem(_ model: any Potential)
    -> (RelaxationExample, BPTTSettings, [String: Tensor], SeededGenerator) {
    let s = rattledSilicon(repeats: 1, vacancy: false, rattle: 0.1, seed: 21)
    var rng = SeededGenerator(seed: 5)
    let example = RelaxationExample(name: "si8", initial: s, target: s.positions + rng.normalTensor([s.count, 3], scale: 0.05))
    var settings = BPTTSettings(relaxer: FIRE(), steps: 10)
    settings.mode = .full
    let params = Dictionary(uniqueKeysWithValues: model.parameters.map { ($0.key, $0.value) })
    return (example, settings, params, rng)
}

/// The relaxed-structure loss of an 8-atom Si cell rattled by 0.1 Å (target: the start moved by a further random
/// 0.05 Å) after 10 FIRE steps: its gradient by backpropagation through the steps (which differentiates the forces
/// with respect to the weights) against five-point differences of the unrolled loss for three random weights
/// among those the loss depends on.
func checkTenFIREStepsGradient(_ model: any Potential, label: String) {
    var (example, settings, params, rng) = tenFIREStepsProblem(model)
    let s = example.initial
    let r = relaxationLossAndGradient(example, potential: model, settings: settings)
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
        print("\(label) BPTT (10 FIRE steps) ∂L/∂\(name)[\(k)]: tape \(tape), five-point FD \(fd)")
        #expect(abs(tape - fd) <= 1e-5 * max(abs(tape), abs(fd)) + 1e-6 * scale, "∂L/∂\(name)[\(k)]: \(tape) vs \(fd)")
    }
}
