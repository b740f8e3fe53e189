import Foundation
import Testing
import Atoms
import Tape

/// Lennard-Jones energy, forces and stress (ASE's sign, σ = (1/V) ∂E/∂ε) of a periodic cubic cell with the
/// cutoff below half the edge, by the minimum image, written out here apart from the library: the independent
/// computation `evaluate` is checked against. Energies are shifted to 0 at rc, as ASE's LennardJones does.
func independentLJ(_ x: [[Double]], edge: Double, sigma: Double, epsilon: Double, rc: Double) -> (energy: Double, forces: [[Double]], stress: [Double]) {
    func u(_ r: Double) -> Double { let s6 = pow(sigma / r, 6); return 4 * epsilon * (s6 * s6 - s6) }
    func du(_ r: Double) -> Double { let s6 = pow(sigma / r, 6); return 4 * epsilon * (-12 * s6 * s6 + 6 * s6) / r }
    var e = 0.0, f = Array(repeating: [0.0, 0.0, 0.0], count: x.count), w = [Double](repeating: 0, count: 9)
    for i in 0..<x.count {
        for j in (i + 1)..<x.count {
            var d = (0..<3).map { x[j][$0] - x[i][$0] }
            d = d.map { $0 - edge * ($0 / edge).rounded() }
            let r = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).squareRoot()
            guard r < rc else { continue }
            e += u(r) - u(rc)
            for a in 0..<3 {
                f[i][a] += du(r) * d[a] / r
                f[j][a] -= du(r) * d[a] / r
                for b in 0..<3 { w[3 * a + b] += du(r) * d[a] * d[b] / r }
            }
        }
    }
    let volume = edge * edge * edge
    return (e, f, w.map { $0 / volume })
}

