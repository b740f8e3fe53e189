import Atoms
import Foundation
import Testing
import Tape
@testable import Potentials

/// Metadata of a small SevenNet with the SevenNet-0 layout: three blocks, degrees up to 3 (filter and features),
/// four elements, so that derivative checks run in milliseconds and without the pulled weights.
func syntheticSevenNetMetadata(irreps: [String] = ["6x0e", "6x0e+4x1e+2x2e+1x3e", "5x0e+3x1e+2x2e", "6x0e"], lmax: Int = 3) -> [String: String] {
    let irrepsJSON = "[" + irreps.map { "\"\($0)\"" }.joined(separator: ", ") + "]"
    return ["relaxft_kind": "sevennet", "cutoff": "4.0", "cutoff_on": "3.4", "radial_basis": "bessel", "radial_basis_size": "5",
            "cutoff_function": "XPLOR", "lmax": "\(lmax)", "channel": "6", "readout_hidden": "3", "irreps": irrepsJSON,
            "weight_nn_hidden": "[7, 5]", "conv_denominator": "[" + Array(repeating: "2.5", count: irreps.count - 1).joined(separator: ", ") + "]",
            "elements": "H,C,O,Si"]
}

func syntheticSevenNet(seed: UInt64 = 3, metadata: [String: String] = syntheticSevenNetMetadata()) throws -> SevenNet {
    var rng = SeededGenerator(seed: seed)
    var p = OrderedDictionary<Tensor>()
    for (name, shape) in try SevenNet.parameterShapes(metadata: metadata) {
        switch name {
        case "edge_embedding.basis_function.coeffs": p[name] = Tensor((1...shape[0]).map { Double($0) * Double.pi / 4 * (1 + 0.05 * rng.normal()) })
        case "rescale_atomic_energy.shift": p[name] = rng.normalTensor(shape) - 4
        case "rescale_atomic_energy.scale": p[name] = rng.normalTensor(shape, scale: 0.1) + 1.5
        default: p[name] = rng.normalTensor(shape)
        }
    }
    return try SevenNet(parameters: p, metadata: metadata)
}

@Suite struct SevenNetDerivativeTests {
    static func energy(_ model: SevenNet, _ s: Structure, parameter name: String) -> ([Variable]) -> Variable { energyOf(model, s, parameter: name) }

    static let parameterNames = ["edge_embedding.basis_function.coeffs", "1_convolution.weight_nn.layer2.weight", "0_self_interaction_1.linear.weight",
                                 "1_self_interaction_2.linear.weight", "2_self_connection_intro.linear.weight", "rescale_atomic_energy.scale"]

    @Test func forcesAndParameterGradientsMatchCentralDifferences() throws {
        let model = try syntheticSevenNet()
        let (s, _) = CHGNetFixture.structure("sic_zincblende_8")
        for name in Self.parameterNames {
            let r = GradCheck.firstOrder(Self.energy(model, s, parameter: name), at: [s.positions, model.parameters[name]!], step: 1e-6)
            print("SevenNet (synthetic) forces and ∂E/∂\(name) vs central differences: \(r)")
            #expect(r.passed(tolerance: 1e-7), "\(name): \(r)")
        }
    }

    @Test func stressMatchesStrainDifferences() throws {
        let model = try syntheticSevenNet()
        for name in ["si8_triclinic_strained", "sio2_alpha_quartz"] {
            let (s, _) = CHGNetFixture.structure(name)
            let sys = AtomicSystem(s, cutoff: model.cutoff + 0.5)
            let cell = Variable(constant: s.cell.reshaped([1, 3, 3])), x = Variable(constant: s.positions)
            let r = GradCheck.firstOrder({ v in
                let (xs, cs) = SevenNet.strained(sys, positions: x, cells: cell, strain: v[0])
                return model.energies(sys, positions: xs, cells: cs, parameters: model.constantParameters).sum()
            }, at: [Tensor.zeros([1, 3, 3])], step: 1e-6)
            #expect(r.passed(tolerance: 1e-7), "\(name) ∂E/∂ε: \(r)")
            let sigma = model.predict(sys, positions: s.positions, cells: s.cell.reshaped([1, 3, 3]), stress: true).evaluation.stresses!
            let v = abs(s.cell.determinant3x3)
            let numeric = r.numeric[0].reshaped([3, 3])
            let sym = (numeric + numeric.transposed()) * (0.5 / v)
            #expect(sigma.reshaped([3, 3]).maxAbsDifference(sym) <= 1e-8 * max(1, sym.maxAbs), "\(name): stress")
        }
    }

