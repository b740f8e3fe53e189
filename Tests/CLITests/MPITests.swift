import Foundation
import Potentials
import Testing

/// Open MPI's launcher: RELAXFT_TEST_MPIRUN, else `mpirun` on the PATH; nil when absent (the MPI runs are then
/// skipped; CI installs Open MPI and sets RELAXFT_TEST_REQUIRE_MPI=1, which turns the skip into a failure).
let mpirunPath: String? = {
    let env = ProcessInfo.processInfo.environment
    if let p = env["RELAXFT_TEST_MPIRUN"] { return FileManager.default.isExecutableFile(atPath: p) ? p : nil }
    let dirs = (env["PATH"] ?? "").split(separator: ":").map(String.init) + ["/usr/bin", "/usr/local/bin"]
    return dirs.map { $0 + "/mpirun" }.first { FileManager.default.isExecutableFile(atPath: $0) }
}()

/// Runs `executable args` in a scratch directory with runTool's clean environment (no launcher variables leak in
/// from a test run that is itself under mpirun or srun), Open MPI's permission for root, and `environment`; a run
/// still going after `timeout` seconds is killed (a hang is a failure, not a stall).
func runWithTimeout(_ executable: String, _ args: [String], environment: [String: String] = [:], timeout: Double = 120) throws
    -> (run: CLIRun, seconds: Double, timedOut: Bool) {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("relaxft-mpi-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    var env = ["SWIFT_BACKTRACE": "enable=no", "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"]
    for k in ["HOME", "TMPDIR"] { if let v = ProcessInfo.processInfo.environment[k] { env[k] = v } }
    let path = URL(fileURLWithPath: executable).deletingLastPathComponent().path + ":/usr/bin:/bin:/usr/local/bin"
    let start = Date()
    let run = try runTool(executable, args, in: dir, path: path, environment: env.merging(environment) { $1 }, timeout: timeout)
    return (run, Date().timeIntervalSince(start), run.stderr.hasSuffix("s]") && run.stderr.contains("[killed after"))
}

/// The JSON line of `relaxft mpi-selftest`.
func selftestReport(_ r: CLIRun) -> [String: Any] {
    r.stdout.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }.first ?? [:]
}

/// The MPI layer without MPI: a single process never loads it, and asking for it when it cannot be loaded is
/// an error that says what to do.
@Suite("MPI layer without mpirun")
struct MPIWithoutLauncherTests {
    @Test func singleProcessRunsAloneAndNeverLoadsMPI() throws {
        let (r, _, _) = try runWithTimeout(relaxftBinary, ["mpi-selftest"])
        #expect(r.status == 0, "\(r.stderr)")
        let j = selftestReport(r)
        #expect(j["size"] as? Int == 1 && j["ok"] as? Bool == true && j["backend"] as? String == "single process")
        #expect(j["libmpi_loaded"] as? Bool == false)
        #expect(j["unordered_equal"] as? Bool == true, "one rank: nothing to reorder")
    }

    @Test func requestedButUnloadableMPIIsAClearError() throws {
        let (r, _, _) = try runWithTimeout(relaxftBinary, ["mpi-selftest"], environment: ["RELAXFT_MPI": "on", "RELAXFT_MPI_LIBRARY": "/nonexistent/libmpi.so.40"])
        #expect(r.status == 2)
        #expect(r.stderr.contains("cannot load Open MPI (/nonexistent/libmpi.so.40)") && r.stderr.contains("apt-get install openmpi-bin"), "\(r.stderr)")
        let bad = try runWithTimeout(relaxftBinary, ["mpi-selftest"], environment: ["RELAXFT_MPI": "yes"]).run
        #expect(bad.status == 2 && bad.stderr.contains("RELAXFT_MPI=yes: expected auto, on or off"), "\(bad.stderr)")
    }

    @Test func aLauncherVariableWithoutAnMPIWorldIsAnError() throws {
        // As if srun started 2 tasks without an MPI plugin: with Open MPI installed, MPI sees a world of one;
        // without it, it cannot be loaded. Either way no task trains alone.
        let (r, _, _) = try runWithTimeout(relaxftBinary, ["mpi-selftest"], environment: ["SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_ID": "0", "SLURM_PROCID": "0"])
        #expect(r.status == 2)
        #expect(r.stderr.contains("srun"), "\(r.stderr)")
        #expect(r.stdout.isEmpty)
    }
}

