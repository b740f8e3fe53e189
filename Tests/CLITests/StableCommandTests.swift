import Foundation
import Testing
import Atoms
import Dynamics
import Potentials
import Tape

/// Rows of a CSV file as dictionaries keyed by the header.
func csvRows(_ path: String) throws -> [[String: String]] {
    let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
    guard let header = lines.first else { return [] }
    return lines.dropFirst().map { Dictionary(uniqueKeysWithValues: zip(header, $0)) }
}

/// The liquid-silicon fixture of the known-truth recovery (scripts/experiments/stable_sw.sh): a 64-atom
/// start and the RDF of the published SW parameters at 2500 K.
let stableFixtures = ["Fixtures/data/stable-sw/liquid64.extxyz", "Fixtures/data/stable-sw/rdf_reference.csv"]

/// Options of a small SW run: 2 replicas, learning every epoch, continuing trajectories.
func swStableArguments(out: String, epochs: Int) -> [String] {
    ["stable", "--pretrained", "sw:sigma=2.16,lambda=18", "--train", "sigma,lambda", "--lambda", "0", "--reference-observable", "rdf_reference.csv",
     "--structure", "liquid64.extxyz", "--temperature", "2500", "--replicas", "2", "--steps", "150", "--sample-interval", "10", "--discard", "30",
     "--restart", "continue", "--unstable-fraction", "0", "--bond-threshold", "100", "--min-distance", "1.5", "--lr", "0.01", "--monitor", "loss",
     "--epochs", "\(epochs)", "--out", out]
}

@Suite("relaxft stable", .serialized)
struct StableCommandTests {
    /// Known truth, small: SW with σ and λ perturbed, trained on the RDF of the published parameters, moves
    /// both toward the truth (σ down from 2.16 to 2.0951, λ up from 18 to 21); RUN_DIR holds what a report draws.
    @Test func moveSWParametersTowardTheTruth() throws {
        let dir = try Scratch(copying: stableFixtures)
        defer { dir.remove() }
        let run = try dir.run(swStableArguments(out: "run", epochs: 4) + ["--json"])
        #expect(run.status == 0, "\(run.stderr)")
        let rows = try csvRows(dir.path("run/metrics.csv"))
        try #require(rows.count == 4)
        #expect(rows.map { $0["phase"] } == ["simulate", "learn", "learn", "learn"])
        #expect(rows.allSatisfy { $0["fraction_unstable"] == "0" && Int($0["samples"] ?? "") == 2 * 12 })
        #expect(rows[0]["param_sigma"] == "2.16" && rows[0]["param_lambda"] == "18")
        let last = try ModelFile.load(dir.path("run/last.safetensors")).potential
        let sigma = last.parameters["sigma"]!.scalar, lambda = last.parameters["lambda"]!.scalar
        #expect(sigma < 2.16 - 0.01 && sigma > 2.0, "σ \(sigma)")
        #expect(lambda > 18.1, "λ \(lambda)")
        // Untrained parameters stay.
        #expect(last.parameters["epsilon"]!.scalar == StillingerWeber().parameters["epsilon"]!.scalar)

        let rdf = try csvRows(dir.path("run/rdf.csv"))
        #expect(rdf.count == 100 && rdf[0].keys.sorted() == ["g_initial", "g_model", "g_reference", "r"])
        for f in ["best.safetensors", "last.safetensors", "checkpoint.safetensors", "config.json", "summary.json"] {
            #expect(FileManager.default.fileExists(atPath: dir.path("run/" + f)), "\(f)")
        }
        let j = try #require(run.json.first)
        #expect(j["epochs"] as? Int == 4)
        #expect((j["last_parameters"] as? [String: Double])?["sigma"] == sigma)
        #expect(run.stderr.contains("epoch 4/4 learn"))
    }

