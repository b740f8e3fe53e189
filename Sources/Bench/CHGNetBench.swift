import Atoms
import Foundation
import Potentials
import Tape

/// CHGNet 0.3.0 energy + forces per call on displaced diamond Si (64 and 216 atoms), beside the real chgnet
/// package (PyTorch eager, one thread) when RELAXFT_PEERS_PYTHON names a Python with torch and chgnet.
enum CHGNetBench {
    /// Diamond Si with every coordinate displaced by 0.05·sin(1.3·a + 2.1·c + 0.7) Å, as
    /// scripts/peers/chgnet_bench.py builds it.
    static func structure(repeats r: Int) -> Structure {
        var s = Structure.diamond(repeats: r)
        let n = s.count
        s.positions.withUnsafeMutableBufferPointer { p in
            for a in 0..<n { for c in 0..<3 { p[3 * a + c] += 0.05 * sin(1.3 * Double(a) + 2.1 * Double(c) + 0.7) } }
        }
        return s
    }

    static func run() {
        print("== chgnet: CHGNet 0.3.0 energy + forces per call (Double, one thread) ==")
        let path = ModelStore.path(of: "chgnet-0.3.0")
        guard FileManager.default.fileExists(atPath: path), let model = try? ModelFile.load(path).potential as? CHGNet else {
            print("skipped: \(path) not found (run 'relaxft models pull chgnet-0.3.0')")
            return
        }
        if let calls = ProcessInfo.processInfo.environment["CHGNET_PROFILE"].flatMap(Int.init) {
            // Fixed work for `perf stat`/`perf record`: that many calls on 216 atoms (BPTT steps with CHGNET_PROFILE_STEP=1).
            let s = structure(repeats: 3)
            let sys = AtomicSystem(s, cutoff: model.cutoff)
            IntraOpThreads.$count.withValue(ProcessInfo.processInfo.environment["CHGNET_PROFILE_THREADS"].flatMap(Int.init) ?? 1) {
                let step = ProcessInfo.processInfo.environment["CHGNET_PROFILE_STEP"] == "1"
                for _ in 0..<calls {
                    if step { NeuralBench.bpttStep(model, sys, s) } else { _ = model.evaluate(sys, positions: s.positions, cells: s.cell.reshaped([1, 3, 3])) }
                }
            }
            return
        }
        let sizes = [2, 3]
        var ours: [Int: (full: Double, model: Double, cpu: Double, energy: Double)] = [:]
        print("atoms   full (list+graph+E+F)     model only (E+F)                        energy (eV)")
        for r in sizes {
            let s = structure(repeats: r)
            let cells = s.cell.reshaped([1, 3, 3])
            let sys = AtomicSystem(s, cutoff: model.cutoff)
            var energy = 0.0
            let full = measureBoth(minRuns: 5, minSeconds: 2) {
                energy = model.evaluate(AtomicSystem(s, cutoff: model.cutoff), positions: s.positions, cells: cells).energy
            }
            var calls = 0
            let cpu0 = cpuTime()
            let only = measureBoth(minRuns: 5, minSeconds: 2) { _ = model.evaluate(sys, positions: s.positions, cells: cells); calls += 1 }
            let cpu = (cpuTime() - cpu0) / Double(calls)
            ours[s.count] = (full.min, only.min, cpu, energy)
            print("\(String(s.count).padding(toLength: 7, withPad: " ", startingAt: 0)) \(fmtTime(full.median)) (min \(fmtTime(full.min)))".padding(toLength: 34, withPad: " ", startingAt: 0)
                  + "\(fmtTime(only.median)) (min \(fmtTime(only.min)), CPU \(fmtTime(cpu)))".padding(toLength: 40, withPad: " ", startingAt: 0) + String(format: "%.8f", energy))
        }
        threads(model)
        guard let python = ProcessInfo.processInfo.environment["RELAXFT_PEERS_PYTHON"], !python.isEmpty else {
            print("PyTorch comparison skipped: set RELAXFT_PEERS_PYTHON to a Python with torch and chgnet 0.4.2")
            return
        }
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("scripts/peers/chgnet_bench.py").path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: python)
        p.arguments = [script, "--sizes"] + sizes.map(String.init)
        p.environment = ProcessInfo.processInfo.environment.merging(["OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"]) { $1 }
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        do { try p.run() } catch {
            print("PyTorch comparison failed: cannot run \(python): \(error.localizedDescription)")
            return
        }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            print("PyTorch comparison failed: \(script) exited with \(p.terminationStatus) (is chgnet installed there?)")
            return
        }
        print("chgnet 0.4.2 (PyTorch eager, float32, 1 thread) vs relaxft; ratio = torch time / relaxft time (> 1: relaxft faster)")
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n") where line.hasPrefix("{") {
            guard let j = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], let n = j["atoms"] as? Int,
                  let tf = j["full_min_s"] as? Double, let tm = j["model_min_s"] as? Double, let tc = j["model_cpu_s"] as? Double,
                  let mine = ours[n] else { continue }
            print("  \(n) atoms: torch full \(fmtTime(tf)), model \(fmtTime(tm)) (CPU \(fmtTime(tc))); ratio full \(fmt(tf / mine.full)), "
                  + "model \(fmt(tm / mine.model)), model CPU \(fmt(tc / mine.cpu))"
                  + String(format: "; E(torch float32) − E(relaxft) = %.2e eV", ((j["energy"] as? Double) ?? .nan) - mine.energy))
        }
    }

    /// One structure on one and two threads (`IntraOpThreads`), alternated: wall time per call, the speed-up and
    /// whether the results (energy and forces; a BPTT step's parameter gradients) are the same bits.
    static func threads(_ model: CHGNet) {
        print("one structure on 2 threads (model only, E+F; alternated, median of ≥ 5 calls each, 3 rounds):")
        for r in [2, 3] {
            let s = structure(repeats: r)
            let cells = s.cell.reshaped([1, 3, 3])
            let sys = AtomicSystem(s, cutoff: model.cutoff)
            let (a, b, same) = oneAndTwoThreads(minRuns: 5) {
                let e = model.evaluate(sys, positions: s.positions, cells: cells)
                return [e.energy] + e.forces.array
            }
            print("  \(s.count) atoms: 1 thread \(fmtTime(a)), 2 threads \(fmtTime(b)): speed-up \(fmt(a / b))×; energy and forces "
                  + (same ? "bit-identical" : "DIFFER"))
        }
        // One BPTT step on 216 atoms: E and F with their graph, x' = x + 0.01·F, the gradient of a scalar of x' with
        // respect to all parameters (second derivatives through the forces).
        print("one BPTT step on 2 threads (216 atoms; alternated, median of ≥ 3 steps each, 3 rounds):")
        let s = structure(repeats: 3)
        let sys = AtomicSystem(s, cutoff: model.cutoff)
        let (a, b, same) = oneAndTwoThreads(minRuns: 3) { NeuralBench.bpttStep(model, sys, s) }
        print("  216 atoms: 1 thread \(fmtTime(a)), 2 threads \(fmtTime(b)): speed-up \(fmt(a / b))×; parameter gradients "
              + (same ? "bit-identical" : "DIFFER"))
    }

    /// Median wall time of `body` on one and on two threads (3 alternated rounds, the middle round's median each) and
    /// whether both gave the same bits.
    static func oneAndTwoThreads(minRuns: Int, _ body: () -> [Double]) -> (Double, Double, Bool) {
        var times: [Int: [Double]] = [1: [], 2: []]
        var out: [Int: [Double]] = [:]
        for _ in 0..<3 {
            for n in [1, 2] {
                var result: [Double] = []
                let m = IntraOpThreads.$count.withValue(n) { measureBoth(minRuns: minRuns, minSeconds: 1) { result = body() } }
                out[n] = result
                times[n]!.append(m.median)
            }
        }
        return (times[1]!.sorted()[1], times[2]!.sorted()[1], out[1]! == out[2]!)
    }
}
