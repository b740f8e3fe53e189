import Foundation
import Testing
import Atoms
import Potentials
#if canImport(Glibc)
import Glibc
#endif

let perturbedSW = "sw:sigma=2.157953,lambda=18.9"

/// Evaluation metrics, training summaries, conventional fine-tuning, reports and sweeps (issue 9's tooling).
@Suite("experiment tools", .serialized)
struct ExperimentToolsTests {
    @Test func evaluateReportsBasinsEnergiesAndImprovement() throws {
        let dir = try Scratch(copying: ["Fixtures/data/sw-recovery/test.extxyz"])
        defer { dir.remove() }
        let run = try dir.run(["evaluate", "--model", perturbedSW, "--model", "sw", "--label", "perturbed", "--label", "exact",
                               "--data", "test.extxyz", "--relaxer", "fire", "--fmax", "0.01", "--steps", "300", "--threads", "2",
                               "--csv", "eval.csv", "--json"])
        #expect(run.status == 0, "\(run.stderr)")
        let obj = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])
        let models = try #require(obj["models"] as? [[String: Any]])
        #expect(models.map { $0["label"] as? String } == ["perturbed", "exact"])
        #expect(models[1]["same_basin_fraction"] as? Double == 1, "the exact potential ends in the reference basin")
        #expect(models[0]["same_basin_fraction"] as? Double == 0, "σ +3 %: every ΔQ is above 1 amu^½·Å")
        #expect((models[1]["improvement_mean"] as? Double).map { $0 > 0.9 } == true)
        #expect((models[1]["dq_fraction_below"] as? [String: Double])?["0.3"] == 1)
        let csv = try readCSV(dir.path("eval.csv"))
        for c in ["structure", "group", "initial_dq", "dq_1", "same_basin_1", "differing_bonds_1", "relax_energy_error_1",
                  "energy_error_per_atom_1", "converged_1", "dq_2", "improvement_2"] {
            #expect(csv.header.contains(c), "column \(c)")
        }
        #expect(csv.rows.count == 6 && csv.rows.allSatisfy { $0["same_basin_2"] == "true" })
        #expect(try String(contentsOfFile: dir.path("eval.csv"), encoding: .utf8).hasPrefix("# models: 1=perturbed 2=exact\n"))
    }

    @Test func unknownElementIsAUsageError() throws {
        let dir = try Scratch(copying: ["Fixtures/data/si-defects/tiny.extxyz"])
        defer { dir.remove() }
        let model = repoRoot.appendingPathComponent("Fixtures/models/si-schnet-pretrained.safetensors").path
        let run = try dir.run(["evaluate", "--model", model, "--data", "tiny.extxyz", "--steps", "1"])
        #expect(run.status == 2)
        #expect(run.stderr.contains("contains C") && run.stderr.contains("sub_C"), "\(run.stderr)")
    }

    /// pretrain --init: starts from the model's weights and keeps its reference energies (or refits them);
    /// summary.json has the cost and the initial errors.
    @Test func pretrainInitIsAWarmStart() throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let model = repoRoot.appendingPathComponent("Fixtures/models/si-schnet-pretrained.safetensors").path
        let traj = repoRoot.appendingPathComponent("Fixtures/data/si-defects/trajectories-tiny.extxyz").path
        let si = dir.path("si.xyz")
        let sel = try runTool("/usr/bin/python3", [repoRoot.appendingPathComponent("scripts/experiments/select_frames.py").path, traj, si,
                                                   "--keep", "defect=rattled", "--keep", "seed=5000", "--species", "Si"], in: dir.url)
        #expect(sel.status == 0 && sel.stdout.hasPrefix("13"), "\(sel.stdout) \(sel.stderr)")
        let (initial, initialMeta) = try ModelFile.load(model)
        for (name, refit) in [("keep", false), ("refit", true)] {
            let run = try dir.run(["pretrain", "--init", model, "--data", si, "--val-fraction", "0.25", "--epochs", "1", "--batch", "5",
                                   "--lr", "1e-4", "--out", name] + (refit ? ["--refit-reference-energies"] : []))
            #expect(run.status == 0, "\(run.stderr)")
            let (trained, meta) = try ModelFile.load(dir.path("\(name)/last.safetensors"))
            #expect(trained.kind == "schnet" && trained.parameterCount == initial.parameterCount)
            #expect(meta["training_init"]?.hasPrefix("si-schnet-pretrained.safetensors") == true)
            // Paths below the working directory are recorded relative to it; the parent's records (its command,
            // its test scores) move into the lineage instead of passing for this model's.
            #expect(meta["training_data"] == "si.xyz" && meta["training_command"]?.contains(dir.path("")) == false, "\(meta)")
            #expect(meta["test_mlearn_test"] == nil && initialMeta["test_mlearn_test"] != nil)
            let lineage = try JSONDecoder().decode([[String: String]].self, from: Data(try #require(meta["lineage"]).utf8))
            #expect(lineage.count == 1 && lineage[0]["training_command"] == initialMeta["training_command"] && lineage[0]["test_mlearn_test"] == initialMeta["test_mlearn_test"])
            let e0 = initial.parameters["atomic_energies"]!, e1 = trained.parameters["atomic_energies"]!
            #expect(refit ? e0.maxAbsDifference(e1) > 0.01 : e0 == e1, "GPAW and VASP energy zeros differ by ~0.1 eV/atom")
            #expect(trained.parameters["embedding"] != initial.parameters["embedding"] || trained.parameters.keys.contains { trained.parameters[$0] != initial.parameters[$0] && $0 != "atomic_energies" })
            let summary = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir.path("\(name)/summary.json")))) as? [String: Any])
            for k in ["wall_seconds", "cpu_seconds", "peak_rss_mb", "initial_val_force_mae", "best"] { #expect(summary[k] != nil, "\(k)") }
            #expect((summary["peak_rss_mb"] as? Double).map { $0 > 1 } == true)
        }
        let bad = try dir.run(["pretrain", "--init", model, "--data", si, "--features", "8", "--out", "bad"])
        #expect(bad.status == 2 && bad.stderr.contains("architecture comes from the initial model"), "\(bad.stderr)")
    }

    /// finetune writes summary.json with the training cost; report draws it and unknown (StABlE-style) metrics.
    @Test func finetuneSummaryAndReport() throws {
        let dir = try Scratch(copying: ["Fixtures/data/sw-recovery/train.extxyz", "Fixtures/data/sw-recovery/test.extxyz"])
        defer { dir.remove() }
        let ft = try dir.run(["finetune", "--pretrained", perturbedSW, "--data", "train.extxyz", "--relaxer", "frame", "--steps", "5",
                              "--train-params", "sigma,lambda", "--relative-lr", "--lr", "0.01", "--epochs", "2", "--threads", "2",
                              "--out", "run", "--quiet"])
        #expect(ft.status == 0, "\(ft.stderr)")
        // The force term: needs --force-data, and frames with forces (train.extxyz has none); nothing is written.
        let base = ["finetune", "--pretrained", perturbedSW, "--data", "train.extxyz", "--steps", "5", "--epochs", "1"]
        let noData = try dir.run(base + ["--force-weight", "1", "--out", "f1"])
        #expect(noData.status == 2 && noData.stderr.contains("--force-weight needs --force-data"), "\(noData.stderr)")
        let noForces = try dir.run(base + ["--force-weight", "1", "--force-data", "train.extxyz", "--out", "f2"])
        #expect(noForces.status != 0 && noForces.stderr.contains("train.extxyz: frame 1 has no forces"), "\(noForces.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir.path("f1")) && !FileManager.default.fileExists(atPath: dir.path("f2")))
        let summary = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir.path("run/summary.json")))) as? [String: Any])
        for k in ["wall_seconds", "cpu_seconds", "peak_rss_mb", "train_dq_mean_before", "train_dq_mean_after"] { #expect(summary[k] != nil, "\(k)") }
        // On --resume the stored configuration is used: a new --epochs budget is applied, other options are refused.
        let refused = try dir.run(["finetune", "--resume", "run", "--lr", "0.1", "--quiet"])
        #expect(refused.status == 2 && refused.stderr.contains("--lr cannot be changed when resuming"), "\(refused.stderr)")
        let more = try dir.run(["finetune", "--resume", "run", "--epochs", "3", "--quiet", "--json"])
        #expect(more.status == 0, "\(more.stderr)")
        let resumed = try #require(try JSONSerialization.jsonObject(with: Data(more.stdout.utf8)) as? [String: Any])
        #expect(resumed["epochs"] as? Int == 3 && resumed["sessions"] as? Int == 2, "\(resumed)")
        #expect(try String(contentsOfFile: dir.path("run/config.json"), encoding: .utf8).contains("\"epochs\" : 3"))
        let ev = try dir.run(["evaluate", "--model", perturbedSW, "--model", "run/best.safetensors", "--data", "test.extxyz",
                              "--relaxer", "fire", "--steps", "100", "--csv", "run/eval.csv"])
        #expect(ev.status == 0, "\(ev.stderr)")
        // A StABlE-style run: unknown metric columns and an RDF.
        try FileManager.default.createDirectory(atPath: dir.path("stable"), withIntermediateDirectories: true)
        try "epoch,fraction_unstable,mean_instability_time,observable_error,energy_mae,force_mae\n1,0.5,120,0.3,0.02,0.1\n2,0.25,300,0.2,0.021,0.09\n3,0,1000,0.1,0.02,0.08\n"
            .write(toFile: dir.path("stable/metrics.csv"), atomically: true, encoding: .utf8)
        try "r,model,reference\n2.0,0.0,0.0\n2.35,4.1,4.3\n2.7,0.8,0.7\n3.84,2.0,2.1\n".write(toFile: dir.path("stable/rdf.csv"), atomically: true, encoding: .utf8)
        let rep = try dir.run(["report", "run", "stable", "-o", "report.html", "--svg-dir", "figs"])
        #expect(rep.status == 0, "\(rep.stderr)")
        let html = try String(contentsOfFile: dir.path("report.html"), encoding: .utf8)
        for s in [">fraction_unstable<", ">mean_instability_time<", ">dq_mean<", "g(r): stable", "ΔQ per structure", "ΔQ distribution", "peak_rss_mb"] {
            #expect(html.contains(s), "report lacks \(s)")
        }
        #expect(!html.contains("<script") && !html.contains("src=") && !html.contains("href="), "self-contained, no scripts or links")
        #expect(html.components(separatedBy: "<svg ").count - 1 >= 8)
        let figs = try FileManager.default.contentsOfDirectory(atPath: dir.path("figs"))
        #expect(figs.count == html.components(separatedBy: "<svg ").count - 1 && figs.allSatisfy { $0.hasSuffix(".svg") })
    }

    /// scripts/sweep: the Slurm path with a fake sbatch, one array task run by hand, a local run, and the collector.
    @Test func sweepSlurmLocalAndCollect() throws {
        let dir = try Scratch(copying: ["Fixtures/data/sw-recovery/train.extxyz", "Fixtures/data/sw-recovery/test.extxyz"])
        defer { dir.remove() }
        let spec = """
            # a 2 × 2 grid
            pretrained = \(perturbedSW)
            data = train.extxyz
            relaxer = frame, fire
            eta = 0.01
            dt = 0.1
            steps = 4
            lr = 0.01
            seed = 0, 1
            epochs = 1
            args = --relative-lr --train-params sigma,lambda --val-fraction 0.25
            eval-data = test.extxyz
            eval-args = --relaxer fire --steps 50
            """
        try spec.write(toFile: dir.path("spec.txt"), atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: dir.path("bin"), withIntermediateDirectories: true)
        try "#!/bin/sh\necho \"$@\" > \"$FAKE_SBATCH_LOG\"\ncp \"$2\" \"$FAKE_SBATCH_LOG.script\"\necho '4242;cluster'\n"
            .write(toFile: dir.path("bin/sbatch"), atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: dir.path("bin/sbatch"))
        let sweep = repoRoot.appendingPathComponent("scripts/sweep").path
        let env = ["FAKE_SBATCH_LOG": dir.path("sbatch.log")]
        let s = try runTool("/usr/bin/python3", [sweep, "spec.txt", "--out", "sw", "--slurm", "--time", "0:10:00", "--relaxft", relaxftBinary],
                            in: dir.url, path: dir.path("bin") + ":/usr/bin:/bin", environment: env)
        #expect(s.status == 0, "\(s.stdout) \(s.stderr)")
        #expect(try String(contentsOfFile: dir.path("sbatch.log"), encoding: .utf8).hasPrefix("--parsable "))
        let script = try String(contentsOfFile: dir.path("sbatch.log.script"), encoding: .utf8)
        #expect(script.contains("#SBATCH --array=0-3\n") && script.contains("#SBATCH --time=0:10:00") && script.contains("run-one"), "\(script)")
        #expect(try String(contentsOfFile: dir.path("sw/slurm_job_id"), encoding: .utf8) == "4242\n")
        let plan = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir.path("sw/plan.json")))) as? [String: Any])
        #expect((plan["runs"] as? [Any])?.count == 4)
        // What array task 2 runs (the environment Slurm would set).
        let task = try runTool("/bin/bash", [dir.path("sw/sweep.sbatch")], in: dir.url, environment: ["SLURM_ARRAY_TASK_ID": "2", "SLURM_CPUS_PER_TASK": "1"])
        #expect(task.status == 0 && task.stdout.contains("run002: done"), "\(task.stdout) \(task.stderr)")
        let collect = try runTool("/usr/bin/python3", [sweep, "collect", "sw"], in: dir.url)
        #expect(collect.status == 0, "\(collect.stderr)")
        let table = try readCSV(dir.path("sw/sweep.csv"))
        #expect(table.rows.map { $0["status"] ?? "" } == ["missing", "missing", "done", "missing"])
        // The grid's last axis varies fastest: run002 is (fire, seed 0).
        #expect(table.rows[2]["relaxer"] == "fire" && table.rows[2]["seed"] == "0" && table.rows[2]["eval_dq_mean"].flatMap(Double.init) != nil)
        #expect(table.header.contains("peak_rss_mb") && table.header.contains("eval_same_basin_fraction"))
        // Locally, two at a time: the finished run is skipped, the other three run.
        let local = try runTool("/usr/bin/python3", [sweep, "spec.txt", "--out", "sw", "--jobs", "2", "--relaxft", relaxftBinary], in: dir.url)
        #expect(local.status == 0, "\(local.stdout) \(local.stderr)")
        #expect(local.stdout.contains("run002: skipped (done)"))
        #expect(try readCSV(dir.path("sw/sweep.csv")).rows.allSatisfy { $0["status"] == "done" })
        let rep = try dir.run(["report", "sw", "-o", "sweep.html"])
        #expect(rep.status == 0, "\(rep.stderr)")
        let sweepHTML = try String(contentsOfFile: dir.path("sweep.html"), encoding: .utf8)
        #expect(sweepHTML.contains("Robustness"))
    }

    /// The experiment's record: results and settings go into it, weights and unfinished trainings do not, and
    /// neither direction overwrites a file.
    @Test func experimentRecordKeepsResultsNotWeights() throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let files = ["settings/chgnet.env": "BPTT_EPOCHS=4\n", "data-stamp.txt": "dataset=large data=0123\n",
                     "bin/chgnet/commit.txt": "abc1234\n", "bin/chgnet/relaxft": "binary", "memory.json": "{}",
                     "train/chgnet-ef-s0/summary.json": "{}", "train/chgnet-ef-s0/config.json": "{}",
                     "train/chgnet-ef-s0/metrics.csv": "epoch\n", "train/chgnet-ef-s0/best.safetensors": "weights",
                     "train/chgnet-bptt-s1/config.json": "{}", "train/chgnet-bptt-s1/checkpoint.safetensors": "weights",
                     "eval/chgnet/test/ef-s0.csv": "a\n", "eval/chgnet/test/ef-s0.json": "{}", "eval/chgnet/test/ef-s0.time": "t",
                     "eval/chgnet/test/ef-s0.err": "log", "eval/chgnet/test/bptt-s1.json.tmp": "partial"]
        for (name, text) in files {
            try FileManager.default.createDirectory(atPath: dir.path("run/" + name).deletingLastPathComponent, withIntermediateDirectories: true)
            try text.write(toFile: dir.path("run/" + name), atomically: true, encoding: .utf8)
        }
        let script = repoRoot.appendingPathComponent("scripts/experiments/record.sh").path
        let save = try runTool("/bin/bash", [script, "save", "--out", dir.path("run"), "--record", dir.path("record")], in: dir.url)
        #expect(save.status == 0, "\(save.stderr)")
        func tree(_ root: String) -> [String] {
            (FileManager.default.enumerator(atPath: root)?.allObjects as? [String] ?? [])
                .filter { !(((try? FileManager.default.attributesOfItem(atPath: root + "/" + $0))?[.type] as? FileAttributeType) == .typeDirectory) }.sorted()
        }
        #expect(tree(dir.path("record")) == ["bin/chgnet/commit.txt", "data-stamp.txt", "eval/chgnet/test/ef-s0.csv", "eval/chgnet/test/ef-s0.json",
                                             "eval/chgnet/test/ef-s0.time", "memory.json", "settings/chgnet.env", "train/chgnet-ef-s0/config.json",
                                             "train/chgnet-ef-s0/metrics.csv", "train/chgnet-ef-s0/summary.json"])
        // Restoring into a run directory that has its own settings keeps them.
        try FileManager.default.createDirectory(atPath: dir.path("other/settings"), withIntermediateDirectories: true)
        try "BPTT_EPOCHS=9\n".write(toFile: dir.path("other/settings/chgnet.env"), atomically: true, encoding: .utf8)
        let restore = try runTool("/bin/bash", [script, "restore", "--out", dir.path("other"), "--record", dir.path("record")], in: dir.url)
        #expect(restore.status == 0 && restore.stdout.contains("9 file(s) copied"), "\(restore.stdout) \(restore.stderr)")
        #expect(try String(contentsOfFile: dir.path("other/settings/chgnet.env"), encoding: .utf8) == "BPTT_EPOCHS=9\n")
        #expect(tree(dir.path("other")) == tree(dir.path("record")))
        let bad = try runTool("/bin/bash", [script, "restore", "--record", dir.path("missing"), "--out", dir.path("x")], in: dir.url)
        #expect(bad.status == 2 && bad.stderr.contains("missing"), "\(bad.stderr)")
    }
}
