import Foundation
import Tape

/// Benchmarks for scripts/bench: `relaxft-bench [workload…]` (all when none given).
@main
struct Bench {
    static func main() {
        BLAS.setThreads(1)
        if ProcessInfo.processInfo.environment["NO_MALLOPT"] == nil {
            Allocator.keepLargeBuffersInHeap()
        }
        let args = Array(CommandLine.arguments.dropFirst())
        if args.first == "bptt-one" { BPTTBench.one(Array(args.dropFirst())); return }
        if args.first == "memory-one" { MemoryBench.one(Array(args.dropFirst())); return }
        if args.first == "mpi-one" { MPIBench.one(Array(args.dropFirst())); return }
        if args.first == "mpi-epoch-one" { MPIEpochBench.one(); return }
        if args.first == "profile" { Profile.run(Array(args.dropFirst())); return }
        if args.first == "chgnet-bptt-one" { CHGNetBPTTBench.one(Array(args.dropFirst())); return }
        // Takes options and runs for many minutes (up to ~10 GB for PyTorch float64 at T = 30): never part of "all".
        if args.first == "chgnet-bptt" { CHGNetBPTTBench.run(Array(args.dropFirst())); return }
        let all: [(String, () -> Void)] = [("tape", TapeBench.run), ("neighbors", AtomsBench.neighbors), ("relax", RelaxBench.run), ("bptt", BPTTBench.run),
                                           ("chgnet", CHGNetBench.run), ("sevennet", SevenNetBench.run), ("neural", NeuralBench.run),
                                           ("memory", MemoryBench.run), ("mpi", { MPIBench.run(); MPIEpochBench.run() }),
                                           ("mpi-epoch", MPIEpochBench.run), ("precision", PrecisionBench.run)]
        let chosen = args.isEmpty ? all.map(\.0) : args
        for name in chosen {
            guard let w = all.first(where: { $0.0 == name }) else {
                FileHandle.standardError.write("unknown workload \(name); known: \(all.map(\.0).joined(separator: ", ")), chgnet-bptt\n".data(using: .utf8)!)
                exit(2)
            }
            w.1()
        }
    }
}
