import Foundation
import Testing
import Atoms
import Potentials
import Tape

/// A fine-tuned model committed as its difference from a pulled model: `relaxft evaluate --model DELTA` works once
/// the base is in the store ($RELAXFT_HOME/models), and says how to get it when it is not.
@Suite struct ModelDeltaCLITests {
    @Test func evaluateAppliesADeltaFromTheStore() throws {
        let home = FileManager.default.temporaryDirectory.appendingPathComponent("relaxft-delta-cli-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: home.appendingPathComponent("models"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: home) }
        // The committed SchNet stands in for a pulled model.
        let schnet = repoRoot.appendingPathComponent("Fixtures/models/si-schnet-pretrained.safetensors").path
        let basePath = home.appendingPathComponent("models/si-schnet-1.0.safetensors").path
        try FileManager.default.copyItem(atPath: schnet, toPath: basePath)
        let base = try ModelFile.load(basePath).potential
        var tuned = base
        tuned.parameters["readout.1.weight"] = tuned.parameters["readout.1.weight"]! * 1.01
        let delta = home.appendingPathComponent("tuned.delta.safetensors").path
        let full = home.appendingPathComponent("tuned.safetensors").path
        try ModelFile.save(tuned, to: full, extraMetadata: ["training": "test"])
        let env = ["RELAXFT_HOME": home.path]
        // `models delta` writes the difference, keeping the training record.
        let made = try runTool(relaxftBinary, ["models", "delta", full, "--base", "si-schnet-1.0", "-o", delta, "--json"], in: home, environment: env)
        #expect(made.status == 0 && made.stdout.contains("\"changed_tensors\": 1"), "\(made.status): \(made.stdout) \(made.stderr)")
        let (_, deltaMeta) = try SafeTensors.read(delta)
        #expect(deltaMeta["relaxft_kind"] == ModelDelta.kind && deltaMeta[ModelDelta.baseKey] == "si-schnet-1.0" && deltaMeta["training"] == "test")
        // Refused, naming what is wrong, writing nothing: no --base, a base that is not pulled, a model of another kind.
        let bad = home.appendingPathComponent("bad.safetensors").path
        let so3krates = repoRoot.appendingPathComponent("Fixtures/models/si-so3krates-pretrained.safetensors").path
        for (model, extra, expected) in [(full, [] as [String], "--base"), (full, ["--base", "chgnet-0.3.0"], "relaxft models pull chgnet-0.3.0"),
                                         (so3krates, ["--base", "si-schnet-1.0"], "so3krates")] {
            let r = try runTool(relaxftBinary, ["models", "delta", model, "-o", bad] + extra, in: home, environment: env)
            #expect(r.status == 2 && r.stderr.lowercased().contains(expected.lowercased()) && !FileManager.default.fileExists(atPath: bad), "\(r.status): \(r.stderr)")
        }
        let data = repoRoot.appendingPathComponent("Fixtures/data/si-defects/test.extxyz").path
        let frame = home.appendingPathComponent("one.extxyz").path
        try StructureIO.write([try StructureIO.read(data)[0]], frame)
        let args = ["evaluate", "--model", full, "--label", "full", "--model", delta, "--label", "delta", "--data", frame,
                    "--relaxer", "fire", "--fmax", "0.05", "--steps", "200", "--threads", "1", "--csv", "out.csv"]
        let run = try runTool(relaxftBinary, args, in: home, environment: ["RELAXFT_HOME": home.path])
        #expect(run.status == 0, "\(run.stderr)")
        // The same weights: the same relaxation, digit for digit.
        let rows = try String(contentsOfFile: home.appendingPathComponent("out.csv").path, encoding: .utf8).split(separator: "\n").filter { !$0.hasPrefix("#") }
        let header = rows[0].split(separator: ","), values = rows[1].split(separator: ",")
        let dq1 = values[header.firstIndex(of: "dq_1")!], dq2 = values[header.firstIndex(of: "dq_2")!]
        #expect(dq1 == dq2 && Double(dq1)! > 0)
        // Without the base in the store: exit 2, and the message says what to do.
        try FileManager.default.removeItem(atPath: basePath)
        let missing = try runTool(relaxftBinary, args, in: home, environment: ["RELAXFT_HOME": home.path])
        #expect(missing.status == 2 && missing.stderr.contains("relaxft models pull si-schnet-1.0"), "\(missing.status): \(missing.stderr)")
    }
}
