import Foundation
import Potentials
import Tape

let infoCommand = Command(
    spec: CommandSpec(
        name: "info", summary: "print a model file's architecture, parameter count, elements, cutoff and provenance",
        usage: "MODEL [--json] [--quiet]",
        options: [
            Vocabulary.json.detail("the metadata as one object"),
            Vocabulary.quiet.detail("kind, parameters, elements and cutoff only"),
        ],
        details: "MODEL is a model file or a model name (relaxft models list)."),
    run: runInfo)

func runInfo(_ args: ParsedArguments) throws -> Int32 {
    guard args.positionals.count == 1 else { throw UsageError(command: "info", message: "expected one model file, got \(args.positionals.count) arguments") }
    let path = try resolveModelPath(args.positionals[0], command: "info")
    let (model, meta) = try ModelFile.load(path)
    let (tensors, _) = try SafeTensors.read(path)
    if args.has("json") {
        var obj: [String: Any] = ["model": path, "kind": model.kind, "parameters": model.parameterCount, "tensors": tensors.count, "cutoff": model.cutoff, "metadata": meta]
        if let ref = model.parameters["atomic_energies"] { obj["reference_energies"] = ref.array }
        let data = try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys, .prettyPrinted])
        print(String(decoding: data, as: UTF8.self))
        return 0
    }
    print("model:       \(path)")
    print("kind:        \(model.kind)")
    print("parameters:  \(model.parameterCount) in \(tensors.count) tensors")
    print(String(format: "cutoff:      %.4g Å", model.cutoff))
    if let e = meta["elements"] { print("elements:    \(e)") }
    if args.has("quiet") { return 0 }
    let architectureKeys = ["features", "layers", "heads", "degrees", "radial_basis", "radial_basis_size", "cutoff_function", "energy_scale"]
    let arch = architectureKeys.compactMap { k in meta[k].map { "\(k)=\($0)" } }
    if !arch.isEmpty { print("architecture: \(arch.joined(separator: ", "))") }
    if let ref = model.parameters["atomic_energies"] { print("reference energies (eV): \(ref.array.map { String(format: "%.6f", $0) }.joined(separator: ", "))") }
    let shown = Set(architectureKeys + ["elements", "relaxft_kind", "cutoff", "lineage"])
    let rest = meta.keys.filter { !shown.contains($0) }.sorted()
    let training = rest.filter { $0.hasPrefix("training_") || $0.hasPrefix("test_") }
    let other = rest.filter { !training.contains($0) }
    if !other.isEmpty {
        print("settings:")
        for k in other { print("  \(k): \(meta[k]!)") }
    }
    if !training.isEmpty {
        print("provenance:")
        for k in training { print("  \(k): \(meta[k]!)") }
    }
    // Records of the models this one was trained from (ModelFile.derivedMetadata).
    if let text = meta["lineage"], let data = text.data(using: .utf8),
       let stages = try? JSONDecoder().decode([[String: String]].self, from: data), !stages.isEmpty {
        print("trained from (earlier stages, oldest first):")
        for (i, stage) in stages.enumerated() {
            print("  stage \(i + 1):")
            for k in stage.keys.sorted() { print("    \(k): \(stage[k]!)") }
        }
    }
    return 0
}