    /// Hessian-vector products in (x, θ) by double backward against differences of the tape gradient: the
    /// recorded backward rules of every operation SevenNet uses (the fused convolution's partials included).
    @Test func secondDerivativesMatchDifferencesOfGradients() throws {
        let model = try syntheticSevenNet()
        let (s, _) = CHGNetFixture.structure("sic_zincblende_8")
        for name in Self.parameterNames {
            let r = GradCheck.secondOrder(Self.energy(model, s, parameter: name), at: [s.positions, model.parameters[name]!], step: 1e-5, seed: 3)
            print("SevenNet (synthetic) Hessian-vector product, x and \(name): \(r)")
            #expect(r.passed(tolerance: 1e-6), "\(name): \(r)")
        }
    }

    /// E is invariant and F, σ rotate under a rotation of the structure; translations and permutations change
    /// nothing.
    @Test func invariantUnderRotationTranslationAndPermutation() throws {
        let model = try syntheticSevenNet()
        var rng = SeededGenerator(seed: 12)
        for name in ["sio2_alpha_quartz", "si2h6_molecule_nonperiodic"] {
            let (s, _) = CHGNetFixture.structure(name)
            func eval(_ t: Structure) -> Evaluation {
                model.predict(AtomicSystem(t, cutoff: model.cutoff), positions: t.positions, cells: t.cell.reshaped([1, 3, 3]), stress: true).evaluation
            }
            let a = eval(s)
            let rot = randomRotation(&rng)
            var r = s
            r.positions = Tensor.matmul(s.positions, rot, transposeB: true)
            r.cell = Tensor.matmul(s.cell, rot, transposeB: true)
            let b = eval(r)
            #expect(abs(a.energy - b.energy) <= 1e-12 * max(1, abs(a.energy)), "\(name): rotated energy")
            #expect(b.forces.maxAbsDifference(Tensor.matmul(a.forces, rot, transposeB: true)) <= 1e-11, "\(name): rotated forces")
            let sr = Tensor.matmul(Tensor.matmul(rot, a.stresses!.reshaped([3, 3])), rot, transposeB: true)
            #expect(b.stresses!.reshaped([3, 3]).maxAbsDifference(sr) <= 1e-12, "\(name): rotated stress")

            var t = s
            t.positions = s.positions + Tensor(shape: [1, 3], [0.37, -1.21, 2.05])
            let c = eval(t)
            #expect(abs(a.energy - c.energy) <= 1e-12 * max(1, abs(a.energy)) && c.forces.maxAbsDifference(a.forces) <= 1e-11, "\(name): translation")

            let perm = Array((0..<s.count).reversed())
            let q = Structure(numbers: perm.map { s.numbers[$0] }, positions: s.positions.gatherRows(perm), cell: s.cell, pbc: s.pbc)
            let d = eval(q)
            #expect(abs(a.energy - d.energy) <= 1e-12 * max(1, abs(a.energy)) && d.forces.maxAbsDifference(a.forces.gatherRows(perm)) <= 1e-11,
                    "\(name): permutation")
        }
    }

    @Test func batchedStructuresEqualSeparateOnes() throws {
        let model = try syntheticSevenNet()
        let (a, _) = CHGNetFixture.structure("sio2_alpha_quartz"), (b, _) = CHGNetFixture.structure("si2h6_molecule_nonperiodic")
        let sys = AtomicSystem(structures: [a, b], lists: [a, b].map { NeighborList.build($0, cutoff: 4.5) })
        let x = Tensor.concatenate([a.positions, b.positions], axis: 0)
        let cells = Tensor.concatenate([a.cell.reshaped([1, 3, 3]), b.cell.reshaped([1, 3, 3])], axis: 0)
        let both = model.predict(sys, positions: x, cells: cells, stress: true)
        for (k, s) in [a, b].enumerated() {
            let one = model.predict(AtomicSystem(s, cutoff: 4.5), positions: s.positions, cells: s.cell.reshaped([1, 3, 3]), stress: true)
            let rows = (k == 0 ? 0 : a.count)..<(k == 0 ? a.count : a.count + b.count)
            #expect(abs(both.evaluation.energies[flat: k] - one.evaluation.energy) <= 1e-12 * abs(one.evaluation.energy))
            #expect(both.evaluation.forces.slice(axis: 0, rows).maxAbsDifference(one.evaluation.forces) <= 1e-12)
            #expect(both.evaluation.stresses!.slice(axis: 0, k..<(k + 1)).maxAbsDifference(one.evaluation.stresses!) <= 1e-13)
            #expect(both.atomEnergies.slice(axis: 0, rows).maxAbsDifference(one.atomEnergies) <= 1e-12)
        }
    }

    @Test func modelFileRoundTripAndConfigErrors() throws {
        let model = try syntheticSevenNet()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("relaxft-sevennet-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("m.safetensors").path
        try ModelFile.save(model, to: path)
        let back = try #require(try PotentialSpec.parse(path) as? SevenNet)
        #expect(back.parameters == model.parameters)
        let (s, _) = CHGNetFixture.structure("si8_rattle_seed7")
        let sys = AtomicSystem(s, cutoff: 4)
        #expect(back.evaluate(sys, positions: s.positions, cells: s.cell.reshaped([1, 3, 3])).energy
                == model.evaluate(sys, positions: s.positions, cells: s.cell.reshaped([1, 3, 3])).energy)
        var meta = model.metadata
        meta["irreps"] = "[\"6x0e\", \"4x1o\", \"6x0e\"]"
        #expect(throws: PotentialSpecError.self) { try SevenNet(parameters: model.parameters, metadata: meta) }
        meta = model.metadata
        meta["cutoff_on"] = "4.5"
        #expect(throws: PotentialSpecError.self) { try SevenNet(parameters: model.parameters, metadata: meta) }
        var params = model.parameters
        params["1_convolution.weight_nn.layer2.weight"] = Tensor.zeros([5, 3])
        #expect(throws: PotentialSpecError.self) { try SevenNet(parameters: params, metadata: model.metadata) }
    }

    /// One energy is O(blocks × a few dozen) tape nodes whatever the number of atoms or edges: the convolution
    /// is one node per block.
    @Test func tapeNodesPerEnergyDoNotGrowWithTheSystem() throws {
        let model = try syntheticSevenNet()
        func nodes(_ s: Structure) -> Int {
            let tape = Tape()
            let x = tape.variable(s.positions)
            _ = model.energies(AtomicSystem(s, cutoff: model.cutoff), positions: x, cells: Variable(constant: s.cell.reshaped([1, 3, 3])),
                               parameters: model.parameterLeaves(on: tape))
            return tape.nodeCount
        }
        let small = nodes(Structure.diamond(repeats: 1)), large = nodes(Structure.diamond(repeats: 2))
        print("SevenNet (synthetic, 3 blocks) tape nodes per energy: \(small) (8 atoms), \(large) (64 atoms)")
        #expect(small == large)
        #expect(small <= 70 * model.blocks.count + 80)
    }

    /// An atom without neighbours within the cutoff (no edges at all): finite energy, zero force, no crash; and
    /// the same energy as the atom far from a second structure in a batch.
    @Test func isolatedAtoms() throws {
        let model = try syntheticSevenNet()
        let lone = Structure(numbers: [8], positions: Tensor(shape: [1, 3], [1, 2, 3]), cell: Tensor.identity(3) * 20, pbc: [false, false, false])
        let a = model.evaluate(AtomicSystem(lone, cutoff: model.cutoff), positions: lone.positions, cells: lone.cell.reshaped([1, 3, 3]))
        #expect(a.energy.isFinite && a.forces.maxAbs == 0)
        let (b, _) = CHGNetFixture.structure("sic_zincblende_8")
        let sys = AtomicSystem(structures: [lone, b], lists: [lone, b].map { NeighborList.build($0, cutoff: model.cutoff) })
        let both = model.evaluate(sys, positions: Tensor.concatenate([lone.positions, b.positions], axis: 0),
                                  cells: Tensor.concatenate([lone.cell.reshaped([1, 3, 3]), b.cell.reshaped([1, 3, 3])], axis: 0))
        #expect(both.energies[flat: 0] == a.energy)
    }

    @Test func legacyVersionsAreRecognised() {
        #expect(SevenNetWeights.versionBefore("0.9.1", "0.11.0"))
        #expect(SevenNetWeights.versionBefore("0.11.0.dev0", "0.11.0"))
        #expect(!SevenNetWeights.versionBefore("0.11.0", "0.11.0") && !SevenNetWeights.versionBefore("0.13.0", "0.11.0"))
    }

    /// SevenNet-0's block layout: the paths, their order and the weight-column permutation of old checkpoints, as
    /// listed by the golden state file (checkpoint columns → loaded columns).
    @Test func legacyColumnOrderOfSevenNet0() {
        let built = SevenNet.tensorProduct(input: [128, 64, 32], filterDegree: 2, outputDegree: 2, scale: 1)
        #expect(built.product.weightCount == 960)
        #expect(built.product.outputChannels == [224, 384, 352])
        // new index → old index, from the state file's mapping table.
        #expect(built.checkpointOrder == [0, 4, 12, 1, 3, 5, 7, 10, 13, 2, 6, 8, 9, 11, 14])
        let last = SevenNet.tensorProduct(input: [128, 64, 32], filterDegree: 2, outputDegree: 0, scale: 1)
        #expect(last.product.weightCount == 224 && last.checkpointOrder == [0, 1, 2])
    }
}

