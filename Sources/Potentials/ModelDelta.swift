import Atoms
import Foundation
import Tape

/// A fine-tuned model stored as its difference from a pulled model (`relaxft_kind` = `delta`): every tensor holds
/// θ_fine-tuned − θ_base, and loading adds the base's weights from the local store
/// (`relaxft models pull NAME`) back on, after checking that the store holds the very weights the difference was
/// taken from (a SHA-256 of their values). Models whose weights this repository must not redistribute (CHGNet's)
/// can so be shared as a file that is useless without the pulled original; the sum reproduces the fine-tuned
/// weights bit for bit.
public enum ModelDelta {
    public static let kind = "delta"
    /// Metadata keys of a delta file: the base's model-store name and the SHA-256 of its parameter values.
    public static let baseKey = "delta_base"
    public static let baseDigestKey = "delta_base_parameters_sha256"

    /// SHA-256 over the parameters in name order: each name, its shape and its values as little-endian float64.
    public static func parameterDigest(_ parameters: OrderedDictionary<Tensor>) -> String {
        var bytes: [UInt8] = []
        for name in parameters.keys.sorted() {
            let t = parameters[name]!
            bytes += Array(name.utf8) + [0]
            for d in t.shape { withUnsafeBytes(of: UInt64(d).littleEndian) { bytes += $0 } }
            for v in t.array { withUnsafeBytes(of: v.bitPattern.littleEndian) { bytes += $0 } }
        }
        return SHA256.hex(bytes)
    }

    /// The difference d with base + d == value exactly in floating point (d = value − base is exact unless the
    /// two differ by orders of magnitude; then a neighbouring double is taken). A nonzero value below the base's
    /// rounding granularity (|value| ≲ 1e-16·|base|) has none: an error.
    static func exactDifference(_ value: Double, _ base: Double) throws -> Double {
        var d = value - base
        for _ in 0..<64 {
            let sum = base + d
            if sum.bitPattern == value.bitPattern { return d }
            d = sum < value ? d.nextUp : d.nextDown
        }
        throw PotentialSpecError(message: "weight \(value) cannot be stored as a difference from \(base)")
    }

    /// Writes `potential` (trained from the model-store model `base`, whose weights are `baseParameters`) as a delta
    /// file: the base's tensors only (same names and shapes), the potential's metadata plus `extraMetadata`.
    public static func save(_ potential: any Potential, base: String, baseParameters: OrderedDictionary<Tensor>, to path: String,
                            extraMetadata: [String: String] = [:]) throws {
        guard Set(baseParameters.keys) == Set(potential.parameters.keys) else {
            throw PotentialSpecError(message: "\(base) and the model to store have different tensors: not a fine-tuned \(base)")
        }
        var tensors: SafeTensors.OrderedTensors = []
        for name in baseParameters.keys {
            let b = baseParameters[name]!, t = potential.parameters[name]!
            guard b.shape == t.shape else { throw PotentialSpecError(message: "tensor '\(name)': shape \(t.shape), \(base) has \(b.shape)") }
            tensors.append((name, Tensor(shape: t.shape, try zip(t.array, b.array).map { try exactDifference($0, $1) })))
        }
        var meta = potential.metadata
        for (k, v) in extraMetadata { meta[k] = v }
        meta["relaxft_kind"] = kind
        meta["delta_kind"] = potential.kind
        meta[baseKey] = base
        meta[baseDigestKey] = parameterDigest(baseParameters)
        try SafeTensors.write(tensors, metadata: meta, to: path)
    }

    /// The fine-tuned potential of a delta file (read as `tensors`, `metadata` from `path`) and its metadata:
    /// the base's, overridden by the delta file's.
    /// `store`: the directory of pulled models.
    static func load(_ tensors: OrderedDictionary<Tensor>, _ metadata: [String: String], path: String,
                     store: String = ModelStore.modelsDirectory) throws -> (potential: any Potential, metadata: [String: String]) {
        guard let base = metadata[baseKey], let digest = metadata[baseDigestKey] else {
            throw PotentialSpecError(message: "\(path): a delta model file needs \(baseKey) and \(baseDigestKey) in its metadata")
        }
        guard ModelStore.isModelName(base) else { throw PotentialSpecError(message: "\(path): \(baseKey) '\(base)' is not a model name") }
        let basePath = store + "/" + base + ".safetensors"
        guard FileManager.default.fileExists(atPath: basePath) else {
            throw PotentialSpecError(message: "\(path) is a difference from \(base), which is not in \(store); run 'relaxft models pull \(base)' first")
        }
        let (baseTensors, baseMeta) = try SafeTensors.read(basePath)
        var params = OrderedDictionary<Tensor>()
        for (name, t) in baseTensors { params[name] = t }
        guard parameterDigest(params) == digest else {
            throw PotentialSpecError(message: "\(path): the weights in \(basePath) are not the ones this difference was taken from (parameter SHA-256 differs); pull \(base) again")
        }
        guard Set(tensors.keys) == Set(params.keys) else {
            throw PotentialSpecError(message: "\(path): its tensors are not those of \(base)")
        }
        for (name, d) in tensors {
            let b = params[name]!
            guard b.shape == d.shape else { throw PotentialSpecError(message: "\(path): tensor '\(name)' has shape \(d.shape), \(base) has \(b.shape)") }
            params[name] = b + d
        }
        guard let baseKind = baseMeta["relaxft_kind"], let loader = ModelFile.loaders[baseKind], baseKind != kind else {
            throw PotentialSpecError(message: "\(basePath): not a model file a difference can be applied to")
        }
        var meta = baseMeta
        for (k, v) in metadata where k != "relaxft_kind" { meta[k] = v }
        // The potential carries no delta bookkeeping (saved again, it is a full model file); the returned metadata does.
        let own = meta.filter { $0.key != baseKey && $0.key != baseDigestKey && $0.key != "delta_kind" }
        return (try loader(params, own.merging(["relaxft_kind": baseKind]) { $1 }), meta)
    }
}
