import Foundation
import Testing
import Tape
import Atoms
@testable import Potentials

/// Small random models (seeded) so that every test runs in well under a second in release.
func smallModels() -> [(String, any Potential)] {
    var so3 = try! SO3krates(.init(features: 12, layers: 2, heads: 2, maxDegree: 3, cutoff: 4.0, radialBasis: 8, elements: [8, 14]), seed: 7)
    var sch = try! SchNet(.init(features: 8, layers: 2, cutoff: 4.0, radialBasis: 8, elements: [8, 14]), seed: 7)
    // Larger readouts than the training initialisation, so that every path contributes visibly.
    so3.parameters["readout.1.weight"] = so3.parameters["readout.1.weight"]! * 10
    sch.parameters["readout.1.weight"] = sch.parameters["readout.1.weight"]! * 10
    so3.parameters["atomic_energies"] = Tensor([-1.5, -4.0])
    sch.parameters["atomic_energies"] = Tensor([-1.5, -4.0])
    return [("so3krates", so3), ("schnet", sch)]
}

/// Si7O: a distorted, slightly sheared 8-atom diamond cell (several periodic images within the cutoff).
func randomSiCell(seed: UInt64 = 3) -> Structure {
    var s = Structure.diamond(a: 5.431, repeats: 1)
    var rng = SeededGenerator(seed: seed)
    s.positions = s.positions + rng.normalTensor([8, 3], scale: 0.12)
    s.cell = Tensor(shape: [3, 3], [5.431, 0, 0, 0.3, 5.3, 0, -0.2, 0.1, 5.6])
    s.numbers[3] = 8
    return s
}

func randomRotation(_ rng: inout SeededGenerator) -> Tensor {
    var q = (0..<4).map { _ in rng.normal() }
    let n = q.map { $0 * $0 }.reduce(0, +).squareRoot()
    q = q.map { $0 / n }
    let (w, x, y, z) = (q[0], q[1], q[2], q[3])
    return Tensor(shape: [3, 3], [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
                                  2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
                                  2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)])
}

func eval(_ m: any Potential, _ s: Structure, stress: Bool = false) -> Evaluation {
    m.evaluate(AtomicSystem(s, cutoff: m.cutoff), positions: s.positions, cells: s.cell.reshaped([1, 3, 3]), stress: stress)
}

func relDiff(_ a: Tensor, _ b: Tensor) -> Double { a.maxAbsDifference(b) / max(b.maxAbs, 1e-300) }

@Suite struct NeuralPotentialTests {
    @Test func sphericalHarmonicsSatisfyTheAdditionTheorem() {
        // Σ_m Y_lm(u) Y_lm(v) = (2l+1)/(4π) P_l(u·v) holds exactly for orthonormal real harmonics.
        var rng = SeededGenerator(seed: 1)
        func unit() -> Tensor { let v = rng.normalTensor([1, 3]); return v * (1 / v.dot(v).squareRoot()) }
        for _ in 0..<20 {
            let u = unit(), v = unit()
            let yu = SphericalHarmonics.evaluate(Variable(constant: u), maxDegree: 3).value
            let yv = SphericalHarmonics.evaluate(Variable(constant: v), maxDegree: 3).value
            let t = u.dot(v)
            let legendre = [t, 0.5 * (3 * t * t - 1), 0.5 * (5 * t * t * t - 3 * t)]
            var col = 0
            for l in 1...3 {
                var s = 0.0
                for _ in 0..<(2 * l + 1) { s += yu[flat: col] * yv[flat: col]; col += 1 }
                let expected = Double(2 * l + 1) / (4 * Double.pi) * legendre[l - 1]
                #expect(abs(s - expected) < 1e-13, "degree \(l): \(s) vs \(expected)")
            }
        }
        // Y_1 = √(3/4π)(y, z, x)
        let y1 = SphericalHarmonics.evaluate(Variable(constant: Tensor(shape: [1, 3], [0.6, 0, 0.8])), maxDegree: 1).value
        let c = (3 / (4 * Double.pi)).squareRoot()
        #expect(y1.maxAbsDifference(Tensor(shape: [1, 3], [0, 0.8 * c, 0.6 * c])) < 1e-15)
    }