/// Commands that run in one process, started as several tasks: every task would do the whole job and write the same
/// files, so they refuse (the message once, from the launcher's rank 0).
@Suite("single-process commands under a launcher")
struct MultiTaskRefusalTests {
    @Test func commandsThatRunInOneProcessRefuseSeveralTasks() throws {
        for rank in ["0", "1"] {
            let r = try runWithTimeout(relaxftBinary, ["convert", "in.xyz", "out.xyz"],
                                       environment: ["OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": rank, "PMIX_RANK": rank]).run
            #expect(r.status == 2)
            let message = "relaxft convert: started as 2 tasks by mpirun (OMPI_COMM_WORLD_SIZE=2), but convert runs in one process"
            #expect(r.stderr.contains(message) == (rank == "0"), "rank \(rank): \(r.stderr)")
        }
        // One task, or RELAXFT_MPI=off: the command runs (and fails on the missing file, not on the launch).
        for env in [["OMPI_COMM_WORLD_SIZE": "1"], ["SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_ID": "0", "RELAXFT_MPI": "off"]] {
            let r = try runWithTimeout(relaxftBinary, ["convert", "in.xyz", "out.xyz"], environment: env).run
            #expect(r.status == 2 && r.stderr.contains("in.xyz") && !r.stderr.contains("runs in one process"), "\(env): \(r.stderr)")
        }
    }

    /// scripts/sweep --tasks: each Slurm array task asks for R tasks and starts every relaxft command of its run with
    /// srun (here a stand-in srun that records its arguments and runs the command once).
    @Test func sweepGivesEachRunSeveralTasks() throws {
        let dir = try Scratch(copying: ["Fixtures/data/sw-recovery/train.extxyz", "Fixtures/data/sw-recovery/test.extxyz"])
        defer { dir.remove() }
        try """
            pretrained = \(perturbedSW)
            data = train.extxyz
            relaxer = fire
            steps = 4
            seed = 0, 1
            epochs = 1
            args = --relative-lr --train-params sigma,lambda --val-fraction 0.25
            eval-data = test.extxyz
            eval-args = --relaxer fire --steps 20
            """.write(toFile: dir.path("spec.txt"), atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: dir.path("bin"), withIntermediateDirectories: true)
        try "#!/bin/sh\necho \"$@\" >> \"$FAKE_SRUN_LOG\"\nshift\nexec \"$@\"\n".write(toFile: dir.path("bin/srun"), atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: dir.path("bin/srun"))
        let sweep = repoRoot.appendingPathComponent("scripts/sweep").path
        let s = try runTool("/usr/bin/python3", [sweep, "spec.txt", "--out", "sw", "--slurm", "--no-submit", "--tasks", "4", "--cpus", "2",
                                                 "--relaxft", relaxftBinary], in: dir.url)
        #expect(s.status == 0 && s.stdout.contains("4 tasks each"), "\(s.stdout) \(s.stderr)")
        let script = try String(contentsOfFile: dir.path("sw/sweep.sbatch"), encoding: .utf8)
        #expect(script.contains("#SBATCH --ntasks=4\n") && script.contains("#SBATCH --cpus-per-task=2\n"), "\(script)")
        #expect(script.contains("export SRUN_CPUS_PER_TASK=") && script.contains("--tasks 4 --launcher 'srun --kill-on-bad-exit=1'"), "\(script)")
        let task = try runTool("/bin/bash", [dir.path("sw/sweep.sbatch")], in: dir.url, path: dir.path("bin") + ":/usr/bin:/bin",
                               environment: ["SLURM_ARRAY_TASK_ID": "1", "SLURM_CPUS_PER_TASK": "1", "FAKE_SRUN_LOG": dir.path("srun.log")])
        #expect(task.status == 0 && task.stdout.contains("run001: done"), "\(task.stdout) \(task.stderr)")
        let calls = try String(contentsOfFile: dir.path("srun.log"), encoding: .utf8).split(separator: "\n")
        #expect(calls.count == 2 && calls[0].hasPrefix("--kill-on-bad-exit=1 \(relaxftBinary) finetune ")
                && calls[1].hasPrefix("--kill-on-bad-exit=1 \(relaxftBinary) evaluate "), "\(calls)")
        // Locally: mpirun -n R (shown by --dry-run).
        let dry = try runTool("/usr/bin/python3", [sweep, "spec.txt", "--out", "sw2", "--dry-run", "--tasks", "2"], in: dir.url)
        #expect(dry.stdout.contains("mpirun -n 2 relaxft finetune") && dry.stdout.contains("mpirun -n 2 relaxft evaluate"), "\(dry.stdout)")
    }
}

