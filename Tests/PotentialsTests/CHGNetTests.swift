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
