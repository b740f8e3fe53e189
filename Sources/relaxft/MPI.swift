import Cluster
import FineTune
import Foundation

/// Commands that run as the ranks of an MPI job; the others refuse to start as several tasks, since every task
/// would do the whole job and write the same files.
let dataParallelCommands: Set<String> = ["mpi-selftest", "finetune", "pretrain", "evaluate"]

/// The communicator of this process (joined in `runDataParallel`; a single rank for other commands).
func world() -> any Communicator { Cluster.current ?? LocalCommunicator() }

/// Runs a data-parallel command: the options are checked first (a usage error ends every task alike, printed by
/// the launcher's rank 0 only), then the process joins the job's MPI world, and every way out goes through
/// `Cluster.exit`: on an error the failing rank's message is printed and the whole job ends (no rank waits for a
/// rank that is gone).
func runDataParallel(_ cmd: Command, _ args: [String]) -> Never {
    let launchRank = (try? LaunchEnvironment.detect())?.launchRank ?? 0
    let parsed: ParsedArguments
    do {
        guard let p = try ArgumentParser.parse(args, cmd.spec) else { exit(0) }
        parsed = p
    } catch {
        if launchRank == 0 { printError(error is UsageError ? "\(error)" : "relaxft \(cmd.spec.name): \(userMessage(error))") }
        exit(2)
    }
    do { _ = try Cluster.world() } catch {
        if launchRank == 0 { printError("relaxft \(cmd.spec.name): \(error)") }
        exit(2)
    }
    let code: Int32
    // The same exit codes and messages as a single process (see RelaxFT.main), control characters escaped.
    func message(_ s: String) -> String { s.escapingControlCharacters(keepNewlines: true) }
    do { code = try cmd.run(parsed) } catch let e as UsageError {
        Cluster.exit(2, message: message(e.description))
    } catch let e as TrainingStopped {
        Cluster.exit(1, message: message("relaxft \(cmd.spec.name): \(e)"))
    } catch {
        Cluster.exit(2, message: message("relaxft \(cmd.spec.name): \(userMessage(error))"))
    }
    Cluster.exit(code)
}

/// Exits with code 2 (the message from the launcher's rank 0 only) when `command` was started as several tasks
/// of mpirun/srun but runs in one process.
func refuseMultiTaskLaunch(of command: String) {
    let env: LaunchEnvironment
    do { env = try LaunchEnvironment.detect() } catch {
        printError("relaxft \(command): \(error)")
        exit(2)
    }
    guard env.mode != .off, env.isMultiTaskLaunch, !dataParallelCommands.contains(command) else { return }
    if (env.launchRank ?? 0) == 0 {
        let tasks = env.tasks.map { "\($0) tasks" } ?? "several tasks"
        printError("relaxft \(command): started as \(tasks) by \(env.launcher!) (\(env.detail!)), but \(command) runs in one process: "
                   + "start it without mpirun/srun, or with one task (RELAXFT_MPI=off lets every task run on its own)")
    }
    exit(2)
}

