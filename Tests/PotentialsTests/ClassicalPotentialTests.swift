import Foundation
import Testing
import Tape
import Atoms
@testable import Potentials


/// Cases of Fixtures/potentials/reference.json (ASE LJ and the peers' numpy SW).
func referenceCases() -> [String: (Structure, [String: Any])] {
    let data = try! Data(contentsOf: repoRoot.appendingPathComponent("Fixtures/potentials/reference.json"))
    let json = try! JSONSerialization.jsonObject(with: data) as! [String: Any]
    var out: [String: (Structure, [String: Any])] = [:]
    for (name, v) in json["structures"] as! [String: [String: Any]] {
        let numbers = v["numbers"] as! [Int]
        let pos = (v["positions"] as! [[Double]]).flatMap { $0 }
        let cell = (v["cell"] as! [[Double]]).flatMap { $0 }
        let s = Structure(numbers: numbers, positions: Tensor(shape: [numbers.count, 3], pos),
                          cell: Tensor(shape: [3, 3], cell), pbc: v["pbc"] as! [Bool])
        out[name] = (s, v)
    }
    return out
}

func flat(_ a: Any?) -> [Double] { (a as! [[Double]]).flatMap { $0 } }

func relErr(_ a: Double, _ b: Double) -> Double { abs(a - b) / max(abs(b), 1e-300) }

@Suite struct ClassicalPotentialTests {
    static let names = ["si_vac_2x2x2", "si8_triclinic", "si32_mixed_pbc", "si10_cluster"]

    func check(_ pot: some Potential, key: String, name: String) {
        let (s, ref) = referenceCases()[name]!
        let r = ref[key] as! [String: Any]
        let sys = AtomicSystem(s, cutoff: pot.cutoff + 0.3)
        let hasCell = s.hasCell
        let ev = pot.evaluate(sys, positions: s.positions, cells: s.cell.reshaped([1, 3, 3]), stress: hasCell)
        let e = r["energy"] as! Double
        #expect(relErr(ev.energy, e) < 1e-10, "\(key) \(name): energy \(ev.energy) vs \(e)")
        let f = Tensor(shape: [s.count, 3], flat(r["forces"]))
        let fErr = ev.forces.maxAbsDifference(f) / max(f.maxAbs, 1e-300)
        #expect(fErr < 1e-10, "\(key) \(name): forces rel \(fErr)")
        if let sv = r["stress_voigt"] as? [Double], hasCell, s.pbc.allSatisfy({ $0 }) {
            let st = ev.stresses!
            let voigt = [st[0, 0, 0], st[0, 1, 1], st[0, 2, 2], st[0, 1, 2], st[0, 0, 2], st[0, 0, 1]]
            let scale = sv.map { abs($0) }.max()!
            let err = zip(voigt, sv).map { abs($0 - $1) }.max()! / scale
            #expect(err < 1e-10, "\(key) \(name): stress rel \(err) \(voigt) vs \(sv)")
        }
    }

    @Test(arguments: names) func ljSmoothMatchesASE(name: String) {
        check(LennardJones(sigma: 2.0951, epsilon: 1, rc: 3.2, ro: 2.8, smooth: true), key: "lj_smooth", name: name)
    }

    @Test(arguments: names) func ljShiftedMatchesASE(name: String) {
        check(LennardJones(sigma: 2.0951, epsilon: 1.3, rc: 4.5, smooth: false), key: "lj_shifted", name: name)
    }

    @Test(arguments: names) func swMatchesNumpyReference(name: String) {
        check(StillingerWeber(), key: "sw", name: name)
    }

    @Test func perfectDiamondSW() {
        // −2ε per atom with zero forces (each atom: 4 bonds × 1/2 × (−ε) per bond… the SW minimum).
        let s = Structure.diamond(repeats: 2)
        let pot = StillingerWeber()
        let ev = pot.evaluate(AtomicSystem(s, cutoff: pot.cutoff), positions: s.positions, cells: s.cell.reshaped([1, 3, 3]), stress: true)
        #expect(abs(ev.energy / 64 + 2 * 2.16826) < 1e-4)
        #expect(ev.forces.maxAbs < 1e-12)
    }

    @Test func swStressMatchesFiniteDifferenceOfStrain() {
        let (s, _) = referenceCases()["si8_triclinic"]!
        let pot = StillingerWeber()
        let sys = AtomicSystem(s, cutoff: pot.cutoff + 0.5)
        let ev = pot.evaluate(sys, positions: s.positions, cells: s.cell.reshaped([1, 3, 3]), stress: true)
        let h = 1e-6
        for (a, b) in [(0, 0), (1, 2), (2, 0), (1, 1)] {
            func e(_ d: Double) -> Double {
                var eps = Tensor.zeros([3, 3])
                eps[a, b] += d / 2; eps[b, a] += d / 2
                let m = Tensor.identity(3) + eps
                let x = Tensor.matmul(s.positions, m), c = Tensor.matmul(s.cell, m)
                return pot.evaluate(AtomicSystem(Structure(numbers: s.numbers, positions: x, cell: c, pbc: s.pbc), cutoff: pot.cutoff + 0.5),
                                    positions: x, cells: c.reshaped([1, 3, 3])).energy
            }
            let fd = (e(h) - e(-h)) / (2 * h) / s.volume
            #expect(abs(ev.stresses![0, a, b] - fd) < 1e-7 * max(1, abs(fd)), "σ\(a)\(b): \(ev.stresses![0, a, b]) vs \(fd)")
        }
    }

