import Foundation
import Testing
import Tape
import Atoms
@testable import Potentials

/// A fine-tuned model stored as its difference from a model in the store: applied on load, bit for bit.
@Suite struct ModelDeltaTests {
    /// A store holding `base` as `tiny-base-1.0`; the directory and the base.
    func store(with base: any Potential, float32: Bool = true) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("relaxft-delta-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var meta = base.metadata
        meta["relaxft_kind"] = base.kind
        // Float32 on disk, as `models pull` writes: the base values the delta is taken from are those read back.
        try SafeTensors.write(base.parameters.map { ($0.key, $0.value) }, metadata: meta, to: dir + "/tiny-base-1.0.safetensors", dtype: float32 ? .f32 : .f64)
        return dir
    }

    func loadDelta(_ path: String, store: String) throws -> (potential: any Potential, metadata: [String: String]) {
        let (t, m) = try SafeTensors.read(path)
        var p = OrderedDictionary<Tensor>()
        for (k, v) in t { p[k] = v }
        return try ModelDelta.load(p, m, path: path, store: store)
    }

    @Test func roundTripIsExact() throws {
        let (_, model) = smallModels()[1]
        let dir = try store(with: model)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let base = try ModelFile.load(dir + "/tiny-base-1.0.safetensors").potential
        // "Fine-tuned": small changes everywhere, and a few weights moved by orders of magnitude (where
        // value − base is not exact and the stored difference must be nudged).
        var tuned = base
        var rng = SeededGenerator(seed: 5)
        for name in tuned.parameters.keys {
            let t = tuned.parameters[name]!
            tuned.parameters[name] = t + rng.normalTensor(t.shape, scale: 1e-3) * t
        }
        var w = tuned.parameters["readout.1.weight"]!.array
        w[0] = 1e-9 + w[0] * 1e7
        w[1] = 3.0e12
        tuned.parameters["readout.1.weight"] = Tensor(shape: tuned.parameters["readout.1.weight"]!.shape, w)
        let path = dir + "/tuned.delta.safetensors"
        try ModelDelta.save(tuned, base: "tiny-base-1.0", baseParameters: base.parameters, to: path, extraMetadata: ["training": "test"])
        let (loaded, meta) = try loadDelta(path, store: dir)
        #expect(loaded.kind == model.kind)
        for (name, t) in tuned.parameters { #expect(loaded.parameters[name]!.bitwiseEqual(t), "\(name)") }
        // The returned metadata describes the loaded model (its kind) and where it came from.
        #expect(meta["training"] == "test" && meta[ModelDelta.baseKey] == "tiny-base-1.0" && meta["relaxft_kind"] == model.kind)
        #expect(loaded.metadata[ModelDelta.baseKey] == nil, "a re-saved model is a full model file")
        let s = randomSiCell()
        #expect(eval(loaded, s).energy.bitPattern == eval(tuned, s).energy.bitPattern)
        // A weight below the base's rounding granularity (≈ 1e-17 × the base weight) has no exact difference: it is
        // stored as itself, and the model still loads bit for bit.
        var unreachable = tuned
        w[2] = 1e-300
        unreachable.parameters["readout.1.weight"] = Tensor(shape: tuned.parameters["readout.1.weight"]!.shape, w)
        let bw = base.parameters["readout.1.weight"]!.array
        #expect(w[2] != 0 && bw[2] != 0 && ModelDelta.exactDifference(w[2], bw[2]) == nil)
        let xpath = dir + "/x.safetensors"
        try ModelDelta.save(unreachable, base: "tiny-base-1.0", baseParameters: base.parameters, to: xpath)
        let reloaded = try loadDelta(xpath, store: dir).potential
        for (name, t) in unreachable.parameters { #expect(reloaded.parameters[name]!.bitwiseEqual(t), "\(name)") }
        let (xraw, _) = try SafeTensors.read(xpath)
        let stored = xraw.first { $0.name == ModelDelta.exactTensors[2] }?.tensor.array ?? []
        #expect(stored == [1e-300], "weights stored as themselves: \(stored)")
        // The stored tensors are differences, not weights.
        let (raw, _) = try SafeTensors.read(path)
        let d = raw.first { $0.name == "readout.1.weight" }!.tensor
        #expect(d.array[3] != w[3] && abs(d.array[3]) < 0.01 * abs(w[3]))
    }

    @Test func refusesOtherOrMissingBase() throws {
        let (_, model) = smallModels()[0]
        let dir = try store(with: model)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let base = try ModelFile.load(dir + "/tiny-base-1.0.safetensors").potential
        var tuned = base
        tuned.parameters["atomic_energies"] = tuned.parameters["atomic_energies"]! + 0.25
        let path = dir + "/tuned.delta.safetensors"
        try ModelDelta.save(tuned, base: "tiny-base-1.0", baseParameters: base.parameters, to: path)
        _ = try loadDelta(path, store: dir)
        // Other weights under the base's name (one value changed): refused, not silently applied.
        var other = base
        other.parameters["atomic_energies"] = Tensor([-1.5, -4.0 + 1e-6])
        try SafeTensors.write(other.parameters.map { ($0.key, $0.value) }, metadata: base.metadata.merging(["relaxft_kind": base.kind]) { $1 },
                              to: dir + "/tiny-base-1.0.safetensors")
        #expect { try loadDelta(path, store: dir) } throws: { "\($0)".contains("not the ones this difference was taken from") }
        // No base at all: the error says how to get it.
        try FileManager.default.removeItem(atPath: dir + "/tiny-base-1.0.safetensors")
        #expect { try loadDelta(path, store: dir) } throws: { "\($0)".contains("relaxft models pull tiny-base-1.0") }
        // A model of another architecture cannot be stored against this base.
        #expect(throws: PotentialSpecError.self) {
            try ModelDelta.save(smallModels()[1].1, base: "tiny-base-1.0", baseParameters: base.parameters, to: dir + "/x.safetensors")
        }
    }
}
