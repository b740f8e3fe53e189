import Tape

/// The CHGNet 0.3.0 weights shipped in the `chgnet` wheel on PyPI (Modified BSD licence, © the Regents of the
/// University of California / LBNL), converted from the torch checkpoint to a relaxft model file.
public enum CHGNetWeights {
    public static let modelName = "chgnet-0.3.0"
    public static let checkpointEntry = "chgnet/pretrained/0.3.0/chgnet_0.3.0_e29f68s314m37.pth.tar"
    public static let checkpointSHA256 = "d14ab7c0f093efe64b60a7bcd540bca10e74fb7f46c86108a079af60524659d1"
    /// Parameters of CHGNet 0.3.0 (136 tensors).
    public static let parameterCount = 412_525

    static let source = ModelStore.Source(
        name: modelName, summary: "CHGNet 0.3.0 (Deng et al. 2023), MPtrj-pretrained, 412,525 parameters",
        requirement: "chgnet==0.4.2", wheelPrefix: "chgnet-0.4.2-", entry: checkpointEntry, sha256: checkpointSHA256,
        convert: { try convert(checkpoint: $0) })

    /// The state dict and hyperparameters of a CHGNet checkpoint (`checkpoint['model']['state_dict']` and
    /// `['model_args']`) as tensors and model-file metadata.
    public static func convert(checkpoint bytes: [UInt8]) throws -> (tensors: SafeTensors.OrderedTensors, metadata: [String: String]) {
        let ck = try TorchCheckpoint(bytes: bytes)
        guard let model = ck.root["model"], let sd = model["state_dict"], let args = model["model_args"] else {
            throw TorchCheckpointError(message: "no model.state_dict / model.model_args: not a CHGNet checkpoint")
        }
        let tensors = try ck.stateDict(sd)
        guard case .dict(let entries) = args else { throw TorchCheckpointError(message: "model_args is not a dict") }
        var meta: [String: String] = ["relaxft_kind": "chgnet", "model_name": modelName,
                                      "reference": "B. Deng et al., Nat. Mach. Intell. 5, 1031 (2023)",
                                      "license": "Modified BSD (chgnet package, LICENSE in its wheel)"]
        for e in entries {
            guard let k = e.key.stringValue else { continue }
            meta[k] = metadataString(e.value)
        }
        // CHGNet.load() adds these two for 0.3.0: the conv output Linear layers have no bias (the state dict
        // agrees), and the version tag.
        if meta["mlp_out_bias"] == nil { meta["mlp_out_bias"] = "false" }
        if meta["version"] == nil { meta["version"] = "0.3.0" }
        for t in tensors where t.tensor.dtype != "float32" {
            throw TorchCheckpointError(message: "\(t.name): dtype \(t.tensor.dtype), CHGNet stores float32")
        }
        return (tensors.map { ($0.name, $0.tensor.tensor) }, meta)
    }

    /// JSON-like text of a hyperparameter: numbers, booleans as true/false, lists as [a, b].
    static func metadataString(_ v: PickleValue) -> String {
        switch v {
        case .none: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .int(let i): return "\(i)"
        case .float(let x): return "\(x)"
        case .string(let s): return s
        case .list(let a), .tuple(let a): return "[" + a.map(metadataString).joined(separator: ", ") + "]"
        default: return v.description
        }
    }
}
