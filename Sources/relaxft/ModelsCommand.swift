import Foundation
import Potentials

let modelsCommand = Command(
    spec: CommandSpec(
        name: "models", summary: "list local pretrained models, or pull one (chgnet-0.3.0, sevennet-0)",
        usage: "list | pull NAME",
        options: [],
        details: """
            Models live in $RELAXFT_HOME/models (default ~/.cache/relaxft/models) as safetensors files, usable as
            `--potential NAME`. `pull` downloads the package that ships the weights with pip (wheel cached in
            $RELAXFT_HOME/wheels; set RELAXFT_PIP to choose the pip command), verifies the checkpoint's sha256 and
            converts it without PyTorch. Pullable: \(ModelStore.pullable.map(\.name).joined(separator: ", ")).
            """),
    run: runModels)

func runModels(_ args: ParsedArguments) throws -> Int32 {
    guard let sub = args.positionals.first else { throw UsageError(command: "models", message: "expected 'list' or 'pull NAME'") }
    switch sub {
    case "list":
        guard args.positionals.count == 1 else { throw UsageError(command: "models", message: "'list' takes no arguments") }
        let local = ModelStore.local()
        print("local models in \(ModelStore.modelsDirectory):")
        if local.isEmpty { print("  (none)") }
        for m in local {
            print("  \(m.name.padding(toLength: 20, withPad: " ", startingAt: 0)) \(m.kind.padding(toLength: 8, withPad: " ", startingAt: 0)) \(m.parameterCount) parameters, \(m.bytes) bytes")
        }
        print("pullable (relaxft models pull NAME):")
        for s in ModelStore.pullable {
            let have = local.contains { $0.name == s.name } ? " [local]" : ""
            print("  \(s.name.padding(toLength: 20, withPad: " ", startingAt: 0)) \(s.summary)\(have)")
        }
        return 0
    case "pull":
        guard args.positionals.count == 2 else { throw UsageError(command: "models", message: "'pull' takes one model name") }
        let name = args.positionals[1]
        guard let source = ModelStore.source(name) else {
            throw UsageError(command: "models", message: "unknown model '\(name)' (pullable: \(ModelStore.pullable.map(\.name).joined(separator: ", ")))")
        }
        do {
            try ModelStore.pull(source) { print($0) }
        } catch {
            printError("relaxft models pull \(name): \(error)")
            return 1
        }
        return 0
    default:
        throw UsageError(command: "models", message: "unknown subcommand '\(sub)' (use list or pull)")
    }
}
