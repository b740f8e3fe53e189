import Atoms
import FineTune
import Foundation
import Potentials
import Relax
import Tape

/// Backpropagation through CHGNet relaxations beside PyTorch: the gradient of ΔQ with respect to all CHGNet 0.3.0
/// parameters through T force-following steps (η = 0.01, no max-step) on the two all-silicon cells of
/// `Fixtures/data/si-defects/test.extxyz` (frames 0 and 1: vacancy, 63 atoms; divacancy, 62 atoms), one gradient
/// per structure per epoch (`relaxft finetune --batch 1`). relaxft `full` and `checkpoint` run against the real
/// chgnet package through `torch_bptt.py` (the peers' script: forces with create_graph at every step, graph rebuilt
/// at every step) in float32 and float64. Every configuration runs in its own process, so that peak RSS is its
/// own; configurations are interleaved round by round, so that load on the shared machine hits all of them alike.
///
///     scripts/bench chgnet-bptt [--T 10,30] [--modes full,checkpoint] [--torch float32,float64 | --torch none]
///                               [--rounds 3] [--warmup 1] [--repeats 1] [--threads 1] [--json FILE]
///                               [--baseline BENCH_BINARY [--baseline-modes full,checkpoint]]
///
/// `--baseline` runs the same relaxft configurations with another build's relaxft-bench (an older commit) in the
/// same interleaved rounds, so that a before/after comparison shares its load and its PyTorch figures.
///
/// The PyTorch side needs RELAXFT_PEERS_PYTHON (a Python with torch and chgnet 0.4.2) and the script's location,
/// RELAXFT_CHGNET_BPTT (the path of torch_bptt.py) or RELAXFT_PEERS (its folder holds chgnet_bptt/torch_bptt.py).
enum CHGNetBPTTBench {
    static let dataFile = "Fixtures/data/si-defects/test.extxyz"
    static let frames = [0, 1]

    struct Options {
        var Ts = [10, 30]
        var modes = ["full", "checkpoint"]
        var torch = ["float32", "float64"]
        var rounds = 3
        var warmup = 1
        var repeats = 1
        var threads = 1
        var json: String? = nil
        var baseline: String? = nil
        var baselineModes: [String]? = nil
    }

    static func parse(_ args: [String]) -> Options {
        var o = Options()
        var i = 0
        func value() -> String {
            guard i + 1 < args.count else { fail("option \(args[i]) needs a value") }
            i += 1
            return args[i]
        }
        func ints(_ s: String, _ name: String) -> [Int] {
            let v = s.split(separator: ",").map { Int($0) }
            guard !v.isEmpty, v.allSatisfy({ $0 != nil && $0! > 0 }) else { fail("\(name) expects positive integers separated by commas, got '\(s)'") }
            return v.map { $0! }
        }
        func int(_ s: String, _ name: String, min: Int) -> Int {
            guard let v = Int(s), v >= min else { fail("\(name) expects an integer ≥ \(min), got '\(s)'") }
            return v
        }
        while i < args.count {
            switch args[i] {
            case "--T": o.Ts = ints(value(), "--T")
            case "--modes":
                o.modes = value().split(separator: ",").map(String.init)
                for m in o.modes where (try? GradientMode.parse(m)) == nil { fail("--modes: unknown gradient mode '\(m)'") }
            case "--torch":
                let v = value()
                o.torch = v == "none" ? [] : v.split(separator: ",").map(String.init)
                for d in o.torch where d != "float32" && d != "float64" { fail("--torch expects float32, float64 or none, got '\(d)'") }
            case "--rounds": o.rounds = int(value(), "--rounds", min: 1)
            case "--warmup": o.warmup = int(value(), "--warmup", min: 0)
            case "--repeats": o.repeats = int(value(), "--repeats", min: 1)
            case "--threads": o.threads = int(value(), "--threads", min: 1)
            case "--json": o.json = value()
            case "--baseline":
                o.baseline = value()
                guard FileManager.default.isExecutableFile(atPath: o.baseline!) else { fail("--baseline: '\(o.baseline!)' is not an executable file") }
            case "--baseline-modes":
                o.baselineModes = value().split(separator: ",").map(String.init)
                for m in o.baselineModes! where (try? GradientMode.parse(m)) == nil { fail("--baseline-modes: unknown gradient mode '\(m)'") }
            default: fail("unknown option \(args[i]) (--T, --modes, --torch, --rounds, --warmup, --repeats, --threads, --json, --baseline, --baseline-modes)")
            }
            i += 1
        }
        return o
    }

    static func fail(_ message: String) -> Never {
        FileHandle.standardError.write("relaxft-bench chgnet-bptt: \(message)\n".data(using: .utf8)!)
        exit(2)
    }

