import Tape

public struct TorchCheckpointError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { "torch checkpoint: \(message)" }
}

/// A tensor read from a torch checkpoint, widened to Double (exact for float32, float16 is not read).
public struct TorchTensor: Sendable {
    public let dtype: String
    public let tensor: Tensor
}

/// A PyTorch checkpoint as written by `torch.save` (the zip format of torch ≥ 1.6): `<prefix>/data.pkl` holds the
/// pickled object; every tensor storage is the entry `<prefix>/data/<key>`, raw little-endian values. Tensors
/// appear in the pickle as `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, …)` with the storage
/// as a persistent id `('storage', torch.<Type>Storage, key, location, numel)`; nothing is executed.
public struct TorchCheckpoint {
    public let root: PickleValue
    let archive: ZipArchive
    let prefix: String

    public init(bytes: [UInt8]) throws {
        do {
            archive = try ZipArchive(bytes: bytes)
        } catch {
            throw TorchCheckpointError(message: "not a zip-format torch checkpoint (\(error)); files of torch < 1.6 (legacy format) are not supported")
        }
        guard let pkl = archive.entries.first(where: { $0.name == "data.pkl" || $0.name.hasSuffix("/data.pkl") }) else {
            throw TorchCheckpointError(message: "no data.pkl in the archive")
        }
        prefix = String(pkl.name.dropLast("data.pkl".count))
        if let bo = archive.entry(prefix + "byteorder"), let text = try? archive.read(bo), String(decoding: text, as: UTF8.self) != "little" {
            throw TorchCheckpointError(message: "big-endian checkpoints are not supported")
        }
        root = try Unpickler.load(archive.read(pkl))
    }

    /// Storage element types by the name of their pickled class.
    static let storageTypes: [String: (dtype: String, size: Int)] = [
        "FloatStorage": ("float32", 4), "DoubleStorage": ("float64", 8), "LongStorage": ("int64", 8), "IntStorage": ("int32", 4),
    ]

    /// The tensor a pickled `_rebuild_tensor_v2` call describes (any strides; the result is contiguous).
    public func tensor(_ v: PickleValue) throws -> TorchTensor {
        guard case .call(.global("torch._utils", "_rebuild_tensor_v2"), let args, _) = v, let a = args.items, a.count >= 4,
              case .persistent(let pid) = a[0], let p = pid.items, p.count == 5, p[0] == .string("storage"),
              case .global(_, let storageClass) = p[1], let key = p[2].stringValue, let numel = p[4].intValue,
              let offset = a[1].intValue, let size = a[2].items?.compactMap(\.intValue), let stride = a[3].items?.compactMap(\.intValue),
              size.count == a[2].items!.count, stride.count == size.count else {
            throw TorchCheckpointError(message: "not a tensor: \(String(describing: v).prefix(200))")
        }
        guard let st = TorchCheckpoint.storageTypes[storageClass] else {
            throw TorchCheckpointError(message: "storage type \(storageClass) is not supported (\(TorchCheckpoint.storageTypes.keys.sorted().joined(separator: ", ")) are)")
        }
        let raw = try archive.read(prefix + "data/" + key)
        guard raw.count == numel * st.size else { throw TorchCheckpointError(message: "storage \(key): \(raw.count) bytes for \(numel) elements") }
        let count = size.reduce(1, *)
        var values = [Double](repeating: 0, count: count)
        // Element k of the row-major result sits at offset + Σ_d index_d·stride_d in the storage.
        var index = [Int](repeating: 0, count: size.count)
        for k in 0..<count {
            var at = offset
            for d in 0..<size.count { at += index[d] * stride[d] }
            guard at >= 0, at < numel else { throw TorchCheckpointError(message: "storage \(key): element \(at) out of range") }
            let o = at * st.size
            switch st.dtype {
            case "float32": values[k] = Double(Float(bitPattern: le32(raw, o)))
            case "float64": values[k] = Double(bitPattern: le64(raw, o))
            case "int64": values[k] = Double(Int64(bitPattern: le64(raw, o)))
            default: values[k] = Double(Int32(bitPattern: le32(raw, o)))
            }
            var d = size.count - 1
            while d >= 0 {
                index[d] += 1
                if index[d] < size[d] { break }
                index[d] = 0
                d -= 1
            }
        }
        return TorchTensor(dtype: st.dtype, tensor: Tensor(shape: size, values))
    }

    /// The tensors of a state dict (an OrderedDict of name → tensor), in file order.
    public func stateDict(_ v: PickleValue) throws -> [(name: String, tensor: TorchTensor)] {
        guard case .dict(let entries) = v else { throw TorchCheckpointError(message: "state_dict is not a dict") }
        return try entries.map { e in
            guard let name = e.key.stringValue else { throw TorchCheckpointError(message: "state_dict key \(e.key) is not a string") }
            return (name, try tensor(e.value))
        }
    }
}

private func le32(_ b: [UInt8], _ o: Int) -> UInt32 {
    UInt32(b[o]) | UInt32(b[o + 1]) << 8 | UInt32(b[o + 2]) << 16 | UInt32(b[o + 3]) << 24
}

private func le64(_ b: [UInt8], _ o: Int) -> UInt64 { UInt64(le32(b, o)) | UInt64(le32(b, o + 4)) << 32 }
