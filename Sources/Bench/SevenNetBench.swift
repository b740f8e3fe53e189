import Atoms
import Foundation
import Potentials
import Tape

/// SevenNet-0 energy + forces per call and one BPTT step on displaced diamond Si (64 and 216 atoms), beside the
/// real sevenn package (PyTorch eager, one thread, float32 and float64) measured in the same run.
///
/// The peer's Python is `$RELAXFT_SEVENNET_PYTHON`, else `$RELAXFT_PEERS_PYTHON`, else
/// `../shared/peers/.venv/bin/python` next to the repository; it needs torch and sevenn 0.13.0
/// (`pip install sevenn==0.13.0`). Without one the comparison prints "peer unavailable".
enum SevenNetBench {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func peerPython() -> String? {
        let env = ProcessInfo.processInfo.environment
        for k in ["RELAXFT_SEVENNET_PYTHON", "RELAXFT_PEERS_PYTHON"] { if let p = env[k], !p.isEmpty { return p } }
        let def = repo.deletingLastPathComponent().appendingPathComponent("shared/peers/.venv/bin/python").path
        return FileManager.default.isExecutableFile(atPath: def) ? def : nil
    }

    static func run() {
        print("== sevennet: SevenNet-0 energy + forces per call and one BPTT step (Double, one thread) ==")
        let path = ModelStore.path(of: "sevennet-0")
        guard FileManager.default.fileExists(atPath: path), let model = try? ModelFile.load(path).potential as? SevenNet else {
            print("skipped: \(path) not found (run 'relaxft models pull sevennet-0')")
            return
        }
        let env = ProcessInfo.processInfo.environment
        if let calls = env["SEVENNET_PROFILE"].flatMap(Int.init) {
            // Fixed work for `perf record` / callgrind: that many energy+forces calls (or, with SEVENNET_PROFILE_BPTT
            // set, BPTT steps) on 216 atoms.
            let s = CHGNetBench.structure(repeats: 3)
            let sys = AtomicSystem(s, cutoff: model.cutoff)
            for _ in 0..<calls {
                if env["SEVENNET_PROFILE_BPTT"] != nil { NeuralBench.bpttStep(model, sys, s) } else {
                    _ = model.evaluate(sys, positions: s.positions, cells: s.cell.reshaped([1, 3, 3]))
                }
            }
            return
        }
        let sizes = [2, 3]
        var ours: [Int: (full: Double, model: Double, cpu: Double, bptt: Double, bpttCPU: Double, energy: Double)] = [:]
        print("atoms  full (list+graph+E+F)       model only (E+F)                            BPTT step                                   energy (eV)")
        for r in sizes {
            let s = CHGNetBench.structure(repeats: r)
            let cells = s.cell.reshaped([1, 3, 3])
            let sys = AtomicSystem(s, cutoff: model.cutoff)
            var energy = 0.0
            let full = measureBoth(minRuns: 3, minSeconds: 2) {
                energy = model.evaluate(AtomicSystem(s, cutoff: model.cutoff), positions: s.positions, cells: cells).energy
            }
            var calls = 0
            var cpu0 = cpuTime()
            let only = measureBoth(minRuns: 3, minSeconds: 2) { _ = model.evaluate(sys, positions: s.positions, cells: cells); calls += 1 }
            let cpu = (cpuTime() - cpu0) / Double(calls)
            calls = 0
            cpu0 = cpuTime()
            let step = measureBoth(minRuns: 3, minSeconds: 2) { NeuralBench.bpttStep(model, sys, s); calls += 1 }
            let stepCPU = (cpuTime() - cpu0) / Double(calls)
            ours[s.count] = (full.min, only.min, cpu, step.min, stepCPU, energy)
            print(NeuralBench.pad(s.count, 7) + NeuralBench.pad("\(fmtTime(full.median)) (min \(fmtTime(full.min)))", 32)
                  + NeuralBench.pad("\(fmtTime(only.median)) (min \(fmtTime(only.min)), CPU \(fmtTime(cpu)))", 44)
                  + NeuralBench.pad("\(fmtTime(step.median)) (min \(fmtTime(step.min)), CPU \(fmtTime(stepCPU)))", 44) + String(format: "%.8f", energy))
        }
        print("BPTT step: energy, forces with createGraph, x' = x + 0.01·F, gradient of Σ 0.1·x' w.r.t. all parameters.")
        guard let python = peerPython() else {
            print("peer unavailable: no Python with sevenn (set RELAXFT_SEVENNET_PYTHON, or install sevenn==0.13.0 in ../shared/peers/.venv)")
            return
        }
        let script = repo.appendingPathComponent("scripts/peers/sevennet_bench.py").path
        for dtype in ["float32", "float64"] {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: python)
            p.arguments = [script, "--sizes"] + sizes.map(String.init) + ["--dtype", dtype]
            p.environment = ProcessInfo.processInfo.environment.merging(["OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"]) { $1 }
            let out = Pipe(), err = Pipe()
            p.standardOutput = out
            p.standardError = err
            do { try p.run() } catch {
                print("peer unavailable: cannot run \(python): \(error.localizedDescription)")
                return
            }
            let data = out.fileHandleForReading.readDataToEndOfFile()
            let errData = err.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            guard p.terminationStatus == 0 else {
                let tail = String(decoding: errData, as: UTF8.self).split(separator: "\n").last.map(String.init) ?? ""
                print("peer unavailable: \(script) exited with \(p.terminationStatus) under \(python) (\(tail))")
                return
            }
            print("sevenn 0.13.0 (PyTorch eager, \(dtype), 1 thread) vs relaxft; ratio = torch time / relaxft time (> 1: relaxft faster)")
            for line in String(decoding: data, as: UTF8.self).split(separator: "\n") where line.hasPrefix("{") {
                guard let j = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], let n = j["atoms"] as? Int,
                      let tf = j["full_min_s"] as? Double, let tm = j["model_min_s"] as? Double, let tc = j["model_cpu_s"] as? Double,
                      let tb = j["bptt_min_s"] as? Double, let tbc = j["bptt_cpu_s"] as? Double, let mine = ours[n] else { continue }
                print("  \(n) atoms: torch full \(fmtTime(tf)), model \(fmtTime(tm)) (CPU \(fmtTime(tc))), BPTT step \(fmtTime(tb)) (CPU \(fmtTime(tbc))); "
                      + "ratio full \(fmt(tf / mine.full)), model \(fmt(tm / mine.model)), model CPU \(fmt(tc / mine.cpu)), "
                      + "BPTT \(fmt(tb / mine.bptt)), BPTT CPU \(fmt(tbc / mine.bpttCPU))"
                      + String(format: "; E(torch) − E(relaxft) = %.2e eV", ((j["energy"] as? Double) ?? .nan) - mine.energy))
            }
        }
    }
}
