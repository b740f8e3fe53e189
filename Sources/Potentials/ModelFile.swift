import Atoms
import Foundation
import Tape

public struct PotentialSpecError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// Model files: a potential's parameters as safetensors, with its kind (`relaxft_kind`) and hyperparameters
/// in `__metadata__`, so that the file alone rebuilds the potential.
public enum ModelFile {
    public typealias Loader = @Sendable (OrderedDictionary<Tensor>, [String: String]) throws -> any Potential

    /// Constructors by kind. Each potential kind registers here.
    static let loaders: [String: Loader] = [
        "lj": { p, m in
            let rc = m["rc"].flatMap(Double.init), ro = m["ro"].flatMap(Double.init)
            // Shapes are checked by checkParameters after loading; here only a default rc needs sigma.
            let sigma = p["sigma"]?.array.first ?? 1
            var lj = LennardJones(sigma: sigma, epsilon: 1, rc: rc, ro: ro, smooth: m["smooth"] == "true")
            lj.parameters = p
            return lj
        },
        "sw": { p, m in
            func hyper(_ k: String, _ d: Double) -> Double { m[k].flatMap(Double.init) ?? d }
            var sw = StillingerWeber(a: hyper("a", 1.8), p: hyper("p", 4), q: hyper("q", 0),
                                     cosTheta0: hyper("cos_theta0", -1.0 / 3.0), cosEpsilon: hyper("cos_epsilon", 0))
            // A model file names every parameter: a missing one is an error, not silently the 1985 value.
            if let missing = sw.parameters.keys.first(where: { p[$0] == nil }) {
                throw PotentialSpecError(message: "sw: parameter \(missing) is missing")
            }
            for (k, v) in p { sw.parameters[k] = v }
            return sw
        },
        "chgnet": { p, m in try CHGNet(parameters: p, metadata: m) },
        "sevennet": { p, m in try SevenNet(parameters: p, metadata: m) },
        "so3krates": { p, m in try SO3krates.load(p, m) },
        "schnet": { p, m in try SchNet.load(p, m) },
    ]

    public static var knownKinds: [String] { loaders.keys.sorted() }

    /// Saves a potential with its metadata plus `extraMetadata`. `derived`: the potential was loaded from a model
    /// file and trained further, so the loaded file's training records describe its parent (see `derivedMetadata`).
    public static func save(_ potential: any Potential, to path: String, extraMetadata: [String: String] = [:],
                            derived: Bool = false) throws {
        var meta = derived ? derivedMetadata(parent: potential.metadata, stage: [:]) : potential.metadata
        meta["relaxft_kind"] = potential.kind
        for (k, v) in extraMetadata { meta[k] = v }
        try SafeTensors.write(potential.parameters.map { ($0.key, $0.value) }, metadata: meta, to: path)
    }

    /// A path or command-line argument as recorded in metadata: relative to the working directory when it lies below
    /// it (where a checkout lives is machine-specific and would leak into committed model files).
    public static func recordedArgument(_ arg: String) -> String {
        let cwd = FileManager.default.currentDirectoryPath
        guard cwd.count > 1 else { return arg }
        let prefix = cwd.hasSuffix("/") ? cwd : cwd + "/"
        if arg.hasPrefix(prefix) { return String(arg.dropFirst(prefix.count)) }
        if let eq = arg.firstIndex(of: "="), arg.hasPrefix("-"), arg[arg.index(after: eq)...].hasPrefix(prefix) {
            return String(arg[...eq]) + String(arg[arg.index(after: eq)...].dropFirst(prefix.count))
        }
        return arg
    }

    /// Keys that record how a model was trained and what it scored (not what it is).
    public static func isTrainingRecord(_ key: String) -> Bool {
        key == "training" || key == "relaxation_protocol" || key.hasPrefix("training_") || key.hasPrefix("test_")
    }

    /// Metadata of a model trained from `parent`: architecture and settings are inherited, but the parent's training
    /// records would be read as this model's (its test scores, its epochs), so they move into `lineage`, a JSON
    /// array of the earlier stages' records, oldest first; `stage` (this training's records) is added.
    public static func derivedMetadata(parent: [String: String], stage: [String: String]) -> [String: String] {
        var meta = parent.filter { !isTrainingRecord($0.key) && $0.key != "lineage" }
        var lineage: [[String: String]] = []
        if let old = parent["lineage"], let data = old.data(using: .utf8),
           let decoded = try? JSONDecoder().decode([[String: String]].self, from: data) {
            lineage = decoded
        }
        let records = parent.filter { isTrainingRecord($0.key) }
        if !records.isEmpty { lineage.append(records) }
        if !lineage.isEmpty {
            let enc = JSONEncoder()
            enc.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            meta["lineage"] = String(data: try! enc.encode(lineage), encoding: .utf8)!
        }
        for (k, v) in stage { meta[k] = v }
        return meta
    }

    /// A loader's potential with its parameters checked (`checkParameters`); errors name `path`.
    static func make(_ loader: Loader, _ params: OrderedDictionary<Tensor>, _ meta: [String: String], path: String) throws -> any Potential {
        do {
            let potential = try loader(params, meta)
            try potential.checkParameters()
            return potential
        } catch let e as PotentialSpecError {
            throw PotentialSpecError(message: "\(path): \(e.message)")
        }
    }

    /// Loads a model file (or a difference from a pulled model, see `ModelDelta`); the metadata is returned too
    /// (provenance, relaxer settings, …).
    public static func load(_ path: String) throws -> (potential: any Potential, metadata: [String: String]) {
        let (tensors, meta) = try SafeTensors.read(path)
        return try load(tensors: tensors, metadata: meta, path: path)
    }

