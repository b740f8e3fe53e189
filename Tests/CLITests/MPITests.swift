import Foundation
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