    @Test func parameterDerivativesMatchFiniteDifferences() {
        let (s, _) = referenceCases()["si8_triclinic"]!
        for pot in [StillingerWeber() as any Potential, LennardJones(sigma: 2.0951, epsilon: 1, rc: 3.2, ro: 2.8, smooth: true)] {
            let keys = pot.parameters.keys
            let sys = AtomicSystem(s, cutoff: pot.cutoff * 1.05 + 0.5)
            let f: ([Variable]) -> Variable = { v in
                var p: [String: Variable] = [:]
                for (k, x) in zip(keys, v.dropFirst()) { p[k] = x }
                return pot.energies(sys, positions: v[0], cells: Variable(constant: s.cell.reshaped([1, 3, 3])), parameters: p).sum()
            }
            let inputs = [s.positions] + keys.map { pot.parameters[$0]! }
            let r1 = GradCheck.firstOrder(f, at: inputs)
            #expect(r1.passed(tolerance: 1e-7), "\(pot.kind): \(r1)")
            let r2 = GradCheck.secondOrder(f, at: inputs, step: 1e-5)
            #expect(r2.passed(tolerance: 1e-6), "\(pot.kind): \(r2)")
        }
    }

    @Test func batchedEvaluationEqualsSeparate() {
        let cases = referenceCases()
        let a = cases["si_vac_2x2x2"]!.0, b = cases["si8_triclinic"]!.0
        let pot = StillingerWeber()
        let lists = [a, b].map { NeighborList.build($0, cutoff: pot.cutoff) }
        let sys = AtomicSystem(structures: [a, b], lists: lists)
        let x = Tensor.concatenate([a.positions, b.positions], axis: 0)
        let cells = Tensor.concatenate([a.cell.reshaped([1, 3, 3]), b.cell.reshaped([1, 3, 3])], axis: 0)
        let ev = pot.evaluate(sys, positions: x, cells: cells, stress: true)
        let ea = pot.evaluate(AtomicSystem(a, cutoff: pot.cutoff), positions: a.positions, cells: a.cell.reshaped([1, 3, 3]), stress: true)
        let eb = pot.evaluate(AtomicSystem(b, cutoff: pot.cutoff), positions: b.positions, cells: b.cell.reshaped([1, 3, 3]), stress: true)
        #expect(relErr(ev.energies[flat: 0], ea.energy) < 1e-13)
        #expect(relErr(ev.energies[flat: 1], eb.energy) < 1e-13)
        #expect(ev.forces.slice(axis: 0, 0..<63).maxAbsDifference(ea.forces) < 1e-12)
        #expect(ev.stresses!.slice(axis: 0, 1..<2).reshaped([3, 3]).maxAbsDifference(eb.stresses!.reshaped([3, 3])) < 1e-12)
    }
}

@Suite struct ModelFileTests {
    @Test func classicalModelsRoundTrip() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("relaxft-model-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let sw = try PotentialSpec.parse("sw:sigma=2.116051,lambda=23.1,cos_epsilon=1e-7")
        let path = dir.appendingPathComponent("sw.safetensors").path
        try ModelFile.save(sw, to: path, extraMetadata: ["note": "test"])
        let (back, meta) = try ModelFile.load(path)
        #expect(back.kind == "sw")
        #expect(meta["note"] == "test")
        #expect(back.parameters == sw.parameters)
        #expect((back as! StillingerWeber).cosEpsilon == 1e-7)
        let lj = try PotentialSpec.parse("lj:sigma=2.0951,epsilon=1,rc=3.2,ro=2.8,smooth=true")
        let lpath = dir.appendingPathComponent("lj.safetensors").path
        try ModelFile.save(lj, to: lpath)
        let lb = try ModelFile.load(lpath).potential as! LennardJones
        #expect(lb.rc == 3.2 && lb.ro == 2.8 && lb.smooth)
    }

    @Test func badSpecsAreClearErrors() {
        #expect(throws: PotentialSpecError.self) { try PotentialSpec.parse("sw:sigmaa=2") }
        #expect(throws: PotentialSpecError.self) { try PotentialSpec.parse("sw:sigma=abc") }
        #expect(throws: PotentialSpecError.self) { try PotentialSpec.parse("tersoff") }
        #expect(throws: PotentialSpecError.self) { try PotentialSpec.parse("missing/model.safetensors") }
    }

    @Test func safetensorsHeaderIsAlignedAndParsable() throws {
        let data = SafeTensors.serialize([("a", Tensor(shape: [2, 2], [1, 2, 3, 4])), ("b", Tensor(scalar: 0.1))], metadata: ["k": "v"])
        var n: UInt64 = 0
        for k in 0..<8 { n |= UInt64(data[k]) << (8 * UInt64(k)) }
        #expect((8 + n) % 8 == 0)
        let (t, m) = try SafeTensors.parse(data)
        #expect(t.map(\.name) == ["a", "b"])
        #expect(t[1].tensor.scalar == 0.1)
        #expect(m == ["k": "v"])
        #expect(throws: SafeTensors.FileError.self) { try SafeTensors.parse(Data([1, 2, 3])) }
    }
}
