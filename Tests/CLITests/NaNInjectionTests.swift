import Foundation
import Testing
import Atoms
import Potentials
import TestSupport

// A potential that turns non-finite mid-run, in every command (RELAXFT_FAULT_NAN=K: NaN energies, and so NaN
// forces, from the K-th energy evaluation of the process on; K-L: only evaluations K…L; K:inf: +∞): the status
// each command must end with. The K were read off a run of each command (evaluations are counted in order).

@Suite("NaN injection: every command's status", .serialized)
struct NaNInjectionTests {
    static func run(_ args: [String], nanFrom k: Int?, files: (Scratch) throws -> Void = KillResumeCases.labelledFrames) throws -> (CLIRun, Scratch) {
        try run(args, fault: k.map { "\($0)" }, files: files)
    }

    static func run(_ args: [String], fault: String?, files: (Scratch) throws -> Void = KillResumeCases.labelledFrames) throws -> (CLIRun, Scratch) {
        let dir = try Scratch()
        try files(dir)
        let r = try runTool(relaxftBinary, args, in: dir.url, environment: fault.map { ["RELAXFT_FAULT_NAN": $0] } ?? [:], timeout: 300)
        #expect(!r.signaled && !r.timedOut, "\(args[0]): \(r.stderr)")
        return (r, dir)
    }

    /// Every parameter of a model file finite (the last good model a stopped run keeps).
    static func finiteModel(_ path: String) throws -> Bool {
        try ModelFile.load(path).potential.parameters.allSatisfy { $0.value.isFinite }
    }

    /// relax: the frame fails at step 3 (exit 1); its last finite state is written with the info key failure.
    /// Without the fault the same relaxation converges (exit 0).
    @Test func relax() throws {
        let args = ["relax", "frames.extxyz", "--frames", "0", "--potential", "sw", "--fmax", "0.5", "-o", "out.extxyz"]
        let (clean, d0) = try Self.run(args, nanFrom: nil)
        defer { d0.remove() }
        #expect(clean.status == 0, "\(clean.stderr)")
        let (r, dir) = try Self.run(args, nanFrom: 4)
        defer { dir.remove() }
        #expect(r.status == 1, "\(r.stdout)\n\(r.stderr)")
        #expect(r.stdout.contains("FAILED at step 3"), "\(r.stdout)")
        let out = try StructureIO.read(dir.path("out.extxyz"))
        #expect(out.count == 1 && out[0].positions.isFinite)
        if case .string(let why)? = out[0].info["failure"] { #expect(why.contains("step 3")) } else { Issue.record("no failure info: \(out[0].info)") }
    }

    /// relax: a potential that is non-finite at the input itself is bad input (exit 2, nothing written).
    @Test func relaxAtTheInput() throws {
        let (r, dir) = try Self.run(["relax", "frames.extxyz", "--frames", "0", "--potential", "sw", "-o", "out.extxyz"], nanFrom: 1)
        defer { dir.remove() }
        #expect(r.status == 2 && r.stderr.contains("cannot be evaluated at the input"), "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir.path("out.extxyz")))
    }

    /// evaluate: failed relaxations are counted as failed and never converged, without energy errors; the
    /// evaluation itself succeeds (exit 0), in the JSON and in the table.
    @Test func evaluate() throws {
        // One thread: the fault counts evaluations in order, and parallel relaxations would interleave them.
        let args = ["evaluate", "--potential", "sw", "--data", "train.extxyz", "--steps", "20", "--threads", "1"]
        let (r, dir) = try Self.run(args + ["--json"], nanFrom: 5, files: KillResumeCases.recoveryData)
        defer { dir.remove() }
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("vacancy-0: the relaxation failed at step 4: the energy is nan; counted as not converged"), "\(r.stderr)")
        let obj = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        let model = (obj?["models"] as? [[String: Any]])?.first
        #expect(model?["failed"] as? Int == 2 && model?["converged_fraction"] as? Double == 0 && model?["same_basin_fraction"] as? Double == 0, "\(r.stdout)")
        #expect(model?["relax_energy_error_mean_abs"] == nil && model?["energy_error_mean_abs_per_atom"] == nil, "\(r.stdout)")
        let (table, d2) = try Self.run(args + ["-o", "out.csv"], nanFrom: 5, files: KillResumeCases.recoveryData)
        defer { d2.remove() }
        #expect(table.status == 0, "\(table.stderr)")
        let rows = table.stdout.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        #expect(rows.contains { $0.hasPrefix("failed (non-finite)") && $0.hasSuffix(" 2") }, "\(table.stdout)")
        #expect(rows.contains { $0.hasPrefix("converged") && $0.hasSuffix("0.000") }, "\(table.stdout)")
        #expect(FileManager.default.fileExists(atPath: d2.path("out.csv")))
    }

