import Atoms
import Foundation
import Testing
import Tape
@testable import Potentials

/// The pulled SevenNet-0 model (nil when `relaxft models pull sevennet-0` has not been run for this RELAXFT_HOME)
/// and the golden outputs of the real sevenn package: `$RELAXFT_SEVENNET_GOLDEN`, else
/// `Fixtures/sevennet` (copied from the peers' SevenNet golden set, made with sevenn 0.13.0 and e3nn 0.6.0;
/// see its README). Tests that need either skip when it is absent.
enum SevenNetFixture {
    static let modelPath = ModelStore.path(of: SevenNetWeights.modelName)
    static let model: SevenNet? = try? ModelFile.load(modelPath).potential as? SevenNet
    static let goldenDirectory: URL = {
        if let d = ProcessInfo.processInfo.environment["RELAXFT_SEVENNET_GOLDEN"], !d.isEmpty { return URL(fileURLWithPath: d) }
        return repoRoot.appendingPathComponent("Fixtures/sevennet")
    }()
    static var goldenAvailable: Bool {
        FileManager.default.fileExists(atPath: goldenDirectory.appendingPathComponent("sevennet-0-float64.json").path)
    }
    static var available: Bool { model != nil && goldenAvailable }
    static let skipMessage = Comment(rawValue: "SevenNet-0 weights (\(modelPath); run 'relaxft models pull sevennet-0') or golden outputs (\(goldenDirectory.path); set RELAXFT_SEVENNET_GOLDEN) not found")

    static func json(_ file: String) -> [String: Any] {
        let data = try! Data(contentsOf: goldenDirectory.appendingPathComponent(file))
        return try! JSONSerialization.jsonObject(with: data) as! [String: Any]
    }

    nonisolated(unsafe) static let golden: [String: Any] = goldenAvailable ? json("sevennet-0-float64.json")["structures"] as! [String: Any] : [:]

    /// The golden structures are the CHGNet set's (Fixtures/chgnet, bit for bit: `inputsAreTheCHGNetGoldenInputs`);
    /// the outputs are the package's.
    static func structure(_ name: String) -> (Structure, [String: Any]) {
        (CHGNetFixture.structure(name).0, golden[name] as! [String: Any])
    }

    /// A system with a 0.5 Å skin beyond the 5 Å cutoff, so that the model's own filtering is exercised.
    static func system(_ s: Structure, skin: Double = 0.5) -> AtomicSystem { AtomicSystem(s, cutoff: 5.0 + skin) }
}

@Suite struct SevenNetGoldenTests {
    static let names = ["si_diamond_2x2x2", "si_vac_2x2x2_fixture", "si_vac_3x3x3_fixture", "si8_rattle_seed7", "si8_triclinic_strained",
                        "si2_primitive_strained", "sio2_alpha_quartz", "sic_zincblende_8", "si2h6_molecule_nonperiodic"]

    @Test(.enabled(if: SevenNetFixture.goldenAvailable, SevenNetFixture.skipMessage))
    func inputsAreTheCHGNetGoldenInputs() {
        #expect(SevenNetFixture.golden.keys.sorted() == Self.names.sorted())
        for name in Self.names {
            let v = SevenNetFixture.golden[name] as! [String: Any], (s, _) = CHGNetFixture.structure(name)
            #expect(v["numbers"] as! [Int] == s.numbers && v["pbc"] as! [Bool] == s.pbc, "\(name)")
            #expect(Tensor(shape: [s.count, 3], flat(v["positions"])).bitwiseEqual(s.positions) && Tensor(shape: [3, 3], flat(v["cell"])).bitwiseEqual(s.cell), "\(name)")
        }
    }

