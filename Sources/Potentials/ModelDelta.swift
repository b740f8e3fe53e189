import Atoms
import Foundation
import Tape

/// A fine-tuned model stored as its difference from a pulled model (`relaxft_kind` = `delta`): every tensor holds
/// θ_fine-tuned − θ_base, and loading adds the base's weights from the local store
/// (`relaxft models pull NAME`) back on, after checking that the store holds the very weights the difference was
/// taken from (a SHA-256 of their values). Models whose weights this repository must not redistribute (CHGNet's)
/// can so be shared as a file that is useless without the pulled original; the sum reproduces the fine-tuned
/// weights bit for bit. A weight that no double added to its base weight gives exactly (a fine-tuned value far
/// smaller than the base value: the sum is rounded on the base's coarser grid) is stored as itself, in three extra
/// tensors (`exactTensors`: its tensor's position in name order, its offset, its value).
public enum ModelDelta {
    public static let kind = "delta"
    /// Metadata keys of a delta file: the base's model-store name and the SHA-256 of its parameter values.
    public static let baseKey = "delta_base"
    public static let baseDigestKey = "delta_base_parameters_sha256"
    /// Tensors of the weights stored as themselves: tensor position (base names sorted), offset, value.
    public static let exactTensors = ["delta_exact/tensor", "delta_exact/offset", "delta_exact/value"]

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
    /// two differ by orders of magnitude; then a neighbouring double is taken), or nil when none exists (a value
    /// off the grid the sum is rounded on).
    static func exactDifference(_ value: Double, _ base: Double) -> Double? {
        var d = value - base
        for _ in 0..<64 {
            let sum = base + d
            if sum.bitPattern == value.bitPattern { return d }
            guard sum.isFinite, d.isFinite else { return nil }
            d = sum < value ? d.nextUp : d.nextDown
        }
        return nil
    }

    /// Writes `potential` (trained from the model-store model `base`, whose weights are `baseParameters`) as a delta
    /// file: the base's tensors only (same names and shapes), the potential's metadata plus `extraMetadata`.
    public static func save(_ potential: any Potential, base: String, baseParameters: OrderedDictionary<Tensor>, to path: String,
                            extraMetadata: [String: String] = [:]) throws {
        guard Set(baseParameters.keys) == Set(potential.parameters.keys) else {
            throw PotentialSpecError(message: "\(base) and the model to store have different tensors: not a fine-tuned \(base)")
        }
        var tensors: SafeTensors.OrderedTensors = []
        var exact: [[Double]] = [[], [], []]
        let order = baseParameters.keys.sorted()
        for name in baseParameters.keys {
            let b = baseParameters[name]!, t = potential.parameters[name]!
            guard b.shape == t.shape else { throw PotentialSpecError(message: "tensor '\(name)': shape \(t.shape), \(base) has \(b.shape)") }
            guard t.array.allSatisfy(\.isFinite) else { throw PotentialSpecError(message: "tensor '\(name)' has non-finite weights") }
            var diff = [Double](repeating: 0, count: t.count)
            for (i, (v, bv)) in zip(t.array, b.array).enumerated() {
                if let d = exactDifference(v, bv) { diff[i] = d; continue }
                exact[0].append(Double(order.firstIndex(of: name)!)); exact[1].append(Double(i)); exact[2].append(v)
            }
            tensors.append((name, Tensor(shape: t.shape, diff)))
        }
        if !exact[0].isEmpty { for (k, n) in exactTensors.enumerated() { tensors.append((n, Tensor(exact[k]))) } }
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
        let exactParts = exactTensors.map { tensors[$0] }
        guard Set(tensors.keys).subtracting(exactTensors) == Set(params.keys), exactParts.allSatisfy({ $0 != nil }) || exactParts.allSatisfy({ $0 == nil }) else {
            throw PotentialSpecError(message: "\(path): its tensors are not those of \(base)")
        }
        for (name, d) in tensors where !exactTensors.contains(name) {
            let b = params[name]!
            guard b.shape == d.shape else { throw PotentialSpecError(message: "\(path): tensor '\(name)' has shape \(d.shape), \(base) has \(b.shape)") }
            params[name] = b + d
        }
        if let which = exactParts[0], let offsets = exactParts[1], let values = exactParts[2] {
            let order = params.keys.sorted()
            guard which.rank == 1, offsets.shape == which.shape, values.shape == which.shape else {
                throw PotentialSpecError(message: "\(path): tensors \(exactTensors.joined(separator: ", ")) must be vectors of one length")
            }
            for (k, (w, o)) in zip(which.array, offsets.array).enumerated() {
                guard w >= 0, w < Double(order.count), w == w.rounded(), o >= 0, o == o.rounded(),
                      case let name = order[Int(w)], Int(o) < params[name]!.count else {
                    throw PotentialSpecError(message: "\(path): entry \(k) of \(exactTensors[0]) / \(exactTensors[1]) names no weight of \(base)")
                }
                var a = params[name]!.array
                a[Int(o)] = values.array[k]
                params[name] = Tensor(shape: params[name]!.shape, a)
            }
        }
        guard let baseKind = baseMeta["relaxft_kind"], let loader = ModelFile.loaders[baseKind], baseKind != kind else {
            throw PotentialSpecError(message: "\(basePath): not a model file a difference can be applied to")
        }
        var meta = baseMeta
        for (k, v) in metadata where k != "relaxft_kind" { meta[k] = v }
        // The potential carries no delta bookkeeping (saved again, it is a full model file); the returned metadata does.
        let own = meta.filter { $0.key != baseKey && $0.key != baseDigestKey && $0.key != "delta_kind" }
        return (try ModelFile.make(loader, params, own.merging(["relaxft_kind": baseKind]) { $1 }, path: path), meta)
    }
}
