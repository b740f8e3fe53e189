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

    /// The gradient of the relaxed-structure loss after 10 FIRE steps with SevenNet-0, by backpropagation through
    /// the steps (∂F/∂θ of the equivariant network on every step), against five-point differences of the
    /// unrolled loss for randomly chosen weights.
    @Test(.enabled(if: model != nil, skipMessage))
    func tenFIREStepsGradientMatchesFiniteDifferences() throws {
        checkTenFIREStepsGradient(Self.model!, label: "SevenNet-0")
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

    /// 10 FIRE steps of the rattled 8-atom Si cell, fully recorded and checkpointed every 3 steps.
    static func checkpointEqualsFull(_ model: any Potential) throws {
        let (example, full, _, _) = tenFIREStepsProblem(model)
        let a = relaxationLossAndGradient(example, potential: model, settings: full)
        #expect(a.gradients.values.contains { $0.maxAbs > 0 })
        var ck = full
        ck.mode = .checkpoint(every: 3)
        let b = relaxationLossAndGradient(example, potential: model, settings: ck)
        #expect(a.loss.bitPattern == b.loss.bitPattern)
        for (name, g) in a.gradients { #expect(b.gradients[name]!.bitwiseEqual(g), "∂L/∂\(name)") }
        #expect(b.tapeNodes < a.tapeNodes)
    }
}
