import Atoms
import CLinalg
import FineTune
import Foundation
import Potentials
import Relax
import Tape

/// Memory of the gradient modes on a 64-site Si vacancy cell with the committed SO3krates model: full BPTT,
/// checkpointed BPTT (same gradient, less memory), implicit differentiation and guided mode (a 20-step window,
/// then the implicit gradient at the minimum), each in its own process so that each peak RSS is that mode's own.
enum MemoryBench {
    static let modelFile = "Fixtures/models/si-so3krates-pretrained.safetensors"

    /// 2×2×2 diamond at the DFT lattice constant, one atom removed (63 atoms), rattled like the DFT defect
    /// data (σ = 0.1/√3 Å per component); the target is the unrattled vacancy lattice (the loss value is
    /// incidental, the cost of its gradient is what is measured).
    static func problem() -> RelaxationExample {
        let perfect = Structure.diamond(a: 5.4912, repeats: 2)
        let n = perfect.count - 1
        let lattice = Tensor(shape: [n, 3], Array(perfect.positions.array.dropFirst(3)))
        var rng = SeededGenerator(seed: 63)
        let start = lattice + rng.normalTensor([n, 3], scale: 0.1 / 3.0.squareRoot())
        let s = Structure(numbers: Array(repeating: 14, count: n), positions: start, cell: perfect.cell, pbc: [true, true, true])
        return RelaxationExample(name: "si63-vacancy", initial: s, target: lattice)
    }

    static func settings(T: Int, mode: String) -> BPTTSettings {
        var s = BPTTSettings(relaxer: FIRE(dt: 0.1), steps: T)
        s.mode = try! GradientMode.parse(mode)
        return s
    }