    /// A run stopped after 2 epochs and resumed to 3 ends where a 3-epoch run ends.
    @Test func resumeContinuesTheRun() throws {
        let dir = try Scratch(copying: stableFixtures)
        defer { dir.remove() }
        let whole = try dir.run(swStableArguments(out: "whole", epochs: 3))
        #expect(whole.status == 0, "\(whole.stderr)")
        let part = try dir.run(swStableArguments(out: "part", epochs: 2))
        #expect(part.status == 0, "\(part.stderr)")
        let resumed = try dir.run(["stable", "--resume", "part", "--epochs", "3"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        let a = try csvRows(dir.path("whole/metrics.csv")), b = try csvRows(dir.path("part/metrics.csv"))
        try #require(a.count == 3 && b.count == 3)
        for k in 0..<3 {
            for key in ["phase", "samples", "param_sigma", "param_lambda"] { #expect(a[k][key] == b[k][key], "epoch \(k + 1) \(key)") }
            let la = Double(a[k]["observable_loss"]!)!, lb = Double(b[k]["observable_loss"]!)!
            #expect(abs(la - lb) <= 1e-6 * la, "epoch \(k + 1): \(la) vs \(lb)")
        }
        // The summary after a resume still starts from the first epoch of the run.
        let summary = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir.path("part/summary.json")))) as? [String: Any])
        #expect((summary["first_rdf_mae"] as? Double).map { abs($0 - Double(a[0]["rdf_mae"]!)!) < 1e-5 * $0 } == true, "\(summary)")
        let pa = try ModelFile.load(dir.path("whole/last.safetensors")).potential, pb = try ModelFile.load(dir.path("part/last.safetensors")).potential
        #expect(abs(pa.parameters["sigma"]!.scalar - pb.parameters["sigma"]!.scalar) < 1e-9)
    }

    /// StABlE's phases: a learning phase starts once ≥ 75 % of the replicas went unstable in an epoch (here
    /// every bond breaks a 0.02 Å threshold); with a loose threshold the run only simulates.
    @Test func learningStartsWhenMostReplicasAreUnstable() throws {
        let dir = try Scratch(copying: stableFixtures)
        defer { dir.remove() }
        let base = ["stable", "--pretrained", "sw", "--train", "sigma", "--lambda", "0", "--reference-observable", "rdf_reference.csv",
                    "--structure", "liquid64.extxyz", "--temperature", "2500", "--replicas", "4", "--steps", "40", "--sample-interval", "10", "--epochs", "3"]
        let tight = try dir.run(base + ["--bond-threshold", "0.02", "--out", "tight"])
        #expect(tight.status == 0, "\(tight.stderr)")
        let t = try csvRows(dir.path("tight/metrics.csv"))
        #expect(t.map { $0["phase"] } == ["simulate", "learn", "learn"])
        #expect(t.allSatisfy { $0["fraction_unstable"] == "1" && $0["mean_time_to_instability_ps"] == "0.01" })
        #expect(t[0]["lr"] == "0" && t[1]["lr"] == "0.001")

        let loose = try dir.run(base + ["--bond-threshold", "100", "--out", "loose"])
        #expect(loose.status == 0, "\(loose.stderr)")
        let l = try csvRows(dir.path("loose/metrics.csv"))
        #expect(l.map { $0["phase"] } == ["simulate", "simulate", "simulate"])
        #expect(l.allSatisfy { $0["fraction_unstable"] == "0" && $0["mean_time_to_instability_ps"] == "" })
        #expect(l.map { $0["mean_stable_time_ps"] } == ["0.04", "0.08", "0.12"])
    }

    @Test func badInputExitsTwoAndWritesNothing() throws {
        let dir = try Scratch(copying: stableFixtures)
        defer { dir.remove() }
        let base = ["stable", "--pretrained", "sw", "--reference-observable", "rdf_reference.csv", "--structure", "liquid64.extxyz", "--out", "run"]
        let cases: [([String], String)] = [
            (base, "--temperature K is required"),
            (base + ["--temperature", "300"], "--lambda 10.0 needs training data"),
            (base + ["--temperature", "300", "--lambda", "0", "--train", "sigma,zeta"], "no parameter 'zeta'"),
            (base + ["--temperature", "300", "--lambda", "0", "--thermostat", "andersen"], "--thermostat expects"),
            (base + ["--temperature", "300", "--lambda", "0", "--data", "missing.extxyz"], "file 'missing.extxyz' not found"),
            (["stable", "--pretrained", "sw", "--reference-observable", "liquid64.extxyz", "--temperature", "300", "--lambda", "0", "--out", "run",
              "--reference-skip", "5"], "none left after skipping 5"),
            (["stable", "--resume", "nowhere"], "run directory 'nowhere' does not exist"),
        ]
        for (args, message) in cases {
            let run = try dir.run(args)
            #expect(run.status == 2, "\(args): \(run.stderr)")
            #expect(run.stderr.contains(message), "\(args): \(run.stderr)")
            #expect(!FileManager.default.fileExists(atPath: dir.path("run")), "\(args)")
        }
        // A malformed reference table names the file and line.
        try "r,g\n0.1,0\n0.2,zero\n".write(toFile: dir.path("bad.csv"), atomically: true, encoding: .utf8)
        let bad = try dir.run(base.map { $0 == "rdf_reference.csv" ? "bad.csv" : $0 } + ["--temperature", "300", "--lambda", "0"])
        #expect(bad.status == 2 && bad.stderr.contains("bad.csv:3: expected 2 numbers"), "\(bad.stderr)")
        let help = try dir.run(["stable", "--help"])
        #expect(help.status == 0 && help.stdout.contains("Boltzmann estimator") && help.stdout.contains("--reference-observable"))
    }
}
