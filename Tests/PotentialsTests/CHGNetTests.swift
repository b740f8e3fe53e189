import Atoms
import Foundation
import Testing
import Tape
@testable import Potentials

/// The pulled CHGNet 0.3.0 model (nil when `relaxft models pull chgnet-0.3.0` has not been run for this
/// RELAXFT_HOME) and the golden outputs of the real chgnet package (Fixtures/chgnet).
enum CHGNetFixture {
    static let modelPath = ModelStore.path(of: CHGNetWeights.modelName)
    static let model: CHGNet? = try? ModelFile.load(modelPath).potential as? CHGNet
    static var available: Bool { model != nil }
    static let skipMessage = Comment(rawValue: "CHGNet weights not found at \(modelPath): run 'relaxft models pull chgnet-0.3.0' (or set RELAXFT_HOME)")

    static func golden() -> [String: Any] {
        let data = try! Data(contentsOf: repoRoot.appendingPathComponent("Fixtures/chgnet/golden-float64.json"))
        return (try! JSONSerialization.jsonObject(with: data) as! [String: Any])["structures"] as! [String: Any]
    }

    static var names: [String] { golden().keys.sorted() }

    static func structure(_ name: String) -> (Structure, [String: Any]) {
        let v = golden()[name] as! [String: Any]
        let numbers = v["numbers"] as! [Int]
        let s = Structure(numbers: numbers, positions: Tensor(shape: [numbers.count, 3], flat(v["positions"])),
                          cell: Tensor(shape: [3, 3], flat(v["cell"])), pbc: v["pbc"] as! [Bool])
        return (s, v)
    }

    /// A system with a 0.5 Å skin beyond the 6 Å cutoff, so that the model's own filtering is exercised.
    static func system(_ s: Structure, skin: Double = 0.5) -> AtomicSystem { AtomicSystem(s, cutoff: 6.0 + skin) }
}

@Suite struct CHGNetGoldenTests {
    static let names = ["si_diamond_2x2x2", "si_vac_2x2x2_fixture", "si_vac_3x3x3_fixture", "si8_rattle_seed7", "si8_triclinic_strained",
                        "si2_primitive_strained", "sio2_alpha_quartz", "sic_zincblende_8", "si2h6_molecule_nonperiodic"]

    @Test func goldenFixtureListsTheNineStructures() {
        #expect(CHGNetFixture.names == Self.names.sorted())
    }

    @Test(.enabled(if: CHGNetFixture.available, CHGNetFixture.skipMessage), arguments: names)
    func matchesRealCHGNetInFloat64(name: String) throws {
        let model = CHGNetFixture.model!
        let (s, ref) = CHGNetFixture.structure(name)
        let sys = CHGNetFixture.system(s)
        // Graph counts first: they locate a wrong graph before any number is compared.
        let g = CHGNetGraph.build(sys, positions: s.positions, cells: s.cell.reshaped([1, 3, 3]), atomCutoff: 6, bondCutoff: 3)
        let counts = ref["graph"] as! [String: Int]
        #expect(g.edgeCount == counts["n_directed_edges"], "\(name): directed edges")
        #expect(g.bondCount == counts["n_undirected_bonds"], "\(name): undirected bonds")
        #expect(g.angleCount == counts["n_bond_graph_rows"], "\(name): bond-graph rows")

        let pr = model.predict(sys, positions: s.positions, cells: s.cell.reshaped([1, 3, 3]), stress: true)
        let e = ref["energy"] as! Double
        let eErr = abs(pr.evaluation.energy - e) / abs(e)
        let f = Tensor(shape: [s.count, 3], flat(ref["forces"]))
        let fErr = pr.evaluation.forces.maxAbsDifference(f)
        let sigma = Tensor(shape: [3, 3], flat(ref["stress_3x3"]))
        let sErr = pr.evaluation.stresses!.reshaped([3, 3]).maxAbsDifference(sigma) / sigma.maxAbs
        let site = Tensor(ref["site_energies"] as! [Double]), mag = Tensor(ref["magmoms"] as! [Double])
        let siteErr = pr.siteEnergies.maxAbsDifference(site), magErr = pr.magmoms.maxAbsDifference(mag)
        print("CHGNet \(name): |ΔE|/|E| \(eErr), max|ΔF| \(fErr) eV/Å, max|Δσ|/max|σ| \(sErr), max|Δe_site| \(siteErr) eV, max|Δm| \(magErr) μB")
        #expect(eErr < 1e-8, "\(name): energy \(pr.evaluation.energy) vs \(e)")
        #expect(fErr < 1e-6, "\(name): forces")
        #expect(sErr < 1e-6, "\(name): stress")
        #expect(siteErr < 1e-8, "\(name): site energies")
        #expect(magErr < 1e-8, "\(name): magmoms")
    }
}

