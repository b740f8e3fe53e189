import Atoms
import Cluster
import FineTune
import Foundation
import Potentials
import Relax
import Tape

/// `scripts/bench mpi`, second part: one fine-tuning epoch (BPTT through FIRE relaxations, the committed SO3krates
/// model, 64-site Si defect cells) on 1 rank (a plain process) and on 2 ranks (`mpirun -n 2`), each rank taking
/// its share of every mini-batch (`batchGradient` with the communicator, as `relaxft finetune` does). Printed per
/// rank count: epoch wall time (median and best of the repeats), CPU seconds per rank, time in the cross-rank sum
/// per step, gradient bytes per step; then the parallel efficiency T₁/(R·T_R) from wall times and the work
/// inflation ΣCPU_R/CPU₁. Settings: BENCH_MPI_STRUCTURES (8), BENCH_MPI_BATCH (8), BENCH_MPI_STEPS (T, 30),
/// BENCH_MPI_EPOCHS (3 repeats), BENCH_MPI_MODEL (a model file; default the committed SO3krates).
enum MPIEpochBench {
    static func setting(_ name: String, _ fallback: Int) -> Int {
        ProcessInfo.processInfo.environment[name].flatMap(Int.init) ?? fallback
    }

    static func run() {
        guard let mpirun = MPIBench.mpirun() else {
            print("mpi epoch: mpirun not found; install Open MPI (apt-get install openmpi-bin libopenmpi-dev)")
            return
        }
        let structures = setting("BENCH_MPI_STRUCTURES", 8), batch = setting("BENCH_MPI_BATCH", 8), steps = setting("BENCH_MPI_STEPS", 30)
        print("")
        print("== fine-tuning epoch, 1 vs 2 ranks: \(structures) Si defect cells (64 sites), batch \(batch), BPTT through \(steps) FIRE steps, "
              + "SO3krates (Fixtures), 1 thread per rank ==")
        print("load average before: \(MPIBench.loadAverage())")
        print("(CPU/rank: median over \(setting("BENCH_MPI_EPOCHS", 3)) epochs; comm./step: the slowest rank's time in the ordered sum and the loss gather, waiting included)")
        var rows: [Int: [String: Any]] = [:]
        for ranks in [1, 2] {
            let args = (ranks == 1 ? [] : ["--oversubscribe", "-n", "\(ranks)", CommandLine.arguments[0]]) + ["mpi-epoch-one"]
            guard let (status, output) = MPIBench.launch(ranks == 1 ? CommandLine.arguments[0] : mpirun, args) else { return }
            guard status == 0, let o = output.split(separator: "\n").compactMap({ try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }).last
            else { print("mpi epoch: \(ranks) rank(s) failed with status \(status)"); continue }
            rows[ranks] = o
        }
        print(pad("ranks", 7) + pad("epoch wall median", 19) + pad("epoch wall best", 17) + pad("CPU/rank/epoch", 17) + pad("comm./step (median, best)", 27)
              + pad("gradient/step", 15) + "bits = 1 rank")
        for ranks in [1, 2] {
            guard let o = rows[ranks] else { continue }
            let walls = (o["wall"] as! [Double]).sorted(), cpus = o["cpu"] as! [Double], comm = (o["comm"] as! [Double]).sorted()
            let bytes = (o["values"] as! Int) * 8
            print(pad("\(ranks)", 7) + pad(fmtTime(walls[walls.count / 2]), 19) + pad(fmtTime(walls[0]), 17)
                  + pad(cpus.map { String(format: "%.2f s", $0) }.joined(separator: ", "), 17)
                  + pad(comm.isEmpty ? "–" : "\(fmtTime(comm[comm.count / 2])), \(fmtTime(comm[0]))", 27)
                  + pad(String(format: "%.2f MB", Double(bytes) / 1e6), 15)
                  + ((o["digest"] as? String) == (rows[1]?["digest"] as? String) ? "yes" : "NO"))
        }
        if let one = rows[1], let two = rows[2] {
            let w1 = (one["wall"] as! [Double]).sorted(), w2 = (two["wall"] as! [Double]).sorted()
            let c1 = (one["cpu"] as! [Double]).reduce(0, +), c2 = (two["cpu"] as! [Double]).reduce(0, +)
            let values = one["values"] as! Int
            print(String(format: "parallel efficiency T1/(2·T2): %.2f (medians), %.2f (best epochs); work inflation ΣCPU(2 ranks)/CPU(1 rank): %.3f",
                         w1[w1.count / 2] / (2 * w2[w2.count / 2]), w1[0] / (2 * w2[0]), c2 / c1))
            // On an idle node an epoch on R ranks takes the busiest rank's compute plus the transfers; the shared
            // machine's wall clock mostly measures the scheduler. A rank's CPU time includes part of its wait for the
            // others in the sum (Open MPI polls): CPU bounds its compute from above, CPU − time in the sum from below.
            // A step's transfer is the time in the sum of the rank that arrived last (the least over the ranks).
            let cpu2 = two["cpu"] as! [Double], busy = two["busy"] as! [Double], steps2 = Double(two["steps"] as! Int)
            let mins = (two["commMin"] as! [Double]).sorted(), transfer = mins.isEmpty ? 0 : mins[mins.count / 2]
            let (upper, lower) = (cpu2.max()! + steps2 * transfer, busy.max()! + steps2 * transfer)
            print(String(format: "from CPU time (idle-node estimate): T2 ≈ busiest rank's compute + steps × transfer (%.0f × %@, median); "
                         + "compute = CPU/rank %.2f s → efficiency CPU1/(2·T2) %.3f; compute = CPU − time in the sum (%@ s) → %.3f",
                         steps2, fmtTime(transfer), cpu2.max()!, c1 / (2 * upper), busy.map { String(format: "%.2f", $0) }.joined(separator: ", "), c1 / (2 * lower)))
            print(String(format: "per step: %d gradient values (%.2f MB); the ordered chain moves it once rank to rank and the total is broadcast: each rank sends and receives ≤ %.2f MB; compute per step %.2f s of CPU per rank (2 ranks)",
                         values, Double(values * 8) / 1e6, Double(2 * values * 8) / 1e6, c2 / 2 / Double((two["steps"] as! Int))))
        }
        print("load average after: \(MPIBench.loadAverage())")
    }