    /// A model from a model file's tensors and metadata read elsewhere (e.g. received from another rank).
    public static func load(tensors: SafeTensors.OrderedTensors, metadata meta: [String: String], path: String) throws
        -> (potential: any Potential, metadata: [String: String]) {
        if meta["relaxft_kind"] == ModelDelta.kind {
            var params = OrderedDictionary<Tensor>()
            for (name, t) in tensors { params[name] = t }
            return try ModelDelta.load(params, meta, path: path)
        }
        return (try potential(tensors: tensors, metadata: meta, path: path), meta)
    }

    static func potential(tensors: SafeTensors.OrderedTensors, metadata meta: [String: String], path: String) throws -> any Potential {
        guard let kind = meta["relaxft_kind"] else {
            throw PotentialSpecError(message: "\(path): not a relaxft model file (no relaxft_kind in __metadata__)")
        }
        var params = OrderedDictionary<Tensor>()
        for (name, t) in tensors { params[name] = t }
        guard let loader = loaders[kind] else {
            throw PotentialSpecError(message: "\(path): unknown model kind '\(kind)' (known: \(knownKinds.joined(separator: ", ")))")
        }
        return try make(loader, params, meta, path: path)
    }
}

/// Potential specifications as accepted by the CLI: `lj`, `sw`, `sw:sigma=2.116,lambda=18.9`,
/// `lj:sigma=2.0951,epsilon=1,rc=3.2,ro=2.8,smooth=true`, a model file path (`*.safetensors`), or the name of a
/// model in the local store (`chgnet-0.3.0` → `$RELAXFT_HOME/models/chgnet-0.3.0.safetensors`).
public enum PotentialSpec {
    public static func parse(_ spec: String) throws -> any Potential {
        let p = try parseUnchecked(spec)
        try p.checkParameters()
        return PotentialFaults.wrap(p)
    }

    static func parseUnchecked(_ spec: String) throws -> any Potential {
        guard !spec.trimmingCharacters(in: .whitespaces).isEmpty else {
            throw PotentialSpecError(message: "empty potential specification (use lj, sw, a model name such as chgnet-0.3.0, or a .safetensors model file)")
        }
        if spec.hasSuffix(".safetensors") || spec.contains("/") {
            guard FileManager.default.fileExists(atPath: spec) else { throw PotentialSpecError(message: "model file '\(spec)' not found") }
            return try ModelFile.load(spec).potential
        }
        if ModelStore.isModelName(spec) {
            guard let path = ModelStore.locate(spec) else {
                let hint = ModelStore.source(spec) != nil
                    ? "run 'relaxft models pull \(spec)' first"
                    : "relaxft models list shows the models at hand; models that can be pulled: \(ModelStore.pullable.map(\.name).joined(separator: ", "))"
                throw PotentialSpecError(message: "model '\(spec)' is not in \(ModelStore.searchPath.joined(separator: ", ")); \(hint)")
            }
            return try ModelFile.load(path).potential
        }
        let parts = spec.split(separator: ":", maxSplits: 1).map(String.init)
        var overrides: [(String, String)] = []
        if parts.count == 2 {
            for item in parts[1].split(separator: ",") {
                let kv = item.split(separator: "=", maxSplits: 1).map { String($0).trimmingCharacters(in: .whitespaces) }
                guard kv.count == 2, !kv[0].isEmpty else { throw PotentialSpecError(message: "'\(item)' in '\(spec)' is not name=value") }
                overrides.append((kv[0], kv[1]))
            }
        }
        func number(_ k: String, _ v: String) throws -> Double {
            guard let x = Double(v), x.isFinite else { throw PotentialSpecError(message: "\(parts[0]): value of \(k) must be a number, got '\(v)'") }
            return x
        }
        switch parts[0] {
        case "sw":
            var sw = StillingerWeber()
            let hyper = ["a", "p", "q", "cos_theta0", "cos_epsilon"]
            for (k, v) in overrides {
                let key = k == "lam" ? "lambda" : k
                let x = try number(k, v)
                if sw.parameters[key] != nil { sw.parameters[key] = Tensor(scalar: x); continue }
                switch key {
                case "a": sw.a = x
                case "p": sw.p = x
                case "q": sw.q = x
                case "cos_theta0": sw.cosTheta0 = x
                case "cos_epsilon": sw.cosEpsilon = x
                default: throw PotentialSpecError(message: "sw has no parameter '\(k)' (parameters: \((sw.parameters.keys + hyper).joined(separator: ", ")))")
                }
            }
            return sw
        case "lj":
            var vals: [String: Double] = [:]
            var smooth = false
            for (k, v) in overrides {
                if k == "smooth" {
                    guard let b = ["true": true, "false": false, "1": true, "0": false][v.lowercased()] else {
                        throw PotentialSpecError(message: "lj: smooth must be true or false, got '\(v)'")
                    }
                    smooth = b
                    continue
                }
                guard ["sigma", "epsilon", "rc", "ro"].contains(k) else {
                    throw PotentialSpecError(message: "lj has no parameter '\(k)' (parameters: sigma, epsilon, rc, ro, smooth)")
                }
                vals[k] = try number(k, v)
            }
            return LennardJones(sigma: vals["sigma"] ?? 1, epsilon: vals["epsilon"] ?? 1, rc: vals["rc"], ro: vals["ro"], smooth: smooth)
        default:
            throw PotentialSpecError(message: "unknown potential '\(parts[0])' (use lj, sw, a model name such as chgnet-0.3.0, or a .safetensors model file)")
        }
    }
}