/// A small CHGNet with random weights and the 0.3.0 layout (hidden int in the conv gated MLPs, 0 in the angle
/// updates, a list in the readout), so that derivative checks run without the pulled weights.
func syntheticCHGNet(seed: UInt64 = 7, width a: Int = 8, radial r: Int = 5, order: Int = 2, hidden h: Int = 8, nConv: Int = 3) throws -> CHGNet {
    var rng = SeededGenerator(seed: seed)
    var p = OrderedDictionary<Tensor>()
    func put(_ name: String, _ shape: [Int], scale: Double? = nil, shift: Double = 0) {
        let fanIn = shape.count > 1 ? shape[1] : 1
        p[name] = rng.normalTensor(shape, scale: scale ?? 1 / Double(fanIn).squareRoot()) + shift
    }
    put("composition_model.fc.weight", [1, 94], scale: 1, shift: -3)
    put("atom_embedding.embedding.weight", [94, a], scale: 1)
    p["bond_basis_expansion.rbf_expansion_ag.frequencies"] = Tensor((1...r).map { Double.pi * Double($0) + 0.1 * rng.normal() })
    p["bond_basis_expansion.rbf_expansion_bg.frequencies"] = Tensor((1...r).map { Double.pi * Double($0) + 0.1 * rng.normal() })
    p["angle_basis_expansion.fourier_expansion.frequencies"] = Tensor((1...order).map { Double($0) + 0.1 * rng.normal() })
    for n in ["bond_embedding", "bond_weights_ag", "bond_weights_bg"] { put(n + ".weight", [a, r]) }
    put("angle_embedding.weight", [a, 2 * order + 1])
    func gated(_ prefix: String, inputs: Int, hidden: Int) {
        for branch in ["mlp_core", "mlp_gate"] {
            if hidden == 0 {
                put("\(prefix).\(branch).layers.1.weight", [a, inputs]); put("\(prefix).\(branch).layers.1.bias", [a], scale: 0.1)
            } else {
                put("\(prefix).\(branch).layers.0.weight", [hidden, inputs]); put("\(prefix).\(branch).layers.0.bias", [hidden], scale: 0.1)
                put("\(prefix).\(branch).layers.3.weight", [a, hidden]); put("\(prefix).\(branch).layers.3.bias", [a], scale: 0.1)
            }
        }
        for bn in ["bn1", "bn2"] { put("\(prefix).\(bn).weight", [a], scale: 0.3, shift: 1); put("\(prefix).\(bn).bias", [a], scale: 0.3) }
    }
    for l in 0..<nConv {
        gated("atom_conv_layers.\(l).twoBody_atom", inputs: 3 * a, hidden: h)
        put("atom_conv_layers.\(l).mlp_out.layers.1.weight", [a, a])
        if l < nConv - 1 {
            gated("bond_conv_layers.\(l).twoBody_bond", inputs: 4 * a, hidden: h)
            put("bond_conv_layers.\(l).mlp_out.layers.1.weight", [a, a])
            gated("angle_layers.\(l).twoBody_bond", inputs: 4 * a, hidden: 0)
        }
    }
    put("site_wise.weight", [1, a]); put("site_wise.bias", [1], scale: 0.1)
    put("readout_norm.weight", [a], scale: 0.3, shift: 1); put("readout_norm.bias", [a], scale: 0.3)
    put("mlp.layers.0.weight", [h, a]); put("mlp.layers.0.bias", [h], scale: 0.1)
    put("mlp.layers.2.weight", [h, h]); put("mlp.layers.2.bias", [h], scale: 0.1)
    put("mlp.layers.5.weight", [1, h]); put("mlp.layers.5.bias", [1], scale: 0.1)
    let meta = ["atom_graph_cutoff": "6", "bond_graph_cutoff": "3", "cutoff_coeff": "8", "n_conv": "\(nConv)", "non_linearity": "silu",
                "gMLP_norm": "layer", "readout_norm": "layer", "mlp_first": "true", "update_bond": "true", "update_angle": "true"]
    return try CHGNet(parameters: p, metadata: meta)
}