    /// One rank of the epoch benchmark; rank 0 prints one JSON line.
    static func one() {
        let world: any Communicator
        do { world = try Cluster.world() } catch { FileHandle.standardError.write(Data("mpi-epoch-one: \(error)\n".utf8)); exit(2) }
        let structures = setting("BENCH_MPI_STRUCTURES", 8), batch = setting("BENCH_MPI_BATCH", 8)
        let steps = setting("BENCH_MPI_STEPS", 30), repeats = setting("BENCH_MPI_EPOCHS", 3)
        let root = repoRoot()
        let modelPath = ProcessInfo.processInfo.environment["BENCH_MPI_MODEL"] ?? root + "/Fixtures/models/si-so3krates-pretrained.safetensors"
        let potential: any Potential
        let examples: [RelaxationExample]
        do {
            potential = try ModelFile.load(modelPath).potential
            let path = root + "/Fixtures/data/si-defects/train.extxyz"
            let frames = try StructureIO.read(path).filter { $0.numbers.allSatisfy { $0 == 14 } }
            examples = Array(try RelaxationDataset.examples(from: frames, source: path).prefix(structures))
        } catch { Cluster.exit(2, message: "mpi-epoch-one: \(error)") }
        let settings = BPTTSettings(relaxer: FIRE(), steps: steps)
        let trainable = Array(potential.parameters.keys)
        var walls: [Double] = [], cpus: [Double] = [], busy: [Double] = [], comms: [Double] = [], digest: UInt64 = 0xcbf2_9ce4_8422_2325, stepCount = 0
        for _ in 0..<repeats {
            world.barrier()
            let t0 = now(), c0 = cpuTime()
            var b = 0, inSum = 0.0
            stepCount = 0
            while b < examples.count {
                let g = batchGradient(Array(examples[b..<Swift.min(b + batch, examples.count)]), potential: potential, settings: settings,
                                      trainable: trainable, threads: 1, communicator: world)
                comms.append(g.communicationSeconds)
                inSum += g.communicationSeconds
                for k in g.gradients.keys.sorted() { g.gradients[k]!.withUnsafeBufferPointer { for x in $0 { digest = (digest ^ x.bitPattern) &* 0x100_0000_01b3 } } }
                b += batch
                stepCount += 1
            }
            var t = [now() - t0]
            t.withUnsafeMutableBufferPointer { world.allreduceMax($0) }
            walls.append(t[0])
            cpus.append(cpuTime() - c0)
            busy.append(Swift.max(0, cpus.last! - inSum))
        }
        // CPU seconds per rank (median over the repeats), in rank order.
        let myCPU = cpus.sorted()[cpus.count / 2]
        let allCPU = world.allgatherConcatenated([myCPU])
        let allBusy = world.allgatherConcatenated([busy.sorted()[busy.count / 2]])
        var commMax = comms, commMin = comms.map { -$0 }
        commMax.withUnsafeMutableBufferPointer { world.allreduceMax($0) }
        commMin.withUnsafeMutableBufferPointer { world.allreduceMax($0) }
        if world.rank == 0 {
            let o: [String: Any] = ["ranks": world.size, "wall": walls, "cpu": allCPU, "comm": world.size > 1 ? commMax : [Double](),
                                    "commMin": world.size > 1 ? commMin.map { -$0 } : [Double](), "busy": allBusy,
                                    "values": trainable.reduce(0) { $0 + potential.parameters[$1]!.count }, "steps": stepCount,
                                    "digest": String(digest, radix: 16)]
            print(String(decoding: try! JSONSerialization.data(withJSONObject: o, options: [.sortedKeys]), as: UTF8.self))
        }
        Cluster.exit(0)
    }
}
