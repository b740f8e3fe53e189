import Atoms
import Foundation
import Tape

/// The SevenNet-0 (11Jul2024) weights shipped in the `sevenn` wheel on PyPI (MIT licence, © 2024 Yutack Park,
/// MDIL-SNU), converted from the torch checkpoint to a relaxft model file.
public enum SevenNetWeights {
    public static let modelName = "sevennet-0"
    public static let checkpointEntry = "sevenn/pretrained_potentials/SevenNet_0__11Jul2024/checkpoint_sevennet_0.pth"
    public static let checkpointSHA256 = "7052cb42b7b3be42b40b97fa0d21077a48c54b5548948fc4dcf346629f813c36"
    /// Trainable parameters plus the per-species shift and scale (the five message denominators are hyperparameters).
    public static let parameterCount = 842_618

    static let source = ModelStore.Source(
        name: modelName, summary: "SevenNet-0 11Jul2024 (Park et al. 2024), MPtrj-pretrained, 842,618 parameters",
        requirement: "sevenn==0.13.0", wheelPrefix: "sevenn-0.13.0-", entry: checkpointEntry, sha256: checkpointSHA256,
        convert: { try convert(checkpoint: $0) })

    /// Settings of `checkpoint['config']` this port implements (as compact JSON); anything else is refused at
    /// conversion. (The "o" activations act on odd-parity scalars, which a model without parity does not have.)
    static let required: [(key: String, value: String)] = [
        ("_model_type", "\"E3_equivariant_model\""), ("interaction_type", "\"nequip\""), ("is_parity", "false"),
        ("self_connection_type", "\"linear\""), ("use_bias_in_linear", "false"), ("readout_as_fcn", "false"), ("_normalize_sph", "true"),
        ("act_radial", "\"silu\""), ("act_scalar", "{\"e\":\"silu\",\"o\":\"tanh\"}"), ("act_gate", "{\"e\":\"silu\",\"o\":\"tanh\"}"),
    ]

    /// State-dict entries that hold no model parameters: empty placeholders, e3nn output masks and the Wigner-3j
    /// buffers (recomputed in Double, and compared with these during conversion).
    static func isBuffer(_ name: String) -> Bool {
        name.hasSuffix(".bias") || name.hasSuffix(".output_mask") || name.hasSuffix("convolution.convolution.weight")
            || name.hasSuffix("gate.mul.weight") || name.contains("._w3j_") || name.hasSuffix("_convolution.denominator")
    }