@Suite struct CHGNetDerivativeTests {
    /// Energy of `s` as a function of positions and one named parameter tensor.
    static func energy(_ model: CHGNet, _ s: Structure, parameter name: String) -> ([Variable]) -> Variable {
        let sys = CHGNetFixture.system(s)
        let cells = Variable(constant: s.cell.reshaped([1, 3, 3]))
        return { v in
            var p = model.constantParameters
            p[name] = v[1]
            return model.energies(sys, positions: v[0], cells: cells, parameters: p).sum()
        }
    }

    @Test func forcesMatchCentralDifferencesSynthetic() throws {
        let model = try syntheticCHGNet()
        let (s, _) = CHGNetFixture.structure("sic_zincblende_8")
        let e = Self.energy(model, s, parameter: "mlp.layers.0.bias")
        // h = 1e-5 Å: the golden README's advice for CHGNet's high-frequency radial basis.
        let r = GradCheck.firstOrder(e, at: [s.positions, model.parameters["mlp.layers.0.bias"]!], step: 1e-5)
        print("CHGNet (synthetic) forces and ∂E/∂b vs central differences: \(r)")
        #expect(r.maxAbsoluteError < 1e-7, "\(r)")
        #expect(r.relativeErrors[1] < 1e-7, "\(r)")
    }

    @Test func secondDerivativesMatchDifferencesOfGradientsSynthetic() throws {
        // Hessian-vector products in (x, θ) by double backward against central differences of the tape gradient:
        // exercises the recorded backward rules of every fused operation (gathered sums with SiLU, gated norms,
        // layer norm, linear, arccos) for several parameter tensors.
        let model = try syntheticCHGNet()
        let (s, _) = CHGNetFixture.structure("sic_zincblende_8")
        for name in ["atom_conv_layers.1.twoBody_atom.mlp_gate.layers.0.weight", "bond_conv_layers.0.twoBody_bond.bn1.weight",
                     "angle_layers.0.twoBody_bond.mlp_core.layers.1.bias", "bond_basis_expansion.rbf_expansion_ag.frequencies",
                     "angle_basis_expansion.fourier_expansion.frequencies", "readout_norm.weight"] {
            let r = GradCheck.secondOrder(Self.energy(model, s, parameter: name), at: [s.positions, model.parameters[name]!], step: 1e-5, seed: 3)
            print("CHGNet (synthetic) Hessian-vector product, x and \(name): \(r)")
            #expect(r.passed(tolerance: 1e-6), "\(name): \(r)")
        }
    }

    @Test func batchedStructuresEqualSeparateOnes() throws {
        let model = try syntheticCHGNet()
        let (a, _) = CHGNetFixture.structure("sio2_alpha_quartz"), (b, _) = CHGNetFixture.structure("si2h6_molecule_nonperiodic")
        let lists = [a, b].map { NeighborList.build($0, cutoff: 6.5) }
        let sys = AtomicSystem(structures: [a, b], lists: lists)
        let x = Tensor.concatenate([a.positions, b.positions], axis: 0)
        let cells = Tensor.concatenate([a.cell.reshaped([1, 3, 3]), b.cell.reshaped([1, 3, 3])], axis: 0)
        let both = model.predict(sys, positions: x, cells: cells, stress: true)
        for (k, s) in [a, b].enumerated() {
            let one = model.predict(CHGNetFixture.system(s), positions: s.positions, cells: s.cell.reshaped([1, 3, 3]), stress: true)
            let rows = (k == 0 ? 0 : a.count)..<(k == 0 ? a.count : a.count + b.count)
            #expect(abs(both.evaluation.energies[flat: k] - one.evaluation.energy) < 1e-12 * abs(one.evaluation.energy))
            #expect(both.evaluation.forces.slice(axis: 0, rows).maxAbsDifference(one.evaluation.forces) < 1e-12)
            #expect(both.evaluation.stresses!.slice(axis: 0, k..<(k + 1)).maxAbsDifference(one.evaluation.stresses!) < 1e-12)
            #expect(both.magmoms.slice(axis: 0, rows).maxAbsDifference(one.magmoms) < 1e-12)
        }
    }

