import Cluster
import Foundation
import Potentials

/// `scripts/bench mpi`: the cost of summing gradients across ranks. For each gradient size (CHGNet 0.3.0 and the
/// committed SO3krates and SchNet models) and 1, 2 and 3 ranks (`mpirun --oversubscribe`; 3 ranks on a 2-core
/// machine share cores, so that row is an upper bound), one "step" sums 4 per-example gradients per rank:
/// - fold: the additions alone, no communication (what one process does anyway);
/// - ordered: `orderedSum`, the pipelined chain (bit-identical to one process), with its default segment
///   (`pipelineSegment`) and fixed ones (BENCH_MPI_SEGMENTS);
/// - gather: `orderedSumByGather` (every rank receives every item, then folds; also bit-identical);
/// - allreduce: local fold, then MPI_Allreduce (bits depend on the rank count).
/// Times are the slowest rank's, per step; the machine is shared, so the minimum is the steadier figure.
enum MPIBench {
    static let itemsPerRank = 4

    static func sizes() -> [(String, Int)] {
        func count(_ spec: String) -> Int? { (try? PotentialSpec.parse(spec)).map { $0.parameters.reduce(0) { $0 + $1.value.count } } }
        let root = repoRoot()
        // CHGNet's weights are pulled at run time; its count is fixed (relaxft info chgnet-0.3.0).
        return [("CHGNet 0.3.0", count("chgnet-0.3.0") ?? 412_525),
                ("SO3krates (Fixtures)", count(root + "/Fixtures/models/si-so3krates-pretrained.safetensors") ?? 109_838),
                ("SchNet (Fixtures)", count(root + "/Fixtures/models/si-schnet-pretrained.safetensors") ?? 58_242)]
    }

