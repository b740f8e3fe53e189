import Foundation
import Testing
import Tape
import Atoms
import Potentials
@testable import FineTune

/// Synthetic labelled frames: distorted 8-atom Si cells with Stillinger–Weber energies and forces, written as
/// extended XYZ (the format pretraining reads).
func writeSyntheticSet(_ path: String, frames: Int, seed: UInt64) throws {
    var rng = SeededGenerator(seed: seed)
    let sw = StillingerWeber()
    var text = ""
    for _ in 0..<frames {
        var s = Structure.diamond(a: 5.431 * (1 + 0.02 * rng.normal()), repeats: 1)
        s.positions = s.positions + rng.normalTensor([8, 3], scale: 0.1)
        let ev = sw.evaluate(AtomicSystem(s, cutoff: sw.cutoff), positions: s.positions, cells: s.cell.reshaped([1, 3, 3]))
        let c = s.cell.array.map { "\($0)" }.joined(separator: " ")
        text += "8\nLattice=\"\(c)\" Properties=species:S:1:pos:R:3:forces:R:3 energy=\(ev.energy) config_type=synthetic pbc=\"T T T\"\n"
        for a in 0..<8 {
            text += "Si \(s.positions[a, 0]) \(s.positions[a, 1]) \(s.positions[a, 2]) \(ev.forces[a, 0]) \(ev.forces[a, 1]) \(ev.forces[a, 2])\n"
        }
    }
    try text.write(toFile: path, atomically: true, encoding: .utf8)
}

func tempDir(_ name: String) -> String { try! temporaryDirectory(name) }

func tinyOptions(_ dir: String, model: String) -> PretrainConfig {
    var o = PretrainConfig()
    o.model = model
    o.features = 12
    o.layers = 1
    o.heads = 2
    o.radialBasis = 8
    o.cutoff = 4.0
    o.epochs = 4
    o.batch = 2
    o.learningRate = 5e-3
    o.seed = 3
    o.dataFiles = [dir + "/train.extxyz"]
    o.valFiles = [dir + "/val.extxyz"]
    o.schedule = "constant"
    return o
}

@Suite struct PretrainTests {
    @Test(arguments: ["schnet", "so3krates"]) func pretrainingDecreasesTheLoss(model: String) throws {
        let dir = tempDir("pretrain")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try writeSyntheticSet(dir + "/train.extxyz", frames: 6, seed: 1)
        try writeSyntheticSet(dir + "/val.extxyz", frames: 2, seed: 2)
        let t = try PretrainTrainer(config: tinyOptions(dir, model: model), runDirectory: dir + "/run")
        let (initial, _) = t.validate()
        let rows = try t.run()
        #expect(rows.count == 4)
        #expect(rows.last!.valLoss < 0.97 * initial, "\(model): validation loss \(initial) → \(rows.map(\.valLoss))")
        #expect(rows.last!.trainLoss < rows.first!.trainLoss)
        // Outputs of a run: metrics rows, loadable model files with provenance.
        let csv = try String(contentsOfFile: dir + "/run/metrics.csv", encoding: .utf8).split(separator: "\n")
        #expect(csv.count == 5 && csv[0].hasPrefix("epoch,lr,train_loss"))
        let (best, meta) = try ModelFile.load(dir + "/run/best.safetensors")
        #expect(best.kind == model)
        #expect(meta["training_data"]?.hasSuffix("train.extxyz") == true)
        #expect(meta["training_best_epoch"] == "\(t.bestEpoch)")
        // Reference energy: least squares over the training frames (one element: Σ E_s n_s / Σ n_s²).
        let frames = try PretrainTrainer.loadFrames([dir + "/train.extxyz"])
        let lsq = frames.map { $0.energy! * 8 }.reduce(0, +) / Double(frames.count * 64)
        #expect(abs(best.parameters["atomic_energies"]![flat: 0] - lsq) < 1e-12 * abs(lsq))
    }