    @Test(arguments: [0, 1]) func invariantUnderRotationTranslationPermutation(model k: Int) {
        let (name, m) = smallModels()[k]
        let s = randomSiCell()
        let ref = eval(m, s)
        var rng = SeededGenerator(seed: 11)
        for trial in 0..<3 {
            let r = randomRotation(&rng)
            var t = s
            t.positions = Tensor.matmul(s.positions, r) + rng.normalTensor([1, 3], scale: 2.0)
            t.cell = Tensor.matmul(s.cell, r)
            let ev = eval(m, t)
            #expect(abs(ev.energy - ref.energy) <= 1e-10 * abs(ref.energy), "\(name) trial \(trial): energy \(ev.energy) vs \(ref.energy)")
            let fRot = Tensor.matmul(ref.forces, r)
            #expect(relDiff(ev.forces, fRot) <= 1e-10, "\(name) trial \(trial): forces not equivariant, rel \(relDiff(ev.forces, fRot))")
        }
        // Permutation of atoms: same energy, permuted forces.
        var perm = Array(0..<s.count)
        rng.shuffle(&perm)
        var p = s
        p.numbers = perm.map { s.numbers[$0] }
        p.positions = s.positions.gatherRows(perm)
        let ev = eval(m, p)
        #expect(abs(ev.energy - ref.energy) <= 1e-10 * abs(ref.energy), "\(name): permuted energy")
        #expect(relDiff(ev.forces, ref.forces.gatherRows(perm)) <= 1e-10, "\(name): permuted forces")
        // Net force of a periodic cell vanishes (translation invariance of E).
        #expect(ref.forces.sum(axes: [0]).maxAbs <= 1e-10 * ref.forces.maxAbs)
    }

    @Test(arguments: [0, 1]) func batchedEqualsSeparate(model k: Int) {
        let (name, m) = smallModels()[k]
        let a = randomSiCell(seed: 3), b = randomSiCell(seed: 4)
        let sys = AtomicSystem(structures: [a, b], lists: [a, b].map { NeighborList.build($0, cutoff: m.cutoff) })
        let ev = m.evaluate(sys, positions: Tensor.concatenate([a.positions, b.positions], axis: 0),
                            cells: Tensor.concatenate([a.cell.reshaped([1, 3, 3]), b.cell.reshaped([1, 3, 3])], axis: 0), stress: true)
        let ea = eval(m, a, stress: true), eb = eval(m, b, stress: true)
        #expect(abs(ev.energies[flat: 0] - ea.energy) <= 1e-12 * abs(ea.energy), "\(name)")
        #expect(abs(ev.energies[flat: 1] - eb.energy) <= 1e-12 * abs(eb.energy), "\(name)")
        #expect(relDiff(ev.forces, Tensor.concatenate([ea.forces, eb.forces], axis: 0)) <= 1e-12)
        #expect(relDiff(ev.stresses!, Tensor.concatenate([ea.stresses!, eb.stresses!], axis: 0)) <= 1e-12)
    }

    @Test(arguments: [0, 1]) func filtersSharedPerUndirectedPairEqualPerDirectedPair(model k: Int) {
        // The models compute their symmetric filters once per undirected pair; the paper's formulation, per
        // directed pair, must give the same energies, forces and stresses (to rounding). Includes a cell thinner
        // than the cutoff, where an atom pairs with its own images.
        let (name, shared) = smallModels()[k]
        var directed: any Potential
        if var m = shared as? SO3krates { m.sharesPairFilters = false; directed = m } else { var m = shared as! SchNet; m.sharesPairFilters = false; directed = m }
        // Primitive diamond cell (2 atoms, 3.84 Å between images), one atom O.
        let thin = Structure(numbers: [14, 8], positions: Tensor(shape: [2, 3], [0.02, -0.01, 0.03, 1.36, 1.35, 1.37]),
                             cell: Tensor(shape: [3, 3], [0, 2.7155, 2.7155, 2.7155, 0, 2.7155, 2.7155, 2.7155, 0]), pbc: [true, true, true])
        for s in [randomSiCell(seed: 3), thin] {
            let a = eval(shared, s, stress: true), b = eval(directed, s, stress: true)
            #expect(abs(a.energy - b.energy) <= 1e-12 * abs(b.energy), "\(name)")
            #expect(relDiff(a.forces, b.forces) <= 1e-11, "\(name)")
            #expect(relDiff(a.stresses!, b.stresses!) <= 1e-11, "\(name)")
            #expect(b.forces.maxAbs > 1e-4, "\(name): the comparison needs non-zero forces")
        }
    }