    static func mpirun() -> String? {
        let env = ProcessInfo.processInfo.environment
        if let p = env["MPIRUN"] { return p }
        let dirs = (env["PATH"] ?? "").split(separator: ":").map(String.init) + ["/usr/bin"]
        return dirs.map { $0 + "/mpirun" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    static func loadAverage() -> String {
        (FileHandle(forReadingAtPath: "/proc/loadavg").map { String(decoding: $0.readDataToEndOfFile(), as: UTF8.self) } ?? "?")
            .split(separator: " ").prefix(3).joined(separator: " ")
    }

    static func run() {
        guard let mpirun = mpirun() else {
            print("mpi: mpirun not found; install Open MPI (apt-get install openmpi-bin libopenmpi-dev) to run this benchmark")
            return
        }
        let sizes = sizes()
        print("== gradient reduction across ranks: \(itemsPerRank) per-example gradients per rank per step; slowest rank's time per step (median / min) ==")
        print("load average before: \(loadAverage())   (\(ProcessInfo.processInfo.activeProcessorCount) cores, shared)")
        print(pad("model", 22) + pad("params", 9) + pad("MB/step", 9) + pad("ranks", 6) + pad("method", 21) + pad("wall median", 13) + pad("wall min", 11)
              + pad("CPU/rank", 10) + "bits = 1 process")
        for ranks in [1, 2, 3] {
            let args = ["--oversubscribe", "-n", "\(ranks)", "-x", "RELAXFT_MPI", CommandLine.arguments[0], "mpi-one"] + sizes.map { "\($0.1)" }
            guard let (status, output) = launch(mpirun, args, environment: ["RELAXFT_MPI": "on"]) else { return }
            guard status == 0 else { print("mpi: mpirun -n \(ranks) failed with status \(status)"); continue }
            for line in output.split(separator: "\n") {
                guard let o = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                      let n = o["params"] as? Int, let name = sizes.first(where: { $0.1 == n })?.0 else { continue }
                print(pad(name, 22) + pad("\(n)", 9) + pad(String(format: "%.2f", Double(n * 8) / 1e6), 9) + pad("\(ranks)", 6)
                      + pad(o["method"] as! String, 21) + pad(fmtTime(o["median"] as! Double), 13) + pad(fmtTime(o["min"] as! Double), 11)
                      + pad(fmtTime(o["cpu"] as! Double), 10) + ((o["identical"] as? Bool).map { $0 ? "yes" : "no" } ?? "–"))
            }
        }
        print("load average after: \(loadAverage())")
    }

    /// Runs `executable args` (Open MPI allowed to run as root, `environment` added); its status and standard
    /// output, nil (with a message) when it cannot start.
    static func launch(_ executable: String, _ args: [String], environment: [String: String] = [:]) -> (status: Int32, output: String)? {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = args
        var env = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        env["OMPI_ALLOW_RUN_AS_ROOT"] = env["OMPI_ALLOW_RUN_AS_ROOT"] ?? "1"
        env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] ?? "1"
        p.environment = env
        let pipe = Pipe()
        p.standardOutput = pipe
        do { try p.run() } catch { print("mpi: cannot run \(executable): \(error)"); return nil }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// Fixed segment lengths compared with the default: BENCH_MPI_SEGMENTS (comma-separated values; `all` for one
    /// piece), else 8192, 65536 and one piece.
    static func segments(_ p: Int) -> [Int] {
        let spec = ProcessInfo.processInfo.environment["BENCH_MPI_SEGMENTS"] ?? "8192,65536,all"
        return spec.split(separator: ",").compactMap { $0 == "all" ? p : Int($0) }
    }

    /// One rank of `mpirun -n N relaxft-bench mpi-one P1 P2 …`: rank 0 prints one JSON line per size and method.
    static func one(_ args: [String]) {
        let world: any Communicator
        do { world = try Cluster.world() } catch { FileHandle.standardError.write(Data("mpi-one: \(error)\n".utf8)); exit(2) }
        let count = itemsPerRank * world.size
        let shard = world.shard(of: count)
        for p in args.compactMap(Int.init) {
            // Deterministic items; every rank builds all of them to check the result against one process's sum.
            var s: UInt64 = 17
            let items: [[Double]] = (0..<count).map { _ in
                (0..<p).map { _ in
                    s = s &* 6364136223846793005 &+ 1442695040888963407
                    return (Double(s >> 11) / Double(1 << 53) - 0.5) * pow(2, Double(Int((s >> 3) % 21) - 10))
                }
            }
            var reference = [Double](repeating: 0, count: p)
            for x in items { for j in 0..<p { reference[j] = reference[j] + x[j] } }
            let mine = Array(items[shard])
            var methods: [(String, () -> [Double]?)] = [
                ("fold (no comm.)", {
                    var acc = [Double](repeating: 0, count: p)
                    for x in mine { for j in 0..<p { acc[j] = acc[j] + x[j] } }
                    return nil
                }),
                ("ordered (default)", { world.orderedSum(mine, count: count, length: p) }),
            ]
            for seg in segments(p) {
                methods.append((seg == p ? "ordered, one piece" : "ordered, seg. \(seg)", { world.orderedSum(mine, count: count, length: p, segment: seg) }))
            }
            methods += [("gather + fold", { world.orderedSumByGather(mine, count: count, length: p) }),
                        ("allreduce", { world.unorderedSum(mine, length: p) })]
            for (name, body) in methods {
                var identical = true
                var times: [Double] = [], cpus: [Double] = []
                let start = now()
                // At least 12 steps and 1 s, at most 200 steps; the decision uses the slowest rank's clock, so that
                // every rank runs the same number of steps (each contains collectives).
                while true {
                    world.barrier()
                    let t0 = now(), c0 = cpuTime()
                    let r = body()
                    var t = [now() - t0, cpuTime() - c0]
                    t.withUnsafeMutableBufferPointer { world.allreduceMax($0) }
                    if let r { identical = identical && zip(r, reference).allSatisfy { $0.bitPattern == $1.bitPattern } }
                    var elapsed = [now() - start]
                    elapsed.withUnsafeMutableBufferPointer { world.allreduceMax($0) }
                    times.append(t[0])
                    cpus.append(t[1])
                    if times.count >= 12 && (elapsed[0] >= 1.0 || times.count >= 200) { break }
                }
                var ok = [identical ? 0.0 : 1.0]
                ok.withUnsafeMutableBufferPointer { world.allreduceMax($0) }
                let sorted = times.sorted(), cpuSorted = cpus.sorted()
                if world.rank == 0 {
                    var o: [String: Any] = ["params": p, "ranks": world.size, "method": name, "median": sorted[sorted.count / 2], "min": sorted[0],
                                            "cpu": cpuSorted[cpuSorted.count / 2], "runs": times.count]
                    if name != "fold (no comm.)" { o["identical"] = ok[0] == 0 }
                    print(String(decoding: try! JSONSerialization.data(withJSONObject: o, options: [.sortedKeys]), as: UTF8.self))
                }
            }
        }
        Cluster.exit(0)
    }
}