    /// The state dict and config of a SevenNet checkpoint (`checkpoint['model_state_dict']`, `['config']`) as
    /// tensors and model-file metadata, with the convolution weights in the layout of sevenn ≥ 0.11 (see
    /// `legacyConvolutionColumns`).
    public static func convert(checkpoint bytes: [UInt8]) throws -> (tensors: SafeTensors.OrderedTensors, metadata: [String: String]) {
        let ck = try TorchCheckpoint(bytes: bytes)
        guard let sd = ck.root["model_state_dict"], let cfg = ck.root["config"] else {
            throw TorchCheckpointError(message: "no model_state_dict / config: not a SevenNet checkpoint")
        }
        func text(_ k: String) throws -> String {
            guard let v = cfg[k] else { throw TorchCheckpointError(message: "config has no '\(k)'") }
            return json(v)
        }
        for (k, v) in required where try text(k) != v {
            throw TorchCheckpointError(message: "config \(k) = \(try text(k)); this port implements \(k) = \(v) (as in SevenNet-0)")
        }
        guard cfg["radial_basis"]?["radial_basis_name"] == .string("bessel"), case .int(let basisCount)? = cfg["radial_basis"]?["bessel_basis_num"] else {
            throw TorchCheckpointError(message: "config radial_basis = \(try text("radial_basis")); only the Bessel basis is implemented")
        }
        guard cfg["cutoff_function"]?["cutoff_function_name"] == .string("XPLOR"), let on = cfg["cutoff_function"]?["cutoff_on"].flatMap(number) else {
            throw TorchCheckpointError(message: "config cutoff_function = \(try text("cutoff_function")); only XPLOR is implemented")
        }
        guard let irreps = cfg["irreps_manual"]?.items?.compactMap(\.stringValue), irreps.count == (cfg["num_convolution_layer"]?.intValue ?? -1) + 1 else {
            throw TorchCheckpointError(message: "config irreps_manual = \(try text("irreps_manual")): one irreps string per layer boundary is required")
        }
        guard let cutoff = cfg["cutoff"].flatMap(number), let lmax = cfg["lmax"]?.intValue, let channel = cfg["channel"]?.intValue,
              let hidden = cfg["weight_nn_hidden_neurons"]?.items?.compactMap(\.intValue), let version = cfg["version"]?.stringValue,
              case .dict(let typeMap)? = cfg["_type_map"] else {
            throw TorchCheckpointError(message: "config lacks cutoff, lmax, channel, weight_nn_hidden_neurons, version or _type_map")
        }
        // Species in one-hot order: the type map sends Z to its index.
        var elements = [Int](repeating: 0, count: typeMap.count)
        for e in typeMap {
            guard let z = e.key.intValue, let k = e.value.intValue, k >= 0, k < elements.count, z >= 1, z < Elements.symbols.count else {
                throw TorchCheckpointError(message: "config _type_map entry \(e.key): \(e.value) is not atomic number → index")
            }
            elements[k] = z
        }
        guard Set(elements).count == elements.count, !elements.contains(0) else { throw TorchCheckpointError(message: "config _type_map is not a bijection") }

        var byName: [String: Tensor] = [:], order: [String] = []
        for t in try ck.stateDict(sd) {
            guard t.tensor.dtype == "float32" else { throw TorchCheckpointError(message: "\(t.name): dtype \(t.tensor.dtype), SevenNet stores float32") }
            byName[t.name] = t.tensor.tensor
            order.append(t.name)
        }
        let layers = irreps.count - 1
        var denominators: [Double] = []
        for t in 0..<layers {
            guard let d = byName["\(t)_convolution.denominator"], d.count == 1 else { throw TorchCheckpointError(message: "no \(t)_convolution.denominator") }
            denominators.append(d[flat: 0])
        }
        let meta: [String: String] = [
            "relaxft_kind": "sevennet", "model_name": modelName,
            "reference": "Y. Park, J. Kim, S. Hwang, S. Han, J. Chem. Theory Comput. 20, 4857 (2024)",
            "license": "MIT (sevenn package, LICENSE in its wheel)",
            "cutoff": "\(cutoff)", "cutoff_on": "\(on)", "radial_basis": "bessel", "radial_basis_size": "\(basisCount)",
            "cutoff_function": "XPLOR", "lmax": "\(lmax)", "channel": "\(channel)", "readout_hidden": "\(channel / 2)",
            "irreps": json(.list(irreps.map { .string($0) })), "weight_nn_hidden": json(.list(hidden.map { .int($0) })),
            "conv_denominator": "[" + denominators.map { "\($0)" }.joined(separator: ", ") + "]",
            "elements": elements.map { Elements.symbols[$0] }.joined(separator: ","),
            "sevenn_version": version,
        ]

        // Parameters: everything but the buffers, in checkpoint order; convolution weights re-laid-out.
        let legacy = versionBefore(version, "0.11.0")
        let config = try SevenNet.Config(metadata: meta)
        var tensors: SafeTensors.OrderedTensors = []
        for name in order where !isBuffer(name) {
            var t = byName[name]!
            if let t0 = name.split(separator: "_").first.flatMap({ Int($0) }), name == "\(t0)_convolution.weight_nn.layer\(hidden.count).weight" {
                t = try legacyConvolutionColumns(t, block: t0, config: config, legacy: legacy, buffers: byName)
            }
            tensors.append((name, t))
        }
        for name in order where isBuffer(name) {
            guard byName[name]!.count == 0 || name.hasSuffix(".output_mask") || name.contains("._w3j_") || name.hasSuffix(".denominator") else {
                throw TorchCheckpointError(message: "\(name): a non-empty tensor this port does not use")
            }
        }
        var params = OrderedDictionary<Tensor>()
        for (n, t) in tensors { params[n] = t }
        _ = try SevenNet(parameters: params, metadata: meta)
        return (tensors, meta)
    }

