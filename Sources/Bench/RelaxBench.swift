import Atoms
import Foundation
import Potentials
import Relax
import Tape

/// Diamond Si r×r×r with atom 0 removed and every atom moved 0.1 Å in a random direction (as the peers'
/// fixtures, with our own random numbers).
func vacancyFixture(repeats r: Int, seed: UInt64 = 1) -> Structure {
    var s = Structure.diamond(repeats: r)
    let n = s.count - 1
    var pos = s.positions.slice(axis: 0, 1..<(n + 1))
    var rng = SeededGenerator(seed: seed)
    pos.withUnsafeMutableBufferPointer { p in
        for a in 0..<n {
            var d = [rng.normal(), rng.normal(), rng.normal()]
            let l = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).squareRoot()
            d = d.map { 0.1 * $0 / l }
            for c in 0..<3 { p[3 * a + c] += d[c] }
        }
    }
    s = Structure(numbers: Array(repeating: 14, count: n), positions: pos, cell: s.cell, pbc: s.pbc)
    return s
}

/// Runs a peers script (when RELAXFT_PEERS and RELAXFT_PEERS_PYTHON are set) and returns its JSON lines.
func runPeer(_ arguments: [String]) -> [[String: Any]] {
    let env = ProcessInfo.processInfo.environment
    guard let python = env["RELAXFT_PEERS_PYTHON"], FileManager.default.isExecutableFile(atPath: python) else { return [] }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: python)
    p.arguments = arguments
    var e = env
    e["OPENBLAS_NUM_THREADS"] = "1"; e["OMP_NUM_THREADS"] = "1"; e["MKL_NUM_THREADS"] = "1"
    e["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    p.environment = e
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = FileHandle.nullDevice
    do { try p.run() } catch { return [] }
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return String(decoding: data, as: UTF8.self).split(separator: "\n").compactMap {
        try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
    }
}

enum RelaxBench {
    static func run() {
        print("== relaxation throughput: Stillinger–Weber Si (vacancy, 0.1 Å displacements), release, 1 thread ==")
        let env = ProcessInfo.processInfo.environment
        let repoScripts = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("scripts/peers").path
        var ase: [String: Double] = [:], jax: [String: Double] = [:]
        if let peers = env["RELAXFT_PEERS"] {
            for o in runPeer(["\(repoScripts)/relax_bench.py", "--peers", peers, "--sizes", "2,3,4"]) {
                ase["\(o["relaxer"]!)-\(o["atoms"]!)"] = o["steps_per_s"] as? Double
            }
            for n in [2, 3, 4] {
                for o in runPeer(["\(peers)/jaxmd_bptt.py", "--n", "\(n)", "--T", "100", "--mode", "forward", "--repeats", "3"]) {
                    if let ms = o["ms_per_step"] as? Double, let atoms = o["natoms"] as? Int { jax["fire-\(atoms)"] = 1000 / ms }
                }
            }
        } else {
            print("(set RELAXFT_PEERS and RELAXFT_PEERS_PYTHON to time ASE and JAX-MD on the same machine)")
        }
        print("relaxer  atoms  steps  time      steps/s    ASE steps/s  ratio   JAX-MD steps/s  ratio")
        let sw = StillingerWeber()
        let only = env["BENCH_ONLY"]
        let sizes = env["BENCH_SIZES"].map { $0.split(separator: ",").compactMap { Int($0) } } ?? [2, 3, 4, 8]
        for r in sizes {
            let s = vacancyFixture(repeats: r)
            for (name, relaxer) in [("fire", FIRE() as any Relaxer), ("bfgs", BFGS() as any Relaxer)] where only == nil || only == name {
                if name == "bfgs" && r == 8 { continue }  // 12285 unknowns: a dense Hessian is not meant for this
                var settings = RelaxationSettings()
                settings.fmax = 1e-12
                settings.maxSteps = name == "fire" ? 100 : 40
                var steps = 0
                let t = measureBoth(minRuns: r >= 4 ? 2 : 3, minSeconds: 0.2) {
                    steps = relax(s, potential: sw, relaxer: relaxer, settings: settings).steps
                }
                let rate = Double(steps) / t.min
                let key = "\(name)-\(s.count)"
                func ratio(_ d: [String: Double]) -> String {
                    guard let v = d[key] else { return "–".padding(toLength: 14, withPad: " ", startingAt: 0) + "  –    " }
                    return String(format: "%-14.1f  %-6.1f", v, rate / v)
                }
                print(String(format: "%-8@ %-6d %-6d %-9@ %-10.1f ", name, s.count, steps, fmtTime(t.min), rate) + ratio(ase) + " " + ratio(jax))
            }
        }
    }
}