    /// One mode in this process: prints a JSON line and writes the flattened gradient (float64) to `gradFile`.
    static func one(_ args: [String]) {
        let T = Int(args[0])!, mode = args[1], gradFile = args[2]
        let model = try! ModelFile.load(repoRoot() + "/" + modelFile).potential
        let ex = problem()
        let params = Dictionary(uniqueKeysWithValues: model.parameters.map { ($0.key, $0.value) })
        let s = settings(T: T, mode: mode)
        let baseline = currentRSSMiB()
        // Bytes allocated and not freed, sampled every 2 ms: tells live data from heap the allocator keeps.
        let sampler = InUseSampler()
        resetPeakRSS()
        let (t0, c0) = (now(), cpuTime())
        sampler.start()
        let r = relaxationLossAndGradient(ex, potential: model, settings: s)
        let inUse = sampler.stop()
        let (wall, cpu) = (now() - t0, cpuTime() - c0)
        let peak = hwmMiB()
        var flat: [Double] = []
        for k in params.keys.sorted() { flat += r.gradients[k]!.array }
        let data = flat.withUnsafeBufferPointer { Data(buffer: $0) }
        try! data.write(to: URL(fileURLWithPath: gradFile))
        let norm = flat.reduce(0) { $0 + $1 * $1 }.squareRoot()
        let obj: [String: Any] = ["atoms": ex.initial.count, "T": T, "mode": mode, "wall_s": wall, "cpu_s": cpu, "baseline_mib": baseline,
                                  "peak_mib": peak, "peak_in_use_mib": inUse, "loss": r.loss, "grad_norm": norm, "parameters": flat.count, "steps": r.steps,
                                  "fmax": r.fmax ?? -1, "tape_nodes": r.tapeNodes, "cg_iterations": r.cgIterations]
        print(String(decoding: try! JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys]), as: UTF8.self))
    }

    static func run() {
        let env = ProcessInfo.processInfo.environment
        let T = env["BENCH_T"].flatMap { Int($0) } ?? 60
        let modes = env["BENCH_MODES"].map { $0.split(separator: ",").map(String.init) } ?? ["full", "checkpoint", "implicit", "guided:20"]
        guard FileManager.default.fileExists(atPath: repoRoot() + "/" + modelFile) else { print("memory: \(modelFile) missing"); return }
        print("== gradient modes, SO3krates (\(modelFile)), 63-atom Si vacancy cell, FIRE dt 0.1, T = \(T), one thread, one process each ==")
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("relaxft-memory-\(getpid())")
        try? FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        var results: [String: [String: Any]] = [:], grads: [String: [Double]] = [:]
        for mode in modes {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: CommandLine.arguments[0])
            let gfile = tmp.appendingPathComponent("\(mode).bin").path
            p.arguments = ["memory-one", "\(T)", mode, gfile]
            let pipe = Pipe()
            p.standardOutput = pipe
            try? p.run()
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            guard let o = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let g = try? Data(contentsOf: URL(fileURLWithPath: gfile)) else {
                print("\(mode): failed"); continue
            }
            results[mode] = o
            grads[mode] = g.withUnsafeBytes { Array($0.bindMemory(to: Double.self)) }
        }
        print("mode          peak RSS  Δ over start  live peak  wall      CPU       steps  tape nodes  loss               |grad|             vs full: max|Δg|/max|g|  cos")
        let ref = grads["full"]
        var out: [[String: Any]] = []
        for mode in modes {
            guard var o = results[mode], let g = grads[mode] else { continue }
            let peak = o["peak_mib"] as! Double, base = o["baseline_mib"] as! Double
            var diff = "–", cos = "–"
            if let ref, ref.count == g.count {
                let maxDiff = zip(ref, g).map { abs($0 - $1) }.max() ?? 0, maxRef = ref.map(abs).max() ?? 1
                let dot = zip(ref, g).reduce(0) { $0 + $1.0 * $1.1 }
                let c = dot / (ref.reduce(0) { $0 + $1 * $1 }.squareRoot() * g.reduce(0) { $0 + $1 * $1 }.squareRoot())
                diff = maxDiff == 0 ? "0 (bitwise)" : String(format: "%.2e", maxDiff / maxRef)
                cos = String(format: "%.6f", c)
                o["max_rel_grad_diff_vs_full"] = maxDiff / maxRef
                o["cosine_vs_full"] = c
            }
            o["peak_delta_mib"] = peak - base
            out.append(o)
            print(pad(mode, 13) + " " + pad(String(format: "%.0f MiB", peak), 9) + " " + pad(String(format: "%.0f MiB", peak - base), 13) + " "
                  + pad(String(format: "%.0f MiB", o["peak_in_use_mib"] as! Double), 10) + " "
                  + pad(fmtTime(o["wall_s"] as! Double), 9) + " " + pad(fmtTime(o["cpu_s"] as! Double), 9) + " " + pad("\(o["steps"] as! Int)", 6) + " "
                  + pad("\(o["tape_nodes"] as! Int)", 11) + " " + pad(String(format: "%.12g", o["loss"] as! Double), 18) + " "
                  + pad(String(format: "%.12g", o["grad_norm"] as! Double), 18) + " " + pad(diff, 24) + " " + cos)
        }
        if let f = results["full"], let c = results["checkpoint"] {
            let ratio = ((c["peak_mib"] as! Double) - (c["baseline_mib"] as! Double)) / ((f["peak_mib"] as! Double) - (f["baseline_mib"] as! Double))
            print(String(format: "checkpoint / full, peak RSS above the process's start: %.3f (criterion ≤ 0.25); whole-process peak: %.3f", ratio,
                         (c["peak_mib"] as! Double) / (f["peak_mib"] as! Double)))
        }
        if let path = env["BENCH_JSON"] {
            try? JSONSerialization.data(withJSONObject: out, options: [.prettyPrinted, .sortedKeys]).write(to: URL(fileURLWithPath: path))
        }
        print("(peak RSS: VmHWM of the gradient call; Δ: minus the RSS before it (model loaded); live peak: most heap bytes allocated at once; implicit: FIRE to fmax 1e-6, then CG on the Hessian system; guided:K: K recorded steps, the same FIRE continued to fmax 1e-6, CG there)")
    }
}

/// Samples glibc's count of allocated bytes (mallinfo2) on a background thread and keeps the maximum.
final class InUseSampler: @unchecked Sendable {
    private let lock = NSLock()
    private var running = false
    private var peak = 0.0
    private var thread: Thread?

    func start() {
        running = true
        let t = Thread { [self] in
            while lock.withLock({ running }) {
                let m = Double(mallinfo2().uordblks) / 1048576
                lock.withLock { peak = Swift.max(peak, m) }
                usleep(2000)
            }
        }
        thread = t
        t.start()
    }

    /// Stops sampling; the peak in MiB.
    func stop() -> Double {
        lock.withLock { running = false }
        usleep(5000)
        return lock.withLock { Swift.max(peak, Double(mallinfo2().uordblks) / 1048576) }
    }
}

