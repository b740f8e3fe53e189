import Foundation
import Testing
import Atoms
import Potentials
import Tape
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

// Kill anywhere, resume to the end: each trainer is SIGKILLed again and again at seeded random moments (a
// timer from process start, or the moment of its K-th atomic file replacement, just before or just after the
// rename, through RELAXFT_FAULT_KILL) and then continued with --resume (or started again when it was killed
// before its config.json existed), until it finishes. Its model files must then be bit-identical to those of
// an uninterrupted run, and its metrics the same rows (wall-clock columns aside).

/// One trainer's kill-anywhere problem: files to set up, the command of a new run in `run/`, the files to compare.
struct KillResumeCase: Sendable, CustomTestStringConvertible {
    let name: String
    let files: @Sendable (Scratch) throws -> Void
    let start: [String]
    let outputs: [String]
    var testDescription: String { name }
}

enum KillResumeCases {
    /// The first two SW vacancy cells of the recovery data.
    static func recoveryData(_ s: Scratch) throws {
        let frames = try StructureIO.read(repoRoot.appendingPathComponent("Fixtures/data/sw-recovery/train.extxyz").path)
        try StructureIO.write(Array(frames.prefix(2)), s.path("train.extxyz"))
    }

    /// Rattled 8-atom silicon cells labelled with Stillinger–Weber energies and forces.
    static func labelledFrames(_ s: Scratch) throws {
        var rng = SeededGenerator(seed: 25)
        var frames: [Structure] = []
        for _ in 0..<6 {
            var f = Structure.diamond(a: 5.431, repeats: 1)
            f.positions = f.positions + Tensor(shape: f.positions.shape, (0..<f.positions.count).map { _ in 0.1 * (rng.uniform() - 0.5) })
            let ev = StillingerWeber().evaluate(AtomicSystem(f, cutoff: StillingerWeber().cutoff), positions: f.positions, cells: f.cell.reshaped([1, 3, 3]))
            f.energy = ev.energy
            f.forces = ev.forces
            frames.append(f)
        }
        try StructureIO.write(frames, s.path("frames.extxyz"))
        try Data(HostileFixtures.rdfCSV.utf8).write(to: URL(fileURLWithPath: s.path("rdf.csv")))
    }

    static let all: [KillResumeCase] = [
        KillResumeCase(name: "finetune", files: recoveryData,
                       start: ["finetune", "--potential", "sw:sigma=2.16,lambda=19", "--data", "train.extxyz", "--relaxer", "fire", "--steps", "6",
                               "--epochs", "16", "--batch", "1", "--val-fraction", "0", "--lr", "0.01", "--relative-lr", "--threads", "1",
                               "--seed", "3", "--out", "run", "--quiet"],
                       outputs: ["best.safetensors", "last.safetensors"]),
        KillResumeCase(name: "pretrain", files: labelledFrames,
                       start: ["pretrain", "--data", "frames.extxyz", "--architecture", "schnet", "--features", "4", "--layers", "1", "--radial-basis", "4",
                               "--cutoff", "4", "--epochs", "16", "--batch", "2", "--val-fraction", "0.34", "--lr", "0.01", "--seed", "5", "--out", "run"],
                       outputs: ["best.safetensors", "last.safetensors"]),
        KillResumeCase(name: "stable", files: labelledFrames,
                       start: ["stable", "--potential", "sw:sigma=2.16,lambda=19", "--reference-observable", "rdf.csv", "--data", "frames.extxyz",
                               "--structure", "frames.extxyz", "--temperature", "600", "--replicas", "2", "--steps", "20", "--sample-interval", "5",
                               "--epochs", "16", "--unstable-fraction", "0", "--lambda", "0.1", "--seed", "7", "--out", "run"],
                       outputs: ["best.safetensors", "last.safetensors", "rdf.csv"]),
    ]
}