    @Test(arguments: [0, 1]) func continuousAtTheCutoff(model k: Int) {
        // O–Si–Si trimer; the third atom crosses the cutoff of its bond to the first one only.
        let (name, m) = smallModels()[k]
        func at(_ y: Double) -> Evaluation {
            let s = Structure(numbers: [8, 14, 14], positions: Tensor(shape: [3, 3], [0, 0, 0, 2.3, 0.1, 0, 0.05, y, 0.2]))
            return eval(m, s)
        }
        let rc = m.cutoff
        let y0 = (rc * rc - 0.05 * 0.05 - 0.04).squareRoot()
        let inside = at(y0 - 1e-6), outside = at(y0 + 1e-6)
        let near = at(y0 - 0.3)
        // Energy C¹ at r_c: the jump over 2e-6 Å is second order; the force jump first order.
        #expect(abs(inside.energy - outside.energy) < 1e-10, "\(name): energy jump \(inside.energy - outside.energy)")
        #expect(inside.forces.maxAbsDifference(outside.forces) < 1e-6, "\(name): force jump \(inside.forces.maxAbsDifference(outside.forces))")
        // …while the pair does contribute inside the cutoff.
        #expect(abs(near.energy - outside.energy) > 1e-6, "\(name): the crossing pair has no effect")
    }

    /// E as a function of [positions, strain, θ₁, θ₂] for finite-difference checks.
    func energyFunction(_ m: any Potential, _ s: Structure, _ names: [String]) -> ([Variable]) -> Variable {
        let sys = AtomicSystem(s, cutoff: m.cutoff + 0.5)
        return { v in
            var p = m.constantParameters
            for (k, n) in names.enumerated() { p[n] = v[2 + k] }
            let e = v[1].reshaped([3, 3])
            let x = v[0] + matmul(v[0], e)
            let c = Variable(constant: s.cell) + matmul(Variable(constant: s.cell), e)
            return m.energies(sys, positions: x, cells: c.reshaped([1, 3, 3]), parameters: p).sum()
        }
    }

    static let probed = [["layers.1.att_chi.q.weight", "layers.1.filter_chi.sph0.weight", "layers.0.exchange.weight"],
                         ["interactions.1.filter0.weight", "interactions.0.in2f.weight"]]

    @Test(arguments: [0, 1]) func forcesStressAndParameterGradientsMatchFiniteDifferences(model k: Int) {
        let (name, m) = smallModels()[k]
        let s = randomSiCell()
        let names = Self.probed[k]
        let f = energyFunction(m, s, names)
        let inputs = [s.positions, Tensor.zeros([3, 3])] + names.map { m.parameters[$0]! }
        let report = GradCheck.firstOrder(f, at: inputs)
        // Central differences with step 1e-6 carry ~1e-9 absolute round-off on energies of O(10) eV.
        #expect(report.passed(tolerance: 1e-5), "\(name): \(report)")
        // The protocol's stress is sym(∂E/∂ε)/V of the same derivative.
        let ev = eval(m, s, stress: true)
        let expected = SO3krates.stressFromVirial(report.numeric[1].reshaped([1, 3, 3]), cells: s.cell.reshaped([1, 3, 3]))
        #expect(relDiff(ev.stresses!, expected) < 1e-6, "\(name): stress \(ev.stresses!) vs \(expected)")
        #expect(relDiff(ev.forces, -report.numeric[0]) < 1e-6)
    }

