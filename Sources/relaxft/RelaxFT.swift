import Foundation
import FineTune
import Potentials
import Tape

let relaxftVersion = "0.1.0-dev"

/// A subcommand: its spec and what it runs. `run` returns the exit code.
struct Command: Sendable {
    let spec: CommandSpec
    let run: @Sendable (ParsedArguments) throws -> Int32
}

let commands: [Command] = [relaxCommand, finetuneCommand, evaluateCommand, reportCommand, convertCommand, pretrainCommand, infoCommand, modelsCommand, mdCommand, stableCommand, demoCommand]

let topLevelHelp = """
    usage: relaxft <command> [options]

    Differentiable structural relaxation: relax structures with classical or learned potentials, and fine-tune
    potentials on relaxed structures by backpropagation through the relaxation.

    commands:
    \(commands.map { "  \($0.spec.name.padding(toLength: 12, withPad: " ", startingAt: 0)) \($0.spec.summary)" }.joined(separator: "\n"))

    Run 'relaxft <command> --help' for a command's options. 'relaxft --version' prints the version.
    """

@main
struct RelaxFT {
    static func main() {
        BLAS.setThreads(ProcessInfo.processInfo.environment["OPENBLAS_NUM_THREADS"].flatMap(Int.init) ?? 1)
        Allocator.keepLargeBuffersInHeap()
        ModelStore.bundledDirectories = bundledModelDirectories()
        let args = Array(CommandLine.arguments.dropFirst())
        guard let first = args.first, first != "--help", first != "-h", first != "help" else {
            print(topLevelHelp)
            exit(args.isEmpty ? 2 : 0)
        }
        if first == "--version" || first == "version" {
            print("relaxft \(relaxftVersion)")
            exit(0)
        }
        if first == "mpi-selftest" { runMPISelfTest(Array(args.dropFirst())) }   // hidden: tests the MPI layer
        guard let cmd = commands.first(where: { $0.spec.name == first }) else {
            printError("relaxft: unknown command '\(first)' (see 'relaxft --help')")
            exit(2)
        }
        refuseMultiTaskLaunch(of: first)
        if dataParallelCommands.contains(first) { runDataParallel(cmd, Array(args.dropFirst())) }
        do {
            guard let parsed = try ArgumentParser.parse(Array(args.dropFirst()), cmd.spec) else { exit(0) }
            exit(try cmd.run(parsed))
        } catch let e as UsageError {
            printError(e.description)
            exit(2)
        } catch let e as TrainingStopped {
            printError("relaxft \(first): \(e)")
            exit(1)
        } catch {
            printError("relaxft \(first): \(userMessage(error))")
            exit(2)
        }
    }
}