@Suite("MPI layer under mpirun", .serialized,
       .enabled(if: mpirunPath != nil || ProcessInfo.processInfo.environment["RELAXFT_TEST_REQUIRE_MPI"] == "1",
                "mpirun not found: install Open MPI (apt-get install openmpi-bin libopenmpi-dev) to run the MPI tests"))
struct MPITests {
    @Test func collectivesGiveOneProcessBitsForAnyRankCount() throws {
        guard let mpirun = mpirunPath else { Issue.record("RELAXFT_TEST_REQUIRE_MPI=1 but mpirun is not installed"); return }
        let alone = selftestReport(try runWithTimeout(relaxftBinary, ["mpi-selftest"]).run)
        let reference = try #require(alone["ordered_hash"] as? String)
        for n in [1, 2, 3] {
            // -n 1 joins MPI only when asked (RELAXFT_MPI=on), so that the one-rank MPI path is exercised too.
            let (r, seconds, timedOut) = try runWithTimeout(mpirun, ["--oversubscribe", "-n", "\(n)", "-x", "RELAXFT_MPI", relaxftBinary, "mpi-selftest"],
                                                            environment: ["RELAXFT_MPI": n == 1 ? "on" : "auto"])
            #expect(!timedOut && r.status == 0, "mpirun -n \(n): status \(r.status) after \(seconds) s\n\(r.stderr)")
            let j = selftestReport(r)
            #expect(j["size"] as? Int == n && j["ok"] as? Bool == true, "mpirun -n \(n): \(r.stdout)\n\(r.stderr)")
            #expect((j["backend"] as? String)?.hasPrefix("Open MPI") == true)
            #expect(j["libmpi_loaded"] as? Bool == true)
            #expect(j["ordered_hash"] as? String == reference, "mpirun -n \(n): ordered sums differ from one process's")
            // The contrast: MPI_Allreduce adds rank partials, another association, other bits.
            if n > 1 { #expect(j["unordered_equal"] as? Bool == false) }
        }
    }

    @Test(arguments: ["message", "exit", "crash"])
    func aFailingRankEndsTheJob(how: String) throws {
        guard let mpirun = mpirunPath else { Issue.record("RELAXFT_TEST_REQUIRE_MPI=1 but mpirun is not installed"); return }
        // Rank 1 fails while ranks 0 and 2 wait for it in a broadcast: the job must end, with rank 1's message.
        let (r, seconds, timedOut) = try runWithTimeout(mpirun, ["--oversubscribe", "-n", "3", relaxftBinary, "mpi-selftest", "--fail-rank", "1", "--fail-how", how],
                                                        timeout: 60)
        #expect(!timedOut, "mpirun hung for \(seconds) s after rank 1 failed (\(how))")
        #expect(r.status != 0)
        let expected = ["message": "[rank 1 of 3] relaxft mpi-selftest: rank 1 fails on purpose",
                        "exit": "relaxft (rank 1 of 3): exited without finishing; ending the job",
                        "crash": "rank 1 crashes on purpose"][how]!
        #expect(r.stderr.contains(expected), "\(r.stderr)")
    }
}

/// Runs `relaxft args…` in `dir`: one process on its own (`ranks` 0), or `mpirun --oversubscribe -n ranks`, with
/// runWithTimeout's clean environment; a run still going after `timeout` seconds is killed.
func relaxftRanks(_ ranks: Int, _ args: [String], in dir: URL, timeout: Double = 300) throws -> CLIRun {
    var env = ["SWIFT_BACKTRACE": "enable=no", "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"]
    for k in ["HOME", "TMPDIR"] { if let v = ProcessInfo.processInfo.environment[k] { env[k] = v } }
    let path = URL(fileURLWithPath: relaxftBinary).deletingLastPathComponent().path + ":/usr/bin:/bin:/usr/local/bin"
    if ranks == 0 { return try runTool(relaxftBinary, args, in: dir, path: path, environment: env, timeout: timeout) }
    return try runTool(mpirunPath ?? "mpirun", ["--oversubscribe", "-n", "\(ranks)", relaxftBinary] + args, in: dir, path: path,
                       environment: env, timeout: timeout)
}

/// Differences between two model files: tensors compared bit for bit, metadata key by key (`ignoring` keys that
/// differ by design, such as the command line of a resumed run).
func modelFileDifferences(_ a: String, _ b: String, ignoring: Set<String> = []) throws -> [String] {
    let (ta, ma) = try SafeTensors.read(a), (tb, mb) = try SafeTensors.read(b)
    var out: [String] = []
    if ta.map(\.name) != tb.map(\.name) { out.append("tensor names \(ta.map(\.name)) vs \(tb.map(\.name))") }
    for ((n, x), (_, y)) in zip(ta, tb) where x.shape != y.shape || zip(x.array, y.array).contains(where: { $0.bitPattern != $1.bitPattern }) {
        out.append("tensor \(n)")
    }
    for k in Set(ma.keys).union(mb.keys).subtracting(ignoring) where ma[k] != mb[k] { out.append("metadata \(k): \(ma[k] ?? "–") vs \(mb[k] ?? "–")") }
    return out
}

/// metrics.csv without its timing column (the only one that may differ between runs).
func metricsWithoutSeconds(_ path: String) throws -> [String] {
    let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false) }
    guard let header = lines.first, let col = header.firstIndex(of: "seconds") else { return lines.map { $0.joined(separator: ",") } }
    return lines.map { row in row.enumerated().filter { $0.offset != col }.map { String($0.element) }.joined(separator: ",") }
}