    @Test(arguments: [0, 1]) func secondDerivativesMatchFiniteDifferences(model k: Int) {
        let (name, m) = smallModels()[k]
        let s = randomSiCell()
        let names = Self.probed[k]
        let f = energyFunction(m, s, names)
        let inputs = [s.positions, Tensor.zeros([3, 3])] + names.map { m.parameters[$0]! }
        // Full Hessian-vector product in a random direction over positions, strain and parameters.
        let hvp = GradCheck.secondOrder(f, at: inputs, seed: 5)
        #expect(hvp.passed(tolerance: 1e-6), "\(name) HVP: \(hvp)")
        // ∂F/∂θ·v: direction on the parameters only; the position block is −∂F/∂θ·v.
        var dir = inputs.map { Tensor.zeros($0.shape) }
        var rng = SeededGenerator(seed: 9)
        for j in 2..<inputs.count { dir[j] = rng.normalTensor(inputs[j].shape) }
        let mixed = GradCheck.secondOrder(f, at: inputs, direction: dir)
        #expect(mixed.passed(tolerance: 1e-6), "\(name) ∂F/∂θ: \(mixed)")
        #expect(mixed.analytic[0].maxAbs > 1e-6, "\(name): ∂F/∂θ vanishes")
        // Position Hessian-vector product (what BPTT through x + ηF needs).
        var dx = inputs.map { Tensor.zeros($0.shape) }
        dx[0] = rng.normalTensor(inputs[0].shape)
        let hx = GradCheck.secondOrder(f, at: inputs, direction: dx)
        #expect(hx.passed(tolerance: 1e-6), "\(name) Hx: \(hx)")
    }

    @Test(arguments: [0, 1]) func modelFileRoundTrip(model k: Int) throws {
        var (name, m) = smallModels()[k]
        if var so3 = m as? SO3krates { so3.provenance["training_command"] = "relaxft pretrain --test"; m = so3 }
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("relaxft-\(name)-\(getpid()).safetensors").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try ModelFile.save(m, to: path)
        let (loaded, meta) = try ModelFile.load(path)
        #expect(loaded.kind == name)
        #expect(meta["elements"] == "O,Si")
        #expect(loaded.metadata == m.metadata)
        let s = randomSiCell()
        let a = eval(m, s), b = eval(loaded, s)
        #expect(a.energies.bitwiseEqual(b.energies) && a.forces.bitwiseEqual(b.forces), "\(name): reloaded model differs")
        if k == 0 { #expect(meta["training_command"] == "relaxft pretrain --test") }
    }

    @Test func modelFileErrorsAreClear() throws {
        let m = smallModels()[0].1
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("relaxft-bad-\(getpid()).safetensors").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        var meta = m.metadata
        meta["relaxft_kind"] = "so3krates"
        meta["features"] = "24"
        try SafeTensors.write(m.parameters.map { ($0.key, $0.value) }, metadata: meta, to: path)
        #expect(throws: PotentialSpecError.self) { _ = try ModelFile.load(path) }
        do { _ = try ModelFile.load(path) } catch { #expect("\(error)".contains("has shape"), "\(error)") }
        #expect(throws: PotentialSpecError.self) { _ = try SO3krates(.init(features: 10, heads: 4)) }
    }

    /// A model trained from a trained model keeps its architecture keys, and each stage's records stay apart:
    /// the parent's move into `lineage` (oldest first), so a file never shows its parent's scores as its own.
    @Test func derivedMetadataKeepsEachStagesRecordsApart() throws {
        let base = ["features": "8", "elements": "Si", "training_command": "relaxft pretrain A", "test_x": "MAE 1"]
        let second = ModelFile.derivedMetadata(parent: base, stage: ["training_command": "relaxft pretrain --init B"])
        #expect(second["features"] == "8" && second["elements"] == "Si" && second["test_x"] == nil)
        #expect(second["training_command"] == "relaxft pretrain --init B")
        let third = ModelFile.derivedMetadata(parent: second, stage: ["training": "relaxft finetune C", "relaxation_protocol": "{}"])
        let lineage = try JSONDecoder().decode([[String: String]].self, from: Data(try #require(third["lineage"]).utf8))
        #expect(lineage == [["training_command": "relaxft pretrain A", "test_x": "MAE 1"], ["training_command": "relaxft pretrain --init B"]])
        #expect(third["training_command"] == nil && third["training"] == "relaxft finetune C" && third["features"] == "8")
        #expect(ModelFile.derivedMetadata(parent: ["features": "8"], stage: [:]) == ["features": "8"], "no records, no lineage")
        let cwd = FileManager.default.currentDirectoryPath
        #expect(ModelFile.recordedArgument(cwd + "/runs/x.extxyz") == "runs/x.extxyz")
        #expect(ModelFile.recordedArgument("--data=" + cwd + "/x.extxyz") == "--data=x.extxyz")
        #expect(ModelFile.recordedArgument("/elsewhere/x.extxyz") == "/elsewhere/x.extxyz")
    }

}
