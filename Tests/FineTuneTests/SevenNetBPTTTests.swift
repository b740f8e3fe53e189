import Foundation
import Testing
import Tape
import Atoms
import Potentials
import Relax
import Loss
@testable import FineTune

/// A small SevenNet (two blocks, degrees ≤ 2, random weights) for BPTT checks that run without pulled weights.
func smallSevenNet(seed: UInt64 = 5) throws -> SevenNet {
    let meta = ["relaxft_kind": "sevennet", "cutoff": "4.0", "cutoff_on": "3.5", "radial_basis": "bessel", "radial_basis_size": "4",
                "cutoff_function": "XPLOR", "lmax": "2", "channel": "6", "readout_hidden": "3",
                "irreps": "[\"6x0e\", \"6x0e+3x1e+2x2e\", \"6x0e\"]", "weight_nn_hidden": "[6]", "conv_denominator": "[3.0, 3.0]", "elements": "Si"]
    var rng = SeededGenerator(seed: seed)
    var p = OrderedDictionary<Tensor>()
    for (name, shape) in try SevenNet.parameterShapes(metadata: meta) {
        switch name {
        case "edge_embedding.basis_function.coeffs": p[name] = Tensor((1...shape[0]).map { Double($0) * Double.pi / 4 })
        case "rescale_atomic_energy.shift": p[name] = Tensor(shape: shape, repeating: -5)
        // Bonds stiff enough that FIRE moves the atoms by a few 0.01 Å in 10 steps.
        case "rescale_atomic_energy.scale": p[name] = Tensor(shape: shape, repeating: 1.5)
        default: p[name] = rng.normalTensor(shape, scale: 0.7)
        }
    }
    return try SevenNet(parameters: p, metadata: meta)
}

@Suite struct SevenNetBPTTTests {
    static let path = ModelStore.path(of: "sevennet-0")
    static let model: (any Potential)? = try? ModelFile.load(path).potential
    static let skipMessage = Comment(rawValue: "SevenNet-0 weights not found at \(path): run 'relaxft models pull sevennet-0' (or set RELAXFT_HOME)")

    static func setup(_ model: any Potential, mode: GradientMode) -> (RelaxationExample, BPTTSettings, [String: Tensor], [String: Tensor]) {
        // 8-atom Si cell rattled by 0.1 Å; the target is the start moved by a further random 0.05 Å.
        let s = rattledSilicon(repeats: 1, vacancy: false, rattle: 0.1, seed: 21)
        var rng = SeededGenerator(seed: 5)
        let example = RelaxationExample(name: "si8", initial: s, target: s.positions + rng.normalTensor([s.count, 3], scale: 0.05))
        var settings = BPTTSettings(relaxer: FIRE(), steps: 10)
        settings.mode = mode
        let params = Dictionary(uniqueKeysWithValues: model.parameters.map { ($0.key, $0.value) })
        let hyper = Dictionary(uniqueKeysWithValues: settings.relaxer.hyperparameters.map { ($0.key, $0.value) })
        return (example, settings, params, hyper.mapValues { Tensor(scalar: $0) })
    }

    /// The gradient of the relaxed-structure loss after 10 FIRE steps with SevenNet-0, by backpropagation through
    /// the steps (∂F/∂θ of the equivariant network on every step), against five-point differences of the
    /// unrolled loss for randomly chosen weights.
    @Test(.enabled(if: model != nil, skipMessage))
    func tenFIREStepsGradientMatchesFiniteDifferences() throws {
        let model = Self.model!
        let (example, settings, params, _) = Self.setup(model, mode: .full)
        let hyper = Dictionary(uniqueKeysWithValues: settings.relaxer.hyperparameters.map { ($0.key, $0.value) })
        let r = relaxationLossAndGradient(example, potential: model, parameters: params, hyper: hyper, settings: settings)
        #expect(r.steps == 10)
        var rs = RelaxationSettings()
        rs.fmax = 0
        rs.maxSteps = 10
        func loss(_ p: [String: Tensor]) -> Double {
            var m = model
            for (k, v) in p { m.parameters[k] = v }
            let x = relax(example.initial, potential: m, relaxer: FIRE(), settings: rs).structure.positions
            return StructureLoss.deltaQ(Variable(constant: x), target: example.target, masses: example.initial.masses,
                                        cell: example.initial.cell, pbc: example.initial.pbc).scalar
        }
        #expect(abs(loss(params) - r.loss) <= 1e-14 * r.loss)
        var rng = SeededGenerator(seed: 6)
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
            print("SevenNet-0 BPTT (10 FIRE steps) ∂L/∂\(name)[\(k)]: tape \(tape), five-point FD \(fd)")
            #expect(abs(tape - fd) <= 1e-5 * max(abs(tape), abs(fd)) + 1e-6 * scale, "∂L/∂\(name)[\(k)]: \(tape) vs \(fd)")
        }
    }

    /// Checkpointed BPTT recomputes every segment with its backward recorded and must give the same bits as the
    /// full recording: the fused convolution's recorded and unrecorded backward passes run the same kernels.
    @Test func checkpointedEqualsFullBitForBitSmallModel() throws {
        try Self.checkpointEqualsFull(try smallSevenNet())
    }

    @Test(.enabled(if: model != nil, skipMessage))
    func checkpointedEqualsFullBitForBitSevenNet0() throws {
        try Self.checkpointEqualsFull(Self.model!)
    }

    static func checkpointEqualsFull(_ model: any Potential) throws {
        let (example, full, params, _) = setup(model, mode: .full)
        let hyper = Dictionary(uniqueKeysWithValues: full.relaxer.hyperparameters.map { ($0.key, $0.value) })
        let a = relaxationLossAndGradient(example, potential: model, parameters: params, hyper: hyper, settings: full)
        #expect(a.gradients.values.contains { $0.maxAbs > 0 })
        var ck = full
        ck.mode = .checkpoint(every: 3)
        let b = relaxationLossAndGradient(example, potential: model, parameters: params, hyper: hyper, settings: ck)
        #expect(a.loss.bitPattern == b.loss.bitPattern)
        for (name, g) in a.gradients { #expect(b.gradients[name]!.bitwiseEqual(g), "∂L/∂\(name)") }
        #expect(b.tapeNodes < a.tapeNodes)
    }
}