@Suite struct SevenNetPretrainedDerivativeTests {
    /// Forces of SevenNet-0 against central differences, and ∂E/∂θ and the mixed ∂²E/∂x∂θ (the derivative of the
    /// forces BPTT needs) against five-point differences, for randomly chosen weights.
    @Test(.enabled(if: SevenNetFixture.model != nil, "SevenNet-0 weights not pulled (relaxft models pull sevennet-0)"))
    func pretrainedDerivativesMatchFiniteDifferences() throws {
        let (s, _) = CHGNetFixture.structure("si2_primitive_strained")
        checkPretrainedDerivatives(SevenNetFixture.model!, s, label: "SevenNet-0", probe: "reduce_hidden_to_energy.linear.weight", forceTolerance: 1e-7)
    }

    /// With Double couplings SevenNet-0 is rotation invariant to rounding (the package, with float32 couplings,
    /// only to 2.6e-10 eV).
    @Test(.enabled(if: SevenNetFixture.model != nil, "SevenNet-0 weights not pulled (relaxft models pull sevennet-0)"))
    func pretrainedIsRotationInvariant() throws {
        let model = SevenNetFixture.model!
        var rng = SeededGenerator(seed: 2)
        let (s, _) = CHGNetFixture.structure("sic_zincblende_8")
        let rot = randomRotation(&rng)
        var r = s
        r.positions = Tensor.matmul(s.positions, rot, transposeB: true)
        r.cell = Tensor.matmul(s.cell, rot, transposeB: true)
        let a = model.evaluate(AtomicSystem(s, cutoff: 5), positions: s.positions, cells: s.cell.reshaped([1, 3, 3]))
        let b = model.evaluate(AtomicSystem(r, cutoff: 5), positions: r.positions, cells: r.cell.reshaped([1, 3, 3]))
        let de = abs(a.energy - b.energy), df = b.forces.maxAbsDifference(Tensor.matmul(a.forces, rot, transposeB: true))
        print("SevenNet-0 rotated SiC: |ΔE| \(de) eV, |ΔF| \(df) eV/Å")
        #expect(de <= 1e-12 && df <= 1e-12)
    }
}