/// Data-parallel finetune, pretrain and evaluate: every rank count gives one process's results, bit for bit.
/// Each run works in its own directory with the same run-directory name, so that model files (which record the
/// command line) can be compared byte for byte.
@Suite("data-parallel training under mpirun", .serialized,
       .enabled(if: mpirunPath != nil || ProcessInfo.processInfo.environment["RELAXFT_TEST_REQUIRE_MPI"] == "1",
                "mpirun not found: install Open MPI (apt-get install openmpi-bin libopenmpi-dev) to run the MPI tests"))
struct DataParallelTests {
    /// The known-truth job: SW with σ +3 %, λ −10 % fine-tuned on the SW-relaxed defect cells. 9 training
    /// structures in batches of 4: shards of 2+2, 2+1+1 and, in the last batch of one, empty shards on ranks 1 and 2.
    static let swArgs = ["--potential", perturbedSW, "--data", repoPath("Fixtures/data/sw-recovery/train.extxyz"), "--relaxer", "fire",
                         "--steps", "20", "--batch", "4", "--lr", "0.01", "--relative-lr", "--train-params", "sigma,lambda",
                         "--val-fraction", "0.25", "--seed", "0", "--threads", "1"]

    @Test func finetuneGivesOneProcessBitsForAnyRankCountAndGradientMode() throws {
        guard mpirunPath != nil else { Issue.record("RELAXFT_TEST_REQUIRE_MPI=1 but mpirun is not installed"); return }
        for grad in ["checkpoint", "implicit"] {
            let dirs = try (0..<3).map { _ in try Scratch() }
            defer { dirs.forEach { $0.remove() } }
            // One process; 2 ranks with 2 threads each (hybrid); 3 ranks (uneven and empty shards).
            for (dir, (ranks, threads)) in zip(dirs, [(0, "1"), (2, "2"), (3, "1")]) {
                var args = ["finetune"] + Self.swArgs + ["--grad", grad, "--epochs", "2", "-o", "run"]
                args[args.firstIndex(of: "--threads")! + 1] = threads
                let r = try relaxftRanks(ranks, args, in: dir.url)
                #expect(r.status == 0, "\(grad), \(ranks) ranks: \(r.stderr)")
                if ranks > 0 { #expect(r.stdout.contains("\(ranks) ranks (Open MPI"), "\(r.stdout)") }
                // Rank 0 alone reports: one summary line.
                #expect(r.stdout.components(separatedBy: "done: train ΔQ").count == 2, "\(r.stdout)")
            }
            let one = dirs[0]
            for dir in dirs.dropFirst() {
                for f in ["best.safetensors", "last.safetensors"] {
                    let differences = try modelFileDifferences(one.path("run/" + f), dir.path("run/" + f))
                    #expect(FileManager.default.contentsEqual(atPath: one.path("run/" + f), andPath: dir.path("run/" + f)), "\(grad): \(f): \(differences)")
                }
                #expect(try metricsWithoutSeconds(dir.path("run/metrics.csv")) == metricsWithoutSeconds(one.path("run/metrics.csv")))
                // summary.json (sorted keys, one value a line) but for the cost, which is measured.
                func results(_ d: Scratch) throws -> [Substring] {
                    let cost = ["\"wall_seconds\"", "\"cpu_seconds\"", "\"peak_rss_mb\"", "\"seconds\"", "\"sessions\""]
                    return try String(contentsOfFile: d.path("run/summary.json"), encoding: .utf8).split(separator: "\n")
                        .filter { line in !cost.contains { line.contains($0) } }
                }
                #expect(try results(dir) == results(one), "\(grad): summary.json")
            }
            // The training moved the parameters (equal unchanged models would prove nothing).
            let s1 = try JSONSerialization.jsonObject(with: Data(contentsOf: one.url.appendingPathComponent("run/summary.json"))) as! [String: Any]
            let sigma = ((s1["parameters"] as? [String: Any])?["sigma"] as? [Double])?.first
            #expect(sigma != nil && abs(sigma! - 2.157953) > 0.01, "\(grad): σ = \(String(describing: sigma))")
        }
    }

    @Test func finetuneResumesWithAnotherRankCount() throws {
        guard mpirunPath != nil else { Issue.record("RELAXFT_TEST_REQUIRE_MPI=1 but mpirun is not installed"); return }
        let (one, split) = (try Scratch(), try Scratch())
        defer { one.remove(); split.remove() }
        #expect(try relaxftRanks(0, ["finetune"] + Self.swArgs + ["--epochs", "2", "-o", "run"], in: one.url).status == 0)
        let first = try relaxftRanks(2, ["finetune"] + Self.swArgs + ["--epochs", "1", "-o", "run"], in: split.url)
        #expect(first.status == 0, "\(first.stderr)")
        let second = try relaxftRanks(3, ["finetune", "--resume", "run", "--epochs", "2"], in: split.url)
        #expect(second.status == 0, "\(second.stderr)")
        for f in ["best.safetensors", "last.safetensors"] {
            #expect(try modelFileDifferences(one.path("run/" + f), split.path("run/" + f)).isEmpty)
        }
        #expect(try metricsWithoutSeconds(split.path("run/metrics.csv")) == metricsWithoutSeconds(one.path("run/metrics.csv")))
        let cost = try JSONSerialization.jsonObject(with: Data(contentsOf: split.url.appendingPathComponent("run/cost.json"))) as! [String: Any]
        #expect(cost["sessions"] as? Int == 2)
    }

    /// A tiny SchNet pretrained on labelled frames (per-frame gradient pieces summed in frame order), resumed with
    /// another rank count, then fine-tuned through relaxations: one process's bits for 2 and 3 ranks.
    @Test func neuralPretrainAndFinetuneGiveOneProcessBits() throws {
        guard mpirunPath != nil else { Issue.record("RELAXFT_TEST_REQUIRE_MPI=1 but mpirun is not installed"); return }
        let pre = ["pretrain", "--data", repoPath("Fixtures/data/si-defects/trajectories-tiny.extxyz"), "--frames", ":30", "--architecture", "schnet",
                   "--features", "8", "--layers", "1", "--radial-basis", "8", "--batch", "5", "--seed", "3", "--energy-weight", "0.3", "-o", "pre"]
        let dirs = try (0..<4).map { _ in try Scratch() }
        defer { dirs.forEach { $0.remove() } }
        for (dir, ranks) in zip(dirs.prefix(3), [0, 2, 3]) {
            let r = try relaxftRanks(ranks, pre + ["--epochs", "2"], in: dir.url)
            #expect(r.status == 0, "pretrain, \(ranks) ranks: \(r.stderr)")
        }
        // 3 ranks for the first epoch, 2 for the second.
        #expect(try relaxftRanks(3, pre + ["--epochs", "1"], in: dirs[3].url).status == 0)
        let resumed = try relaxftRanks(2, ["pretrain", "--resume", "pre", "--epochs", "2"], in: dirs[3].url)
        #expect(resumed.status == 0, "\(resumed.stderr)")
        for dir in dirs.dropFirst() {
            for f in ["best.safetensors", "last.safetensors"] {
                #expect(try modelFileDifferences(dirs[0].path("pre/" + f), dir.path("pre/" + f), ignoring: ["training_command"]).isEmpty, "\(f)")
            }
            #expect(try metricsWithoutSeconds(dir.path("pre/metrics.csv")) == metricsWithoutSeconds(dirs[0].path("pre/metrics.csv")))
        }
        #expect(FileManager.default.contentsEqual(atPath: dirs[0].path("pre/best.safetensors"), andPath: dirs[2].path("pre/best.safetensors")))
        // Fine-tuning the tiny SchNet through 6-step relaxations (ranks: 12 structures, batches of 5).
        let ft = ["finetune", "--potential", "pre/best.safetensors", "--data", repoPath("Fixtures/data/si-defects/tiny.extxyz"),
                  "--skip-unknown-elements", "--steps", "6", "--epochs", "1", "--batch", "5", "--lr", "0.002", "--val-fraction", "0.2",
                  "--seed", "1", "--threads", "1", "-o", "ft"]
        for (dir, ranks) in zip(dirs.prefix(3), [0, 2, 3]) {
            let r = try relaxftRanks(ranks, ft, in: dir.url)
            #expect(r.status == 0, "finetune, \(ranks) ranks: \(r.stderr)")
        }
        #expect(try !modelFileDifferences(dirs[0].path("pre/best.safetensors"), dirs[0].path("ft/last.safetensors"), ignoring: ["training", "relaxation_protocol"]).isEmpty,
                "fine-tuning must move the weights")
        for dir in dirs.dropFirst().prefix(2) {
            #expect(FileManager.default.contentsEqual(atPath: dirs[0].path("ft/last.safetensors"), andPath: dir.path("ft/last.safetensors")))
            #expect(try metricsWithoutSeconds(dir.path("ft/metrics.csv")) == metricsWithoutSeconds(dirs[0].path("ft/metrics.csv")))
        }
    }