    @Test func resumedRunIsBitIdenticalToAnUninterruptedOne() throws {
        let dir = tempDir("resume")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try writeSyntheticSet(dir + "/train.extxyz", frames: 6, seed: 1)
        try writeSyntheticSet(dir + "/val.extxyz", frames: 2, seed: 2)
        var o = tinyOptions(dir, model: "so3krates")
        o.schedule = "plateau"
        o.valFiles = []
        o.valFraction = 0.3
        o.dataFiles = [dir + "/train.extxyz", dir + "/val.extxyz"]
        let straight = try PretrainTrainer(config: o, runDirectory: dir + "/a")
        try straight.run()
        let first = try PretrainTrainer(config: o, runDirectory: dir + "/b")
        try first.run(maxEpochsThisCall: 2)
        #expect(first.completedEpochs == 2)
        // A fresh process would do exactly this: read the run directory back.
        let resumed = try PretrainTrainer.resume(runDirectory: dir + "/b")
        #expect(resumed.completedEpochs == 2)
        try resumed.run()
        #expect(resumed.completedEpochs == 4)
        for (name, t) in straight.model.parameters {
            #expect(t.bitwiseEqual(resumed.model.parameters[name]!), "parameter \(name) differs after resume")
        }
        let (a, _) = try SafeTensors.read(dir + "/a/checkpoint.safetensors")
        let (b, _) = try SafeTensors.read(dir + "/b/checkpoint.safetensors")
        #expect(zip(a, b).allSatisfy { $0.name == $1.name && $0.tensor.bitwiseEqual($1.tensor) })
        // Same metrics rows (all but the wall-clock column).
        func rows(_ p: String) throws -> [String] {
            try String(contentsOfFile: p + "/metrics.csv", encoding: .utf8).split(separator: "\n").map { $0.split(separator: ",").dropLast().joined(separator: ",") }
        }
        #expect(try rows(dir + "/a") == rows(dir + "/b"))
        // Starting a new run over an existing one is refused.
        #expect(throws: PretrainError.self) { _ = try PretrainTrainer(config: o, runDirectory: dir + "/a") }
    }

    @Test func extxyzErrorsNameFileAndLine() throws {
        let dir = tempDir("xyz")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/bad.extxyz"
        try "2\nLattice=\"5 0 0 0 5 0 0 0 5\" Properties=species:S:1:pos:R:3:forces:R:3 energy=-1.0\nSi 0 0 0 0 0 0\nSi 1 1 x 0 0 0\n".write(toFile: path, atomically: true, encoding: .utf8)
        do {
            _ = try PretrainTrainer.loadFrames([path])
            Issue.record("no error")
        } catch let e as StructureFileError {
            #expect(e.line == 4 && e.description.contains("bad.extxyz:4"), "\(e)")
        }
        // Frames without energies are refused with the file and frame named.
        try "1\nLattice=\"5 0 0 0 5 0 0 0 5\" Properties=species:S:1:pos:R:3\nSi 0 0 0\n".write(toFile: path, atomically: true, encoding: .utf8)
        do {
            _ = try PretrainTrainer.loadFrames([path])
            Issue.record("no error")
        } catch let e as PretrainError {
            #expect(e.message.contains("frame 0 has no energy"), "\(e)")
        }
    }

    @Test func forceFieldMetricsOfTheLabellingPotentialAreZero() throws {
        let dir = tempDir("metrics")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try writeSyntheticSet(dir + "/f.extxyz", frames: 5, seed: 4)
        let frames = try PretrainTrainer.loadFrames([dir + "/f.extxyz"])
        let exact = ForceFieldMetrics.compute(potential: StillingerWeber(), frames: frames, batch: 2)
        #expect(exact.frames == 5 && exact.atoms == 40 && exact.forceComponents == 120)
        #expect(exact.energyMAE < 1e-9 && exact.forceMAE < 1e-12)
        // A shifted potential: energy error = shift per atom, in meV/atom.
        var sw = StillingerWeber()
        sw.parameters["epsilon"] = Tensor(scalar: 2.16826 * 1.01)
        let off = ForceFieldMetrics.compute(potential: sw, frames: frames)
        var e = 0.0, f = 0.0
        for s in frames {
            let ev = sw.evaluate(AtomicSystem(s, cutoff: sw.cutoff), positions: s.positions, cells: s.cell.reshaped([1, 3, 3]))
            e += abs(ev.energy - s.energy!) / 8
            f += (ev.forces - s.forces!).array.map { abs($0) }.reduce(0, +)
        }
        #expect(abs(off.energyMAE - 1000 * e / 5) < 1e-9)
        #expect(abs(off.forceMAE - f / 120) < 1e-12)
    }
}