@Suite("kill anywhere, resume to the end", .serialized)
struct KillResumeTests {
    /// metrics.csv without its wall-clock column (seconds differ between processes; everything else must not).
    static func metricsWithoutTime(_ path: String) throws -> [String] {
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false) }
        guard let header = lines.first else { return [] }
        let keep = header.indices.filter { header[$0] != "seconds" }
        return lines.map { row in keep.map { $0 < row.count ? String(row[$0]) : "?" }.joined(separator: ",") }
    }

    @Test(arguments: KillResumeCases.all)
    func killedRunsResumeToTheSameModel(_ c: KillResumeCase) throws {
        let reference = try Scratch(), killed = try Scratch()
        defer { reference.remove(); killed.remove() }
        try c.files(reference)
        try c.files(killed)
        let t0 = Date()
        let straight = try runTool(relaxftBinary, c.start, in: reference.url)
        let duration = Date().timeIntervalSince(t0)
        try #require(straight.status == 0, "uninterrupted \(c.name): \(straight.stderr)")

        let resume = [c.start[0], "--resume", "run"]
        var rng = SeededGenerator(seed: 0x25_25 &+ UInt64(c.name.utf8.count))
        /// Epochs the killed run's directory records as done (rows of metrics.csv).
        func epochsDone() -> Int {
            let text = (try? String(contentsOfFile: killed.path("run/metrics.csv"), encoding: .utf8)) ?? ""
            return Swift.max(text.split(separator: "\n").count - 1, 0)
        }
        var kills: [(what: String, epochsDone: Int)] = []
        while true {
            // The first kill is a timer early in the first process (before its first epoch); then mostly the K-th
            // atomic file replacement of a process (1 ≤ K ≤ 12: every file of an epoch, before or after its
            // rename), sometimes a timer. Each resumed process gets further before it is killed, so the kills
            // spread over the whole run; the first process that is not killed finishes it.
            var environment: [String: String] = [:]
            var timer: Double? = nil
            var what = "none"
            if kills.count < 12 {
                if kills.isEmpty || rng.uniform() < 0.25 {
                    timer = (kills.isEmpty ? 0.05 : 0.15) * duration * rng.uniform()
                    what = String(format: "timer %.0f ms", 1000 * timer!)
                } else {
                    let moment = rng.uniform() < 0.5 ? "before-rename" : "after-rename"
                    let k = 1 + rng.int(below: 12)
                    environment["RELAXFT_FAULT_KILL"] = "\(moment):\(k)"
                    what = "\(moment) of write \(k)"
                }
            }
            // A run killed before its config.json existed has not started: its command is run again.
            let started = FileManager.default.fileExists(atPath: killed.path("run/config.json"))
            let r = try runTool(relaxftBinary, started ? resume : c.start, in: killed.url, environment: environment, timeout: timer, timeoutSignal: SIGKILL)
            if r.signaled || r.timedOut {
                kills.append((what + (started ? " (resumed)" : " (new run)"), epochsDone()))
                continue
            }
            try #require(r.status == 0, "\(c.name) after kills \(kills): exit \(r.status)\n\(r.stderr)")
            break
        }
        #expect(kills.count >= 10, "\(c.name): only \(kills.count) kills happened before the run finished: \(kills)")
        #expect(kills.first?.what.hasPrefix("timer") == true && kills.first?.epochsDone == 0, "\(kills)")
        // Kills before the first epoch and after several: the moments span the run.
        #expect(kills.contains { $0.epochsDone == 0 } && kills.contains { $0.epochsDone >= 3 }, "\(c.name): kills at \(kills)")
        for name in c.outputs {
            let a = try Data(contentsOf: URL(fileURLWithPath: reference.path("run/" + name)))
            let b = try Data(contentsOf: URL(fileURLWithPath: killed.path("run/" + name)))
            #expect(a == b, "\(c.name): \(name) differs from the uninterrupted run's after kills \(kills)")
        }
        #expect(try Self.metricsWithoutTime(reference.path("run/metrics.csv")) == Self.metricsWithoutTime(killed.path("run/metrics.csv")),
                "\(c.name): metrics.csv rows differ after kills \(kills)")
        let left = ((try? FileManager.default.contentsOfDirectory(atPath: killed.path("run"))) ?? []).filter { $0.contains(".relaxft-") }
        #expect(left.isEmpty, "\(c.name): temporary files left behind: \(left)")
        // The cost covers every process that got as far as recording it (at least the first and the last).
        let cost = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: killed.path("run/cost.json")))) as? [String: Any]
        #expect((cost?["sessions"] as? Int ?? 0) >= 2, "\(c.name): cost.json \(cost ?? [:])")
    }
}