    /// Errors of `model` against the float64 golden numbers of one structure.
    static func errors(_ model: SevenNet, _ name: String) -> (edges: Int, refEdges: Int, e: Double, ei: Double, f: Double, s: Double) {
        let (s, ref) = SevenNetFixture.structure(name)
        let sys = SevenNetFixture.system(s)
        let edges = sys.within(5.0, positions: s.positions, cells: s.cell.reshaped([1, 3, 3])).pairs.pairCount
        let pr = model.predict(sys, positions: s.positions, cells: s.cell.reshaped([1, 3, 3]), stress: true)
        let eErr = abs(pr.evaluation.energy - (ref["energy"] as! Double)) / Double(s.count)
        let eiErr = pr.atomEnergies.maxAbsDifference(Tensor(ref["atomic_energies"] as! [Double]))
        let fErr = pr.evaluation.forces.maxAbsDifference(Tensor(shape: [s.count, 3], flat(ref["forces"])))
        let sErr = pr.evaluation.stresses!.reshaped([3, 3]).maxAbsDifference(Tensor(shape: [3, 3], flat(ref["stress_3x3"])))
        return (edges, (ref["graph"] as! [String: Int])["n_directed_edges"]!, eErr, eiErr, fErr, sErr)
    }

    @Test(.enabled(if: SevenNetFixture.available, SevenNetFixture.skipMessage), arguments: names)
    func matchesRealSevenNetInFloat64(name: String) throws {
        let r = Self.errors(SevenNetFixture.model!, name)
        print("SevenNet-0 \(name): |ΔE|/N \(r.e) eV, max|ΔE_i| \(r.ei) eV, max|ΔF| \(r.f) eV/Å, max|Δσ| \(r.s) eV/Å³")
        // Graph first: a wrong graph shows here before any number is compared.
        #expect(r.edges == r.refEdges, "\(name): directed edges")
        // The issue's acceptance thresholds; exact instead of float32-stored Wigner-3j moves the reference by at
        // most 1.1e-9 eV per atom, 3.7e-9 eV/Å and 3e-11 eV/Å³ (golden README).
        #expect(r.e <= 1e-8, "\(name): energy per atom")
        #expect(r.ei <= 1e-8, "\(name): per-atom energies")
        #expect(r.f <= 1e-6, "\(name): forces")
        #expect(r.s <= 1e-8, "\(name): stress")
    }

    /// With the Wigner-3j rounded to float32 as the package stores them, the only difference left is summation
    /// order and libm: agreement to ~1e-13 shows that nothing else differs (e.g. no constant kept in Float). The
    /// stress is the exception: with float32 couplings the model is not exactly rotation invariant, so its virial
    /// is not exactly symmetric (≤ 6.2e-12 eV/Å³ in the golden checks); sevenn reports one triangle of it, relaxft
    /// the symmetric part.
    @Test(.enabled(if: SevenNetFixture.available, SevenNetFixture.skipMessage))
    func matchesToRoundingWithFloat32Couplings() throws {
        let base = SevenNetFixture.model!
        let model = try SevenNet(parameters: base.parameters, metadata: base.metadata, couplingsRoundedToFloat: true)
        var worst = (e: 0.0, ei: 0.0, f: 0.0, s: 0.0)
        for name in Self.names {
            let r = Self.errors(model, name)
            worst = (max(worst.e, r.e), max(worst.ei, r.ei), max(worst.f, r.f), max(worst.s, r.s))
        }
        print("SevenNet-0 with float32 Wigner-3j, worst over 9: |ΔE|/N \(worst.e) eV, |ΔE_i| \(worst.ei) eV, |ΔF| \(worst.f) eV/Å, |Δσ| \(worst.s) eV/Å³")
        #expect(worst.e <= 1e-13 && worst.ei <= 1e-13 && worst.f <= 1e-12 && worst.s <= 1e-11, "\(worst)")
    }