    @Test func evaluateOutputIsByteIdentical() throws {
        guard mpirunPath != nil else { Issue.record("RELAXFT_TEST_REQUIRE_MPI=1 but mpirun is not installed"); return }
        let dir = try Scratch()
        defer { dir.remove() }
        let jobs: [(String, [String])] = [
            ("relaxations", ["--potential", "sw", "--potential", perturbedSW, "--data", repoPath("Fixtures/data/sw-recovery/test.extxyz"), "--steps", "40"]),
            ("labelled", ["--potential", "sw", "--data", repoPath("Fixtures/data/si-defects/trajectories-tiny.extxyz"), "--frames", ":40",
                          "--skip-unknown-elements"]),
        ]
        for (name, args) in jobs {
            var outputs: [(String, String)] = []
            for ranks in [0, 2] {
                let csv = "\(name)-\(ranks).csv"
                let r = try relaxftRanks(ranks, ["evaluate"] + args + ["--threads", "1", "-o", csv], in: dir.url)
                #expect(r.status == 0, "\(name), \(ranks) ranks: \(r.stderr)")
                outputs.append((r.stdout, try String(contentsOfFile: dir.path(csv), encoding: .utf8)))
            }
            #expect(!outputs[0].0.isEmpty && outputs[0].1.split(separator: "\n").count > 4)
            #expect(outputs[1].0 == outputs[0].0, "\(name): standard output differs")
            #expect(outputs[1].1 == outputs[0].1, "\(name): CSV differs")
        }
    }

    /// Rank 0 cannot create the run directory (its parent is a file) while the other ranks go on: the job ends
    /// with rank 0's message, nothing hangs.
    @Test func aRankThatFailsEndsTheTrainingJob() throws {
        guard mpirunPath != nil else { Issue.record("RELAXFT_TEST_REQUIRE_MPI=1 but mpirun is not installed"); return }
        let dir = try Scratch()
        defer { dir.remove() }
        try "not a directory".write(toFile: dir.path("blocker"), atomically: true, encoding: .utf8)
        let start = Date()
        let r = try relaxftRanks(3, ["finetune"] + Self.swArgs + ["--epochs", "1", "-o", "blocker/run"], in: dir.url, timeout: 120)
        #expect(!r.stderr.contains("[killed after"), "the job hung after rank 0 failed: \(r.stderr)")
        #expect(r.status != 0)
        #expect(r.stderr.contains("[rank 0 of 3] relaxft finetune:") && r.stderr.contains("blocker"), "\(r.stderr)")
        #expect(Date().timeIntervalSince(start) < 100)
    }
}