@Suite("relaxft evaluate on labelled frames", .serialized)
struct EvaluateLabelledTests {
    /// Energy, force and stress MAE/RMSE, overall and per configuration type, against errors computed here from
    /// an independent Lennard-Jones and the labels.
    @Test func errorsMatchAnIndependentComputation() throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let (sigma, epsilon, rc, edge, n) = (1.5, 0.1, 3.0, 7.0, 10)
        var rng = SeededGenerator(seed: 11)
        var frames: [Structure] = [], expected: [(e: Double, f: [Double], s: [Double], type: String, atoms: Int)] = []
        for k in 0..<5 {
            var x: [[Double]] = []
            while x.count < n {
                let p = (0..<3).map { _ in edge * rng.uniform() }
                let ok = x.allSatisfy { q in
                    let d = (0..<3).map { p[$0] - q[$0] }.map { $0 - edge * ($0 / edge).rounded() }
                    return (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).squareRoot() > 1.4
                }
                if ok { x.append(p) }
            }
            let lj = independentLJ(x, edge: edge, sigma: sigma, epsilon: epsilon, rc: rc)
            // Labels: the model's values plus errors of known size (a "DFT" that disagrees with it).
            let eLabel = lj.energy + 0.05 * Double(k + 1) * (k % 2 == 0 ? 1 : -1)
            let fLabel = lj.forces.map { $0.map { $0 + 0.1 * (rng.uniform() - 0.5) } }
            let sLabel = lj.stress.map { $0 + 1e-4 * (rng.uniform() - 0.5) }
            var s = Structure(numbers: Array(repeating: 18, count: n), positions: Tensor(shape: [n, 3], x.flatMap { $0 }),
                              cell: Tensor(shape: [3, 3], [edge, 0, 0, 0, edge, 0, 0, 0, edge]), pbc: [true, true, true])
            s.energy = eLabel
            s.forces = Tensor(shape: [n, 3], fLabel.flatMap { $0 })
            s.stress = Tensor(shape: [3, 3], sLabel)
            let type = k < 2 ? "small" : "large"
            s.info["config_type"] = .string(type)
            frames.append(s)
            expected.append(((lj.energy - eLabel) / Double(n), zip(lj.forces.flatMap { $0 }, fLabel.flatMap { $0 }).map { $0 - $1 },
                             zip(lj.stress, sLabel).map { 1000 * ($0 - $1) }, type, n))
        }
        try StructureIO.write(frames, dir.path("labelled.extxyz"))
        let run = try dir.run(["evaluate", "--potential", "lj:sigma=\(sigma),epsilon=\(epsilon),rc=\(rc)", "--data", "labelled.extxyz", "--json"])
        #expect(run.status == 0, "\(run.stderr)")
        let obj = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])
        let labelled = try #require(obj["labelled"] as? [String: Any])
        let model = try #require((labelled["models"] as? [[String: Any]])?.first)
        func check(_ got: [String: Any], _ rows: [(e: Double, f: [Double], s: [Double], type: String, atoms: Int)], _ what: String) {
            func mae(_ v: [Double]) -> Double { v.map(abs).reduce(0, +) / Double(v.count) }
            func rmse(_ v: [Double]) -> Double { (v.map { $0 * $0 }.reduce(0, +) / Double(v.count)).squareRoot() }
            let e = rows.map { 1000 * $0.e }, f = rows.flatMap(\.f), s = rows.flatMap(\.s)
            for (key, want) in [("energy_mae_mev_atom", mae(e)), ("energy_rmse_mev_atom", rmse(e)), ("force_mae", mae(f)), ("force_rmse", rmse(f)),
                                ("stress_mae_mev_a3", mae(s)), ("stress_rmse_mev_a3", rmse(s))] {
                let value = got[key] as? Double ?? .nan
                #expect(abs(value - want) <= 1e-9 * max(abs(want), 1e-12), "\(what) \(key): \(value), independently \(want)")
            }
            #expect(got["frames"] as? Int == rows.count && got["atoms"] as? Int == rows.reduce(0) { $0 + $1.atoms })
        }
        check(model, expected, "all frames")
        let byType = try #require(model["by_config_type"] as? [String: [String: Any]])
        #expect(Set(byType.keys) == ["small", "large"])
        for type in ["small", "large"] { check(byType[type] ?? [:], expected.filter { $0.type == type }, type) }
        // The table says the same, with units.
        let text = try dir.run(["evaluate", "--potential", "lj:sigma=\(sigma),epsilon=\(epsilon),rc=\(rc)", "--data", "labelled.extxyz"])
        for s in ["5 labelled frames, 50 atoms", "energy MAE (meV/atom)", "force RMSE (eV/Å)", "stress MAE (meV/Å³)", "config type small (2 frames):"] {
            #expect(text.stdout.contains(s), "\(s) in \(text.stdout)")
        }
    }

    /// Relaxation data and labelled frames in one call, with the protocol stated first; a model that does not
    /// know an element: an error naming the structure, or with --skip-unknown-elements a count of what was left out.
    @Test func protocolIsStatedAndUnknownElementsCanBeSkipped() throws {
        let dir = try Scratch(copying: ["Fixtures/data/si-defects/tiny.extxyz", "Fixtures/data/si-defects/trajectories-tiny.extxyz"])
        defer { dir.remove() }
        let args = ["evaluate", "--potential", "si-schnet-pretrained", "--label", "schnet", "--data", "tiny.extxyz", "--data", "trajectories-tiny.extxyz",
                    "--frames", ":8", "--steps", "3", "--threads", "2"]
        let refused = try dir.run(args)
        #expect(refused.status == 2 && refused.stderr.contains("contains C") && refused.stderr.contains("--skip-unknown-elements"), "\(refused.stderr)")
        let run = try dir.run(args + ["--skip-unknown-elements", "-o", "eval.csv"])
        #expect(run.status == 0, "\(run.stderr)")
        // :8 of tiny.extxyz holds two sub_C structures; the first 8 trajectory frames are Si only.
        #expect(run.stderr.contains("left out 2 of 8 structures of tiny.extxyz (they contain C"), "\(run.stderr)")
        #expect(run.stdout.hasPrefix("model 1 (schnet): si-schnet-pretrained; relaxations: fire (dt=0.1"), "\(run.stdout)")
        #expect(run.stdout.contains("at most 3 steps, stop below fmax 0.01 eV/Å"))
        #expect(run.stdout.contains("6 structures (tiny.extxyz)") && run.stdout.contains("8 labelled frames"), "\(run.stdout)")
        #expect(try readCSV(dir.path("eval.csv")).rows.count == 6)
    }
}