    @Test func modelFileRoundTripAndConfigErrors() throws {
        let model = try syntheticCHGNet()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("relaxft-chgnet-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("m.safetensors").path
        try ModelFile.save(model, to: path)
        let back = try #require(try PotentialSpec.parse(path) as? CHGNet)
        #expect(back.parameters == model.parameters)
        let (s, _) = CHGNetFixture.structure("si8_rattle_seed7")
        let sys = CHGNetFixture.system(s)
        #expect(back.evaluate(sys, positions: s.positions, cells: s.cell.reshaped([1, 3, 3])).energy
                == model.evaluate(sys, positions: s.positions, cells: s.cell.reshaped([1, 3, 3])).energy)
        var meta = model.metadata
        meta["non_linearity"] = "relu"
        #expect(throws: PotentialSpecError.self) { try CHGNet(parameters: model.parameters, metadata: meta) }
        var params = model.parameters
        params["readout_norm.weight"] = nil
        #expect(throws: PotentialSpecError.self) { try CHGNet(parameters: params, metadata: model.metadata) }
    }

    @Test func missingModelNameTellsHowToPullIt() {
        // A name that is never in the store: the error names the command that fetches pullable models.
        do {
            _ = try PotentialSpec.parse("chgnet-0.0.0")
            Issue.record("expected an error")
        } catch {
            #expect("\(error)".contains("models that can be pulled: chgnet-0.3.0"), "\(error)")
        }
        #expect(ModelStore.isModelName("chgnet-0.3.0"))
        #expect(!ModelStore.isModelName("sw:sigma=2") && !ModelStore.isModelName("lj") && !ModelStore.isModelName("dir/m.safetensors"))
    }
}

@Suite struct CHGNetPretrainedTests {
    @Test(.enabled(if: CHGNetFixture.available, CHGNetFixture.skipMessage))
    func convertedTensorsMatchTheCheckpointListing() throws {
        // Fixtures/chgnet/state.txt: name | shape | dtype | numel | kind | sum | sum|x| | first element.
        let text = try String(contentsOf: repoRoot.appendingPathComponent("Fixtures/chgnet/state.txt"), encoding: .utf8)
        let model = CHGNetFixture.model!
        var checked = 0
        for line in text.split(separator: "\n") where !line.hasPrefix("#") && line.contains(" | ") {
            let f = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            let t = try #require(model.parameters[f[0]], "\(f[0]) missing")
            let shape = f[1].trimmingCharacters(in: CharacterSet(charactersIn: "(),")).split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces))! }
            #expect(t.shape == shape, "\(f[0]) shape")
            let sum = Double(f[5])!, absSum = Double(f[6])!, first = Double(f[7])!
            var s = 0.0, sa = 0.0
            t.withUnsafeBufferPointer { p in for v in p { s += v; sa += abs(v) } }
            #expect(abs(s - sum) <= 1e-9 * max(1, absSum), "\(f[0]) sum \(s) vs \(sum)")
            #expect(abs(sa - absSum) <= 1e-9 * max(1, absSum), "\(f[0]) sum|x|")
            #expect(t[flat: 0] == first, "\(f[0]) first element")
            checked += 1
        }
        #expect(checked == 136)
        #expect(model.parameterCount == CHGNetWeights.parameterCount)
        #expect(try PotentialSpec.parse("chgnet-0.3.0").kind == "chgnet")
    }

    @Test(.enabled(if: CHGNetFixture.available, CHGNetFixture.skipMessage))
    func pretrainedDerivativesMatchFiniteDifferences() throws {
        // The basis has frequencies up to ~16 Å⁻¹; the last angle update and the magmom head feed nothing, so the
        // weights are drawn among those with a nonzero ∂E/∂θ.
        let (s, _) = CHGNetFixture.structure("si2_primitive_strained")
        checkPretrainedDerivatives(CHGNetFixture.model!, s, label: "CHGNet 0.3.0", probe: "mlp.layers.7.bias", forceTolerance: 1e-6)
    }
}