    /// md: both replicas stop at the step their energy went non-finite (step 5, 5 fs), reported with the
    /// reason and the time (exit 1); without the fault the run is clean (exit 0).
    @Test(arguments: [("6", "nan"), ("6:inf", "-inf")])
    func md(fault: String, word: String) throws {
        let args = ["md", "frames.extxyz", "--frames", "0", "--potential", "sw", "--temperature", "300", "--steps", "20", "--replicas", "2", "--json"]
        let (clean, d0) = try Self.run(args, fault: nil)
        defer { d0.remove() }
        #expect(clean.status == 0, "\(clean.stderr)")
        let (r, dir) = try Self.run(args, fault: fault)
        defer { dir.remove() }
        #expect(r.status == 1, "\(r.stdout)\n\(r.stderr)")
        #expect(r.stderr.contains("unstable at 0.005 ps (the potential energy is \(word): stopped)") && r.stderr.contains("exit code 1"), "\(r.stderr)")
        let replicas = r.json.first?["replica_results"] as? [[String: Any]] ?? []
        #expect(replicas.count == 2, "\(r.stdout)")
        for rep in replicas {
            #expect(rep["non_finite"] as? Bool == true && rep["steps"] as? Int == 5 && rep["unstable_at_ps"] as? Double == 0.005, "\(rep)")
            #expect((rep["failure"] as? String)?.contains(word) == true, "\(rep)")
        }
    }

    /// finetune: the training relaxations fail, their batches' updates are rejected, and the second rejection in
    /// a row stops the run (exit 1) with the starting model as best and last model.
    @Test func finetune() throws {
        // The starting model's evaluation relaxes both structures (2 × 7 evaluations); the first training
        // relaxation fails at its step 5.
        let (r, dir) = try Self.run(["finetune", "--potential", "sw:sigma=2.16,lambda=19", "--data", "train.extxyz", "--relaxer", "fire",
                                     "--steps", "6", "--epochs", "4", "--batch", "1", "--val-fraction", "0", "--threads", "1",
                                     "--max-rejected-steps", "2", "-o", "run"], nanFrom: 20, files: KillResumeCases.recoveryData)
        defer { dir.remove() }
        #expect(r.status == 1, "\(r.stderr)")
        #expect(r.stderr.contains("the relaxation failed at step 5") && r.stderr.contains("2 optimizer updates in a row were rejected"), "\(r.stderr)")
        #expect(try Self.finiteModel(dir.path("run/best.safetensors")) && Self.finiteModel(dir.path("run/last.safetensors")))
    }