    static func loadModel() -> CHGNet? {
        let path = ModelStore.path(of: "chgnet-0.3.0")
        return try? ModelFile.load(path).potential as? CHGNet
    }

    static func examples() throws -> [RelaxationExample] {
        let path = repoRoot() + "/" + dataFile
        let all = try StructureIO.read(path)
        return try RelaxationDataset.examples(from: frames.map { all[$0] }, source: dataFile)
    }

    /// One relaxft configuration in this process: `chgnet-bptt-one T MODE WARMUP REPEATS THREADS GRADFILE`. Prints a
    /// JSON line; writes the gradients of the last epoch (all frames, parameters in name order, float64) to GRADFILE.
    static func one(_ args: [String]) {
        let T = Int(args[0])!, mode = args[1], warmup = Int(args[2])!, repeats = Int(args[3])!, gradFile = args[5]
        guard let model = loadModel() else { print("{}"); return }
        let exs = try! examples()
        var settings = BPTTSettings(relaxer: ForceFollowing(eta: 0.01, maxstep: 0), steps: T)
        settings.mode = try! GradientMode.parse(mode)
        let names = model.parameters.keys.sorted()
        let rssBefore = currentRSSMiB()
        var results: [BPTTResult] = []
        func epoch() -> (cpu: Double, wall: Double, faults: Int) {
            let (c0, t0, f0) = (cpuTime(), now(), minorFaults())
            results = IntraOpThreads.$count.withValue(Int(args[4]) ?? 1) { exs.map { relaxationLossAndGradient($0, potential: model, settings: settings) } }
            return (cpuTime() - c0, now() - t0, minorFaults() - f0)
        }
        let warm = (0..<warmup).map { _ in epoch() }
        let timed = (0..<repeats).map { _ in epoch() }
        let peak = peakRSSMiB()
        var flat: [Double] = []
        var frameOut: [[String: Any]] = []
        for (k, r) in results.enumerated() {
            var g: [Double] = []
            for name in names { g += r.gradients[name]!.array }
            flat += g
            frameOut.append(["frame": frames[k], "atoms": exs[k].initial.count, "loss": r.loss, "grad_norm": g.reduce(0) { $0 + $1 * $1 }.squareRoot(),
                             "zero_grads": g.filter { $0 == 0 }.count, "tape_nodes": r.tapeNodes])
        }
        try! flat.withUnsafeBufferPointer { Data(buffer: $0) }.write(to: URL(fileURLWithPath: gradFile))
        let obj: [String: Any] = ["side": "relaxft", "mode": mode, "T": T, "parameters": model.parameterCount,
                                  "warmup_epoch_cpu_s": warm.map(\.cpu), "warmup_epoch_faults": warm.map(\.faults),
                                  "epoch_cpu_s": timed.map(\.cpu), "epoch_wall_s": timed.map(\.wall), "epoch_faults": timed.map(\.faults),
                                  "rss_before_mib": rssBefore, "peak_rss_mib": peak, "frames": frameOut,
                                  "operations_split_per_epoch": IntraOpThreads.splits / Swift.max(1, warmup + repeats)]
        print(String(decoding: try! JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys]), as: UTF8.self))
    }

    /// Result of one process: CPU seconds per epoch, first-epoch CPU seconds, peak RSS, and per frame loss and |grad|.
    struct Run {
        var epochCPU: [Double]
        var firstEpochCPU: Double?
        var peakMiB: Double
        var losses: [Double]
        var norms: [Double]
        var gradients: [Double]?
    }

    static func runRelaxft(T: Int, mode: String, o: Options, tmp: URL, binary: String? = nil) -> Run? {
        let gfile = tmp.appendingPathComponent("\(binary == nil ? "" : "baseline-")\(mode)-\(T).bin").path
        let out = runChild(binary ?? CommandLine.arguments[0], ["chgnet-bptt-one", "\(T)", mode, "\(o.warmup)", "\(o.repeats)", "\(o.threads)", gfile], env: [:])
        guard let j = out.first, let cpu = j["epoch_cpu_s"] as? [Double], let peak = j["peak_rss_mib"] as? Double,
              let fr = j["frames"] as? [[String: Any]] else { return nil }
        let g = (try? Data(contentsOf: URL(fileURLWithPath: gfile))).map { d in d.withUnsafeBytes { Array($0.bindMemory(to: Double.self)) } }
        return Run(epochCPU: cpu, firstEpochCPU: (j["warmup_epoch_cpu_s"] as? [Double])?.first, peakMiB: peak,
                   losses: fr.map { $0["loss"] as! Double }, norms: fr.map { $0["grad_norm"] as! Double }, gradients: g)
    }

    static func torchScript() -> String? {
        let env = ProcessInfo.processInfo.environment
        if let s = env["RELAXFT_CHGNET_BPTT"], !s.isEmpty { return s }
        if let p = env["RELAXFT_PEERS"], !p.isEmpty { return p + "/chgnet_bptt/torch_bptt.py" }
        return nil
    }

    static func runTorch(T: Int, dtype: String, o: Options) -> Run? {
        let env = ProcessInfo.processInfo.environment
        guard let python = env["RELAXFT_PEERS_PYTHON"], let script = torchScript() else { return nil }
        let args = [script, "--data", repoRoot() + "/" + dataFile, "--frames"] + frames.map(String.init)
            + ["--dtype", dtype, "--T", "\(T)", "--eta", "0.01", "--warmup", "\(o.warmup)", "--repeats", "\(o.repeats)"]
        let out = runChild(python, args, env: ["OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"])
        guard let j = out.last, let cpu = j["epoch_cpu_s"] as? [Double], let peak = j["peak_rss_mib"] as? Double,
              let fr = j["frames"] as? [[String: Any]] else { return nil }
        return Run(epochCPU: cpu, firstEpochCPU: (j["warmup_epoch_cpu_s"] as? [Double])?.first, peakMiB: peak,
                   losses: fr.map { $0["loss_dQ"] as! Double }, norms: fr.map { $0["grad_norm"] as! Double }, gradients: nil)
    }

    /// Runs a child process and returns the JSON objects it printed, one per line.
    static func runChild(_ executable: String, _ args: [String], env extra: [String: String]) -> [[String: Any]] {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = args
        p.environment = ProcessInfo.processInfo.environment.merging(extra) { $1 }
        let pipe = Pipe()
        p.standardOutput = pipe
        do { try p.run() } catch { return [] }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return String(decoding: data, as: UTF8.self).split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }

    static func median(_ xs: [Double]) -> Double {
        let s = xs.sorted()
        guard !s.isEmpty else { return .nan }
        return s.count % 2 == 1 ? s[s.count / 2] : 0.5 * (s[s.count / 2 - 1] + s[s.count / 2])
    }

    static func run(_ args: [String]) {
        let o = parse(args)
        guard loadModel() != nil else {
            print("chgnet-bptt: skipped: \(ModelStore.path(of: "chgnet-0.3.0")) not found (run 'relaxft models pull chgnet-0.3.0')")
            return
        }
        let torchReady = ProcessInfo.processInfo.environment["RELAXFT_PEERS_PYTHON"] != nil && torchScript() != nil
        let dtypes = torchReady ? o.torch : []
        print("== chgnet-bptt: ∂ΔQ/∂θ (all CHGNet 0.3.0 parameters) through T force-following steps (η = 0.01), \(dataFile) frames 0 and 1 "
              + "(63 + 62 Si atoms), one gradient per structure per epoch; \(o.threads) thread(s); \(o.rounds) round(s) × (\(o.warmup) warm-up + "
              + "\(o.repeats) timed epoch(s)) per configuration, each in its own process, interleaved ==")
        if !torchReady && !o.torch.isEmpty {
            print("PyTorch side skipped: set RELAXFT_PEERS_PYTHON (Python with torch and chgnet 0.4.2) and RELAXFT_CHGNET_BPTT (torch_bptt.py) or RELAXFT_PEERS")
        }
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("relaxft-chgnet-bptt-\(getpid())")
        try? FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        var report: [[String: Any]] = []
        for T in o.Ts {
            let baselineModes = o.baseline == nil ? [] : (o.baselineModes ?? o.modes)
            let configs = dtypes.map { "torch " + $0 } + baselineModes.map { "baseline " + $0 } + o.modes.map { "relaxft " + $0 }
            var runs: [String: [Run]] = [:]
            for round in 0..<o.rounds {
                for c in configs {
                    let r: Run?
                    if c.hasPrefix("torch ") { r = runTorch(T: T, dtype: String(c.dropFirst(6)), o: o) } else if c.hasPrefix("baseline ") {
                        r = runRelaxft(T: T, mode: String(c.dropFirst(9)), o: o, tmp: tmp, binary: o.baseline)
                    } else {
                        r = runRelaxft(T: T, mode: String(c.dropFirst(8)), o: o, tmp: tmp)
                    }
                    guard let r else { print("T = \(T), \(c), round \(round + 1): failed"); continue }
                    runs[c, default: []].append(r)
                    FileHandle.standardError.write(String(format: "  [T = %d, round %d] %@: %.2f CPU s/epoch, peak %.0f MiB\n", T, round + 1, c,
                                                          median(r.epochCPU), r.peakMiB).data(using: .utf8)!)
                }
            }
            print("\nT = \(T)")
            print("configuration          CPU s/epoch  first epoch  peak RSS    ΔQ (frame 0, 1)                 |∂ΔQ/∂θ| (frame 0, 1)")
            var summary: [String: (cpu: Double, peak: Double)] = [:]
            for c in configs {
                guard let rs = runs[c], !rs.isEmpty else { continue }
                let cpu = median(rs.flatMap(\.epochCPU)), peak = median(rs.map(\.peakMiB))
                let first = rs.compactMap(\.firstEpochCPU)
                summary[c] = (cpu, peak)
                let last = rs.last!
                print(pad(c, 22) + " " + pad(String(format: "%.2f", cpu), 12) + " " + pad(first.isEmpty ? "–" : String(format: "%.2f", median(first)), 12) + " "
                      + pad(String(format: "%.2f GB", peak / 1024), 11) + " " + pad(last.losses.map { String(format: "%.12f", $0) }.joined(separator: ", "), 31) + " "
                      + last.norms.map { String(format: "%.12f", $0) }.joined(separator: ", "))
                report.append(["T": T, "configuration": c, "median_epoch_cpu_s": cpu, "median_peak_rss_mib": peak, "first_epoch_cpu_s": first,
                               "epoch_cpu_s": rs.flatMap(\.epochCPU), "peak_rss_mib": rs.map(\.peakMiB), "loss": last.losses, "grad_norm": last.norms])
            }
            // Gradient agreement: norms against PyTorch float64 (same problem, same precision), checkpoint against full bit for bit.
            if let ref = runs["torch float64"]?.last {
                for m in o.modes {
                    guard let r = runs["relaxft " + m]?.last else { continue }
                    let rel = zip(r.norms, ref.norms).map { abs($0 - $1) / abs($1) }.max() ?? .nan
                    let lrel = zip(r.losses, ref.losses).map { abs($0 - $1) / abs($1) }.max() ?? .nan
                    print(String(format: "relaxft %@ vs PyTorch float64: max relative difference of |grad| %.1e, of ΔQ %.1e", m, rel, lrel))
                }
            }
            if let f = runs["relaxft full"]?.last?.gradients, let c = runs["relaxft checkpoint"]?.last?.gradients, f.count == c.count {
                let same = zip(f, c).allSatisfy { $0.bitPattern == $1.bitPattern }
                let maxDiff = zip(f, c).map { abs($0 - $1) }.max() ?? 0, maxG = f.map(abs).max() ?? 1
                print(same ? "checkpoint vs full: gradients bit-identical"
                      : String(format: "checkpoint vs full: gradients NOT bit-identical (max |Δg|/max |g| = %.2e)", maxDiff / maxG))
            }
            for m in o.modes {
                guard let b = runs["baseline " + m]?.last?.gradients, let r = runs["relaxft " + m]?.last?.gradients, b.count == r.count else { continue }
                let maxDiff = zip(b, r).map { abs($0 - $1) }.max() ?? 0, maxG = b.map(abs).max() ?? 1
                print(String(format: "relaxft %@ vs baseline %@: max |Δg|/max |g| = %.2e", m, m, maxDiff / maxG))
            }
            let best = o.modes.compactMap { m in summary["relaxft " + m].map { (m, $0) } }.min { $0.1.cpu < $1.1.cpu }
            if let t32 = summary["torch float32"], let best {
                let leanest = o.modes.compactMap { summary["relaxft " + $0]?.peak }.min()!
                print(String(format: "relaxft fastest (%@) / PyTorch float32, CPU time: %.2f (target ≤ 0.5); leanest relaxft / PyTorch float32, peak RSS: %.2f (target ≤ 0.25)",
                             best.0, best.1.cpu / t32.cpu, leanest / t32.peak))
            }
            if let t64 = summary["torch float64"], let full = summary["relaxft full"] {
                print(String(format: "relaxft full / PyTorch float64, peak RSS: %.2f (target ≤ 1)", full.peak / t64.peak))
            }
        }
        print("\n(CPU s/epoch: median over rounds of the timed epochs' user+system CPU time; first epoch: the warm-up epoch; peak RSS: the "
              + "process's maximum resident set (getrusage), median over rounds)")
        if let path = o.json {
            try? JSONSerialization.data(withJSONObject: report, options: [.prettyPrinted, .sortedKeys]).write(to: URL(fileURLWithPath: path))
        }
    }
}

/// Minor page faults of this process so far.
func minorFaults() -> Int {
    var ru = rusage()
    getrusage(RUSAGE_SELF.rawValue, &ru)
    return ru.ru_minflt
}