    /// The last radial layer of block t in the column order sevenn ≥ 0.11 uses (paths sorted by output degree).
    /// Checkpoints of older versions (SevenNet-0 was written by 0.9.1) keep the columns in the order the paths
    /// are enumerated, and for some paths their stored Wigner-3j has the opposite sign to e3nn 0.6.0's, which
    /// sevenn's loader compensates by negating those columns (`sort_old_convolution` in
    /// `sevenn/scripts/backward_compatibility.py`). Here the sign is read off the checkpoint: every stored
    /// Wigner-3j must equal ± the Double one to float32 rounding, and the columns get that sign.
    static func legacyConvolutionColumns(_ w: Tensor, block t: Int, config: SevenNet.Config, legacy: Bool, buffers: [String: Tensor]) throws -> Tensor {
        let built = SevenNet.tensorProduct(input: config.irreps[t], filterDegree: config.filterDegree,
                                           outputDegree: config.irreps[t + 1].count - 1, scale: 1)
        let paths = built.product.paths
        guard w.rank == 2, w.shape[1] == built.product.weightCount else {
            throw TorchCheckpointError(message: "block \(t): radial output has \(w.shape) columns, the tensor product needs \(built.product.weightCount)")
        }
        // Column ranges in the checkpoint: in enumeration order when legacy, else as built.
        var checkpointColumns = built.weightColumns
        if legacy {
            var start = 0
            var byEnumeration = [Range<Int>](repeating: 0..<0, count: paths.count)
            for k in 0..<paths.count {
                let p = built.checkpointOrder.firstIndex(of: k)!
                byEnumeration[p] = start..<(start + paths[p].multiplicity)
                start += paths[p].multiplicity
            }
            checkpointColumns = byEnumeration
        }
        let rows = w.shape[0], cols = w.shape[1]
        var out = Tensor.zeros([rows, cols])
        for (p, path) in paths.enumerated() {
            var sign = 1.0
            if path.lIn > 0 && path.lFilter > 0 && path.lOut > 0,
               let stored = buffers["\(t)_convolution.convolution._compiled_main_left_right._w3j_\(path.lIn)_\(path.lFilter)_\(path.lOut)"] {
                let exact = Wigner3j.symbol(path.lIn, path.lFilter, path.lOut)!
                guard stored.count == exact.count else { throw TorchCheckpointError(message: "block \(t): Wigner-3j buffer of path \(p) has \(stored.count) values") }
                let plus = zip(stored.array, exact).map { abs($0 - $1) }.max()!, minus = zip(stored.array, exact).map { abs($0 + $1) }.max()!
                if plus <= 1e-7 { sign = 1 } else if minus <= 1e-7 { sign = -1 } else {
                    throw TorchCheckpointError(message: "block \(t): stored Wigner-3j (\(path.lIn), \(path.lFilter), \(path.lOut)) differs from e3nn's by \(min(plus, minus))")
                }
            }
            let from = checkpointColumns[p], to = built.weightColumns[p]
            for r in 0..<rows { for k in 0..<from.count { out[r, to.lowerBound + k] = sign * w[r, from.lowerBound + k] } }
        }
        return out
    }

    /// Whether version string a (e.g. "0.9.1", "0.11.0.dev0") is older than b; a ".devN" suffix counts as older.
    static func versionBefore(_ a: String, _ b: String) -> Bool {
        func parts(_ s: String) -> ([Int], Bool) {
            let items = s.split(separator: ".")
            let nums = items.prefix(3).compactMap { Int($0) }
            return (nums + [Int](repeating: 0, count: max(0, 3 - nums.count)), items.count > 3)
        }
        let (x, dev) = parts(a), (y, _) = parts(b)
        if x != y { return x.lexicographicallyPrecedes(y) }
        return dev
    }

    static func number(_ v: PickleValue) -> Double? {
        switch v {
        case .int(let i): return Double(i)
        case .float(let x): return x
        default: return nil
        }
    }

    /// Compact JSON of a pickled value (dict keys sorted); objects other than containers and scalars as strings.
    static func json(_ v: PickleValue) -> String {
        let data = try! JSONSerialization.data(withJSONObject: foundationObject(v), options: [.sortedKeys, .fragmentsAllowed, .withoutEscapingSlashes])
        return String(decoding: data, as: UTF8.self)
    }

    static func foundationObject(_ v: PickleValue) -> Any {
        switch v {
        case .none: return NSNull()
        case .bool(let b): return b
        case .int(let i): return i
        case .float(let x): return x
        case .string(let s): return s
        case .list(let a), .tuple(let a): return a.map(foundationObject)
        case .dict(let e):
            var d: [String: Any] = [:]
            for item in e { d[item.key.stringValue ?? item.key.description] = foundationObject(item.value) }
            return d
        default: return v.description
        }
    }
}