    /// finetune: one failed training relaxation (a transient fault) rejects one update, which is skipped and
    /// counted; the run goes on to the end (exit 0).
    @Test func finetuneTransient() throws {
        let (r, dir) = try Self.run(["finetune", "--potential", "sw:sigma=2.16,lambda=19", "--data", "train.extxyz", "--relaxer", "fire",
                                     "--steps", "6", "--epochs", "3", "--batch", "1", "--val-fraction", "0", "--threads", "1",
                                     "--max-rejected-steps", "2", "-o", "run"], fault: "20-20", files: KillResumeCases.recoveryData)
        defer { dir.remove() }
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("epoch 1: optimizer step not taken: every example of the batch failed"), "\(r.stderr)")
        let summary = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir.path("run/summary.json")))) as? [String: Any]
        #expect(summary?["skipped_steps"] as? Int == 1 && summary?["epochs"] as? Int == 3, "\(String(describing: summary))")
        #expect(try Self.finiteModel(dir.path("run/best.safetensors")))
    }

    /// pretrain: NaN losses from the second epoch on; two rejected updates in a row stop the run (exit 1), the
    /// first epoch's model kept. (One evaluation per training frame, 4 an epoch, then one for the validation
    /// frames: evaluation 6 is the first of epoch 2.)
    @Test func pretrain() throws {
        let (r, dir) = try Self.run(["pretrain", "--data", "frames.extxyz", "--architecture", "schnet", "--features", "4", "--layers", "1",
                                     "--radial-basis", "4", "--cutoff", "4", "--epochs", "5", "--batch", "2", "--val-fraction", "0.34",
                                     "--max-rejected-steps", "2", "-o", "run"], nanFrom: 6)
        defer { dir.remove() }
        #expect(r.status == 1, "\(r.stderr)")
        #expect(r.stderr.contains("epoch 2: optimizer step not taken") && r.stderr.contains("2 optimizer updates in a row were rejected"), "\(r.stderr)")
        #expect(try Self.finiteModel(dir.path("run/last.safetensors")))
    }

    /// stable: the replicas' forces go NaN in the first epoch; every learning step is rejected and the second in
    /// a row stops the run (exit 1).
    @Test func stable() throws {
        let (r, dir) = try Self.run(["stable", "--potential", "sw:sigma=2.16", "--reference-observable", "rdf.csv", "--data", "frames.extxyz",
                                     "--structure", "frames.extxyz", "--temperature", "600", "--replicas", "2", "--steps", "20",
                                     "--sample-interval", "5", "--epochs", "6", "--unstable-fraction", "0", "--lambda", "0.1",
                                     "--max-rejected-steps", "2", "-o", "run"], nanFrom: 10)
        defer { dir.remove() }
        #expect(r.status == 1, "\(r.stderr)")
        // stable logs to standard output (without --json); the stop is an error on standard error.
        #expect(r.stdout.contains("optimizer step not taken: the gradient is not finite"), "\(r.stdout)")
        #expect(r.stderr.contains("2 optimizer updates in a row were rejected") && r.stderr.contains("the last good model is kept"), "\(r.stderr)")
        #expect(try Self.finiteModel(dir.path("run/last.safetensors")) && Self.finiteModel(dir.path("run/best.safetensors")))
    }

    /// pretrain and stable: a transient fault rejects one update, which is skipped and counted in summary.json
    /// (rejected_steps); the run goes on to the end (exit 0).
    @Test func pretrainTransient() throws {
        let (r, dir) = try Self.run(["pretrain", "--data", "frames.extxyz", "--architecture", "schnet", "--features", "4", "--layers", "1",
                                     "--radial-basis", "4", "--cutoff", "4", "--epochs", "3", "--batch", "2", "--val-fraction", "0.34",
                                     "--max-rejected-steps", "2", "-o", "run"], fault: "6-6")
        defer { dir.remove() }
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("epoch 2: optimizer step not taken"), "\(r.stderr)")
        // The rejected batch stays out of epoch 2's training loss and errors.
        let rows = try String(contentsOfFile: dir.path("run/metrics.csv"), encoding: .utf8).split(separator: "\n").dropFirst()
        #expect(rows.count == 3 && rows.allSatisfy { $0.split(separator: ",").dropFirst(2).prefix(5).allSatisfy { Double($0)?.isFinite == true } }, "\(rows)")
        let summary = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir.path("run/summary.json")))) as? [String: Any]
        #expect(summary?["rejected_steps"] as? Int == 1 && summary?["epochs"] as? Int == 3, "\(String(describing: summary))")
        #expect(try Self.finiteModel(dir.path("run/last.safetensors")))
    }

    @Test func stableTransient() throws {
        // Evaluation 45 is in the energy/force gradient of the first learning epoch (epoch 2).
        let (r, dir) = try Self.run(["stable", "--potential", "sw:sigma=2.16", "--reference-observable", "rdf.csv", "--data", "frames.extxyz",
                                     "--structure", "frames.extxyz", "--temperature", "600", "--replicas", "2", "--steps", "20",
                                     "--sample-interval", "5", "--epochs", "4", "--unstable-fraction", "0", "--lambda", "0.1",
                                     "--max-rejected-steps", "2", "-o", "run"], fault: "45-45")
        defer { dir.remove() }
        #expect(r.status == 0, "\(r.stdout)\n\(r.stderr)")
        #expect(r.stdout.contains("epoch 2: optimizer step not taken: the gradient is not finite"), "\(r.stdout)")
        let summary = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir.path("run/summary.json")))) as? [String: Any]
        #expect(summary?["rejected_steps"] as? Int == 1 && summary?["epochs"] as? Int == 4, "\(String(describing: summary))")
        #expect(try Self.finiteModel(dir.path("run/last.safetensors")))
    }
}