    /// Node features after the embedding and after every gate against the package's module dump for the
    /// 2-atom cell (e3nn layout: per degree, channel-major then m; relaxft keeps m-major within a degree).
    @Test(.enabled(if: SevenNetFixture.available, SevenNetFixture.skipMessage))
    func intermediatesMatchTheModuleDump() throws {
        let model = try SevenNet(parameters: SevenNetFixture.model!.parameters, metadata: SevenNetFixture.model!.metadata, couplingsRoundedToFloat: true)
        let dump = SevenNetFixture.json("sevennet-0-intermediates-float64.json")
        let numbers = dump["numbers"] as! [Int]
        let s = Structure(numbers: numbers, positions: Tensor(shape: [numbers.count, 3], flat(dump["positions"])),
                          cell: Tensor(shape: [3, 3], flat(dump["cell"])), pbc: [true, true, true])
        var mine: [String: [Tensor?]] = [:]
        _ = model.forward(SevenNetFixture.system(s), positions: Variable(constant: s.positions), cells: Variable(constant: s.cell.reshaped([1, 3, 3])),
                          parameters: model.constantParameters, observe: { mine[$0] = $1 })
        var checked = 0
        for m in dump["modules"] as! [[String: Any]] {
            let module = m["module"] as! String
            let key: String
            if module == "onehot_to_feature_x" { key = "embedding" } else if module.hasSuffix("_equivariant_gate") { key = "gate " + module.prefix(1) } else { continue }
            let x = (m["outputs"] as! [String: Any])["x"] as! [String: Any]
            let rows = x["all_rows"] as! [[Double]]
            let blocks = mine[key]!
            // Rebuild the e3nn layout of each row from the per-degree blocks.
            var worst = 0.0
            for (n, row) in rows.enumerated() {
                var flatRow: [Double] = []
                for (l, b) in blocks.enumerated() {
                    guard let b else { continue }
                    let d = 2 * l + 1, c = b.shape[1] / d
                    for u in 0..<c { for k in 0..<d { flatRow.append(b[n, k * c + u]) } }
                }
                #expect(flatRow.count == row.count, "\(key): row length")
                for (a, r) in zip(flatRow, row) { worst = max(worst, abs(a - r)) }
            }
            print("SevenNet-0 intermediates, \(key): max |Δ| \(worst)")
            #expect(worst <= 1e-11, "\(key): max |Δ| \(worst)")
            checked += 1
        }
        #expect(checked == 6)
    }
}

@Suite struct SevenNetPretrainedTests {
    /// Every converted tensor against the listing of the checkpoint in the golden folder: shape, float64 sum,
    /// sum of |x| and exact first element; the radial output layers against the listing of the *loaded* model
    /// (the checkpoint's columns re-ordered and partly negated, as sevenn's loader does).
    @Test(.enabled(if: SevenNetFixture.available, SevenNetFixture.skipMessage))
    func convertedTensorsMatchTheCheckpointListing() throws {
        let text = try String(contentsOf: SevenNetFixture.goldenDirectory.appendingPathComponent("sevennet-0-state.txt"), encoding: .utf8)
        let model = SevenNetFixture.model!
        var listed: [String: [String]] = [:], loaded: [String: [String]] = [:]
        var section = ""
        for line in text.split(separator: "\n") {
            if line.hasPrefix("## ") { section = String(line); continue }
            guard !line.hasPrefix("#"), line.contains(" | ") else { continue }
            let f = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            guard f.count >= 8 else { continue }
            if section.hasPrefix("## checkpoint['model_state_dict']") { listed[f[0]] = f }
            if section.hasPrefix("## state_dict of the LOADED model") { loaded[f[0]] = f }
        }
        #expect(listed.count == 121 && loaded.count == 12)
        var checked = 0
        for (name, t) in model.parameters {
            let f = try #require(loaded[name] ?? listed[name], "\(name) not in the listing")
            let shape = f[1].trimmingCharacters(in: CharacterSet(charactersIn: "(),")).split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces))! }
            #expect(t.shape == shape, "\(name) shape \(t.shape)")
            var s = 0.0, sa = 0.0
            t.withUnsafeBufferPointer { p in for v in p { s += v; sa += abs(v) } }
            let sum = Double(f[5])!, absSum = Double(f[6])!
            #expect(abs(s - sum) <= 1e-9 * max(1, absSum), "\(name) sum \(s) vs \(sum)")
            #expect(abs(sa - absSum) <= 1e-9 * max(1, absSum), "\(name) sum|x| \(sa) vs \(absSum)")
            // The loaded-model rows end with a note ("<- differs from checkpoint").
            let first = try #require(Double(f[7].split(separator: " ")[0]), "\(name): first element '\(f[7])'")
            #expect(t[flat: 0] == first, "\(name) first element")
            checked += 1
        }
        #expect(checked == 36)
        #expect(model.parameterCount == SevenNetWeights.parameterCount)
        // The message denominators are hyperparameters (not trained in SevenNet-0) and come from the state dict.
        let denominators = try #require(model.metadata["conv_denominator"])
        #expect(denominators == "[35.98957443237305, 35.98957443237305, 35.98957443237305, 35.98957443237305, 35.98957443237305]")
        #expect(try PotentialSpec.parse("sevennet-0").kind == "sevennet")
    }
}