/// `relaxft mpi-selftest [--fail-rank R [--fail-how message|exit|crash]]`: a hidden command that exercises the
/// communicator of the job it runs in (one process, or `mpirun -n N relaxft mpi-selftest`). Every rank checks
/// the collectives against what one process computes; rank 0 prints one JSON line. `ordered_hash` digests the
/// bits of the ordered sums, so runs with different rank counts can be compared. With --fail-rank, that rank
/// fails while the others wait in a collective: the job must end (not hang) with the rank's message.
func runMPISelfTest(_ args: [String]) -> Never {
    var failRank: Int?, failHow = "message"
    var i = 0
    while i < args.count {
        switch args[i] {
        case "--fail-rank" where i + 1 < args.count: failRank = Int(args[i + 1]); i += 2
        case "--fail-how" where i + 1 < args.count: failHow = args[i + 1]; i += 2
        default:
            printError("relaxft mpi-selftest: unknown argument '\(args[i])' (options: --fail-rank R, --fail-how message|exit|crash)")
            exit(2)
        }
    }
    let world: any Communicator
    do { world = try Cluster.world() } catch {
        printError("relaxft mpi-selftest: \(error)")
        exit(2)
    }
    var failures: [String] = []
    func expect(_ ok: Bool, _ what: @autoclosure () -> String) { if !ok { failures.append(what()) } }
    let (rank, size) = (world.rank, world.size)

    if let r = failRank {
        world.barrier()
        if rank == r {
            usleep(200_000)
            switch failHow {
            case "exit": exit(3)                                   // an exit path that skips Cluster.exit
            case "crash": fatalError("relaxft mpi-selftest: rank \(r) crashes on purpose")
            default: Cluster.exit(2, message: "relaxft mpi-selftest: rank \(r) fails on purpose")
            }
        }
        var x = [Double](repeating: 0, count: 4)
        x.withUnsafeMutableBufferPointer { world.broadcast($0, root: r) }   // waits for the failed rank
        Cluster.exit(0)
    }

    // Items whose sum depends on the order of the additions: signs and exponents spread over 2^±30.
    let length = 10_007
    func item(_ k: Int) -> [Double] {
        var s = UInt64(k) &* 0x9E37_79B9_7F4A_7C15 &+ 12345
        return (0..<length).map { _ in
            s = s &* 6364136223846793005 &+ 1442695040888963407
            let mantissa = Double(s >> 11) / Double(1 << 53)
            let exponent = Double(Int((s >> 3) % 61) - 30)
            return (s & 1 == 0 ? 1 : -1) * mantissa * pow(2, exponent)
        }
    }
    var digest: UInt64 = 0xcbf2_9ce4_8422_2325
    var unorderedEqual = true, unorderedDeviation = 0.0
    for n in [0, 1, 2, 3, 5, 7] {
        let all = (0..<n).map(item)
        var expected = [Double](repeating: 0, count: length)
        for x in all { for j in 0..<length { expected[j] = expected[j] + x[j] } }
        let mine = Array(all[world.shard(of: n)])
        for segment in [nil, 1 << 16, 1000, 7] as [Int?] {
            let s = world.orderedSum(mine, count: n, length: length, segment: segment)
            expect(s.map(\.bitPattern) == expected.map(\.bitPattern), "orderedSum n=\(n) segment=\(segment.map(String.init) ?? "default") differs from the sequential sum")
        }
        let g = world.orderedSumByGather(mine, count: n, length: length)
        expect(g.map(\.bitPattern) == expected.map(\.bitPattern), "orderedSumByGather n=\(n) differs from the sequential sum")
        let u = world.unorderedSum(mine, length: length)
        for j in 0..<length {
            if u[j].bitPattern != expected[j].bitPattern { unorderedEqual = false }
            if expected[j] != 0 { unorderedDeviation = max(unorderedDeviation, abs(u[j] - expected[j]) / abs(expected[j])) }
        }
        for v in expected { digest = (digest ^ v.bitPattern) &* 0x100_0000_01b3 }
        let values = world.allgatherConcatenated(world.shard(of: n).map(Double.init))
        expect(values == (0..<n).map(Double.init), "allgatherConcatenated n=\(n): \(values)")
    }

    // Broadcast from the last rank, bytes of a rank-dependent length, maxima.
    var v = (0..<9).map { Double($0 * (rank + 1)) }
    v.withUnsafeMutableBufferPointer { world.broadcast($0, root: size - 1) }
    expect(v == (0..<9).map { Double($0 * size) }, "broadcast from rank \(size - 1): \(v)")
    var bytes = [UInt8](repeating: UInt8(rank), count: rank == size / 2 ? 5 : 1)
    world.broadcastBytes(&bytes, root: size / 2)
    expect(bytes == [UInt8](repeating: UInt8(size / 2), count: 5), "broadcastBytes from rank \(size / 2): \(bytes)")
    var m = [Double(rank), -Double(rank)]
    m.withUnsafeMutableBufferPointer { world.allreduceMax($0) }
    expect(m == [Double(size - 1), 0], "allreduceMax: \(m)")

    // Results gathered in input order keep every bit.
    struct Result: Codable, Equatable { var index: Int; var name: String; var value: Double; var optional: Double? }
    let special: [Double] = [0.1 + 0.2, -0.0, .infinity, -.infinity, .leastNonzeroMagnitude, .greatestFiniteMagnitude, 1.0.nextUp]
    let results = (0..<11).map { Result(index: $0, name: "s\($0)", value: special[$0 % special.count], optional: $0 % 3 == 0 ? nil : Double($0) / 3) }
    do {
        let gathered = try world.gatherInOrder(Array(results[world.shard(of: results.count)]))
        expect(gathered.map(\.index) == results.map(\.index) && zip(gathered, results).allSatisfy {
            $0.name == $1.name && $0.value.bitPattern == $1.value.bitPattern && $0.optional?.bitPattern == $1.optional?.bitPattern
        }, "gatherInOrder lost order or bits")
        let b = try world.broadcast(results, root: size - 1)
        expect(b == results, "broadcast of Codable values")
    } catch {
        failures.append("gatherInOrder: \(error)")
    }

    // Every rank's failures, so one rank's problem is not hidden by rank 0's success.
    let allFailures = (try? world.gatherInOrder([failures])) ?? [failures]
    // /proc files report size 0: read to the end rather than by size.
    let maps = FileHandle(forReadingAtPath: "/proc/self/maps").map { String(decoding: $0.readDataToEndOfFile(), as: UTF8.self) } ?? ""
    if rank == 0 {
        let list = allFailures.enumerated().flatMap { r, f in f.map { "rank \(r): \($0)" } }
        let quoted = list.map { "\"" + $0.replacingOccurrences(of: "\"", with: "'") + "\"" }.joined(separator: ", ")
        print("{\"size\": \(size), \"backend\": \"\(world.backend)\", \"ok\": \(list.isEmpty), \"failures\": [\(quoted)], "
              + "\"ordered_hash\": \"\(String(digest, radix: 16))\", \"unordered_equal\": \(unorderedEqual), "
              + "\"unordered_max_rel_dev\": \(unorderedDeviation), \"libmpi_loaded\": \(maps.contains("libmpi.so"))}")
    }
    Cluster.exit(allFailures.allSatisfy(\.isEmpty) ? 0 : 1)
}
