import Atoms
import FineTune
import Foundation
import Potentials
import Relax
import Tape

/// BPTT through FIRE on SW silicon: the peers' problem (JAX-MD flavour FIRE with float16 constants, SW with
/// JAX-MD's cos θ offset, θ = (σ, ε, λ), ΔQ with m = 28.0855 against the peers' target structures).
enum BPTTBench {
    static func problem(repeats n: Int) -> (RelaxationExample, StillingerWeber)? {
        let dir = repoRoot() + "/Fixtures/peers"
        guard var start = (try? StructureIO.read(dir + "/si_diamond_\(n)x\(n)x\(n)_vac.extxyz"))?.first,
              let target = (try? StructureIO.read(dir + "/sw_target_relaxed_\(n)x\(n)x\(n).extxyz"))?.first else { return nil }
        start.customMasses = Array(repeating: 28.0855, count: start.count)
        return (RelaxationExample(name: "peers", initial: start, target: target.positions), StillingerWeber(cosEpsilon: 1e-7))
    }

    /// One configuration in this process (called by `run` in a child process, so that peak RSS is its own).
    static func one(_ args: [String]) {
        let n = Int(args[0])!, T = Int(args[1])!, modeName = args[2]
        guard let (ex, pot) = problem(repeats: n) else { print("{}"); return }
        var settings = BPTTSettings(relaxer: FIREJaxMD(float16: true), steps: T)
        settings.mode = try! GradientMode.parse(modeName)
        let baseline = currentRSSMiB()
        var result: BPTTResult? = nil
        // One warm-up call, then the median of timed calls; peak RSS of the timed phase.
        _ = relaxationLossAndGradient(ex, potential: pot, settings: settings)
        resetPeakRSS()
        let t = measureBoth(minRuns: 3, minSeconds: 1) {
            result = relaxationLossAndGradient(ex, potential: pot, settings: settings)
        }
        let peak = hwmMiB()
        let r = result!
        let obj: [String: Any] = ["atoms": ex.initial.count, "T": T, "mode": modeName, "median_s": t.median, "min_s": t.min,
                                  "baseline_mib": baseline, "peak_mib": peak, "loss": r.loss,
                                  "grad": ["sigma": r.gradients["sigma"]!.scalar, "epsilon": r.gradients["epsilon"]!.scalar, "lambda": r.gradients["lambda"]!.scalar],
                                  "tape_nodes": r.tapeNodes, "cg_iterations": r.cgIterations]
        print(String(decoding: try! JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys]), as: UTF8.self))
    }

    static func run() {
        print("== BPTT through FIRE (JAX-MD flavour), SW Si 215 atoms: forward + backward, release, 1 thread ==")
        let env = ProcessInfo.processInfo.environment
        let Ts = env["BENCH_T"].map { $0.split(separator: ",").compactMap { Int($0) } } ?? [50, 100, 200, 400]
        let modes = env["BENCH_MODES"].map { $0.split(separator: ",").map(String.init) } ?? ["full", "checkpoint", "implicit"]
        var jax: [String: [String: Any]] = [:]
        if let peers = env["RELAXFT_PEERS"] {
            for T in Ts where T <= 200 {
                for m in ["grad_none", "grad_seg"] where !(m == "grad_seg" && T < 100) {
                    for o in runPeer(["\(peers)/jaxmd_bptt.py", "--n", "3", "--T", "\(T)", "--mode", m, "--repeats", "3"]) { jax["\(m)-\(T)"] = o }
                }
            }
        }
        print("T     mode         time       peak ΔRSS   tape nodes  loss                 JAX-MD (none / seg:10)          time ratio  memory ratio")
        for T in Ts {
            for mode in modes {
                let p = Process()
                p.executableURL = URL(fileURLWithPath: CommandLine.arguments[0])
                p.arguments = ["bptt-one", "3", "\(T)", mode]
                let pipe = Pipe()
                p.standardOutput = pipe
                try? p.run()
                let data = pipe.fileHandleForReading.readDataToEndOfFile()
                p.waitUntilExit()
                guard let o = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let tmin = o["min_s"] as? Double else {
                    print("\(T) \(mode): failed"); continue
                }
                let delta = (o["peak_mib"] as! Double) - (o["baseline_mib"] as! Double)
                var peer = "–", ratio = "–", mratio = "–"
                let key = mode == "full" ? "grad_none-\(T)" : "grad_seg-\(T)"
                if mode != "implicit", let j = jax[key], let jt = j["median_s"] as? Double {
                    let jm = (j["rss_exec_peak_mib"] as? Double ?? 0) - (j["rss_before_exec_mib"] as? Double ?? 0)
                    peer = String(format: "%.3f s, Δ%.0f MiB", jt, jm)
                    ratio = String(format: "%.2f", (o["median_s"] as! Double) / jt)
                    mratio = jm > 0 ? String(format: "%.2f", max(delta, 0.1) / jm) : "–"
                }
                print(pad("\(T)", 5) + " " + pad(mode, 12) + " " + pad(fmtTime(tmin), 10) + " " + pad(String(format: "%.1f MiB", delta), 11) + " "
                      + pad("\(o["tape_nodes"] as! Int)", 11) + " " + pad(String(format: "%.15g", o["loss"] as! Double), 20) + " "
                      + pad(peer, 31) + " " + pad(ratio, 11) + " " + mratio)
            }
        }
        print("(time: best of ≥3 calls after a warm-up; peak ΔRSS: VmHWM of the timed calls minus the RSS before them)")
    }
}

/// Repository root: the nearest directory above the bench binary (in .build/…) that holds Package.swift.
func repoRoot() -> String {
    var url = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    while url.path != "/" {
        if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url.path }
        url = url.deletingLastPathComponent()
    }
    return FileManager.default.currentDirectoryPath
}
