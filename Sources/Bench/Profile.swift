import Atoms
import CLinalg
import Foundation
import Potentials
import Relax
import Tape

/// Fixed-size workloads for instruction-count profiling (valgrind --tool=callgrind), where timing loops would
/// make the work depend on the machine's speed: `relaxft-bench profile chain|fire|bptt|so3krates|schnet|ef|chgnet-step|kernels`.
enum Profile {
    static func run(_ args: [String]) {
        switch args.first ?? "" {
        case "chain":
            for _ in 0..<20 {
                let tape = Tape()
                let leaf = tape.variable(Tensor([0.1, 0.2, 0.3]))
                var x = leaf
                for _ in 0..<1000 { x = x * 1.0001 + 0.001 }
                _ = tape.gradient(of: x.sum(), wrt: [leaf])
            }
        case "fire":
            var settings = RelaxationSettings()
            settings.fmax = 1e-12
            settings.maxSteps = 20
            _ = relax(vacancyFixture(repeats: 3), potential: StillingerWeber(), relaxer: FIRE(), settings: settings)
        case "bptt":
            BPTTBench.one(["2", "20", "checkpoint"])
        case "so3krates", "schnet":
            // Energy+forces of 64-atom Si, then one BPTT-style step (second derivatives), with the model
            // `relaxft-bench neural` times.
            let model = NeuralBench.models().first { $0.0.hasPrefix(args[0]) }!.1
            let s = NeuralBench.rattledDiamond(repeats: 2)
            let sys = AtomicSystem(s, cutoff: model.cutoff)
            _ = model.evaluate(sys, positions: s.positions, cells: s.cell.reshaped([1, 3, 3]))
            NeuralBench.bpttStep(model, sys, s)
        case "ef":
            // Energy+forces only, N calls on r×r×r diamond cells: `profile ef so3krates|schnet [r] [N]`.
            let name = args.count > 1 ? args[1] : "schnet"
            let model = NeuralBench.models().first { $0.0.hasPrefix(name) }!.1
            let s = NeuralBench.rattledDiamond(repeats: args.count > 2 ? Int(args[2])! : 3)
            let sys = AtomicSystem(s, cutoff: model.cutoff)
            for _ in 0..<(args.count > 3 ? Int(args[3])! : 20) {
                _ = model.evaluate(sys, positions: s.positions, cells: s.cell.reshaped([1, 3, 3]))
            }
        case "chgnet-step":
            // One BPTT step of CHGNet on the 63-atom vacancy cell of chgnet-bptt (E, F with createGraph, x + 0.01·F,
            // gradient of a scalar of it with respect to all parameters), N times; prints the tape by operation.
            chgnetStep(calls: args.count > 1 ? Int(args[1])! : 1)
        case "kernels":
            kernels()
        default:
            print("profile workloads: chain, fire, bptt, so3krates, schnet, ef MODEL [r] [N], chgnet-step [N], kernels")
        }
    }
}

extension Profile {
    static func chgnetStep(calls: Int) {
        guard let model = CHGNetBPTTBench.loadModel(), let ex = try? CHGNetBPTTBench.examples()[0] else { print("chgnet-step: no model"); return }
        let s = ex.initial
        let sys = AtomicSystem(s, cutoff: model.cutoff)
        for call in 0..<calls {
            let tape = Tape()
            let x = tape.variable(s.positions)
            let params = model.parameterLeaves(on: tape)
            let heap0 = Double(mallinfo2().uordblks)
            let (c0, t0) = (cpuTime(), now())
            let (_, f) = model.energyAndForces(sys, positions: x, cells: Variable(constant: s.cell.reshaped([1, 3, 3])), parameters: params)
            let xNew = x + f * 0.01
            let loss = (xNew * Tensor(shape: xNew.shape, repeating: 0.1)).sum()
            let (c1, t1) = (cpuTime(), now())
            let heap1 = Double(mallinfo2().uordblks)
            if call == calls - 1 {
                let prof = tape.memoryProfile()
                let total = prof.reduce(0) { $0 + $1.bytes }
                print(String(format: "forward + recorded forces: %d nodes, %.1f MiB held by nodes, heap in use +%.1f MiB, CPU %.3f s, wall %.3f s",
                             tape.nodeCount, Double(total) / 1048576, (heap1 - heap0) / 1048576, c1 - c0, t1 - t0))
                print("operation              nodes     MiB held")
                for p in prof { print(pad(p.name, 22) + " " + pad("\(p.count)", 9) + " " + String(format: "%.2f", Double(p.bytes) / 1048576)) }
                print("by input shapes (≥ 1 MiB):")
                for p in tape.memoryProfile(byShape: true) where p.bytes >= 1 << 20 {
                    print("  " + pad(p.name, 60) + " " + pad("\(p.count)", 5) + " " + String(format: "%.2f", Double(p.bytes) / 1048576))
                }
            }
            _ = tape.gradient(of: loss, wrt: Array(params.values))
            if call == calls - 1 {
                print(String(format: "backward: CPU %.3f s, wall %.3f s", cpuTime() - c1, now() - t1))
            }
        }
    }
}

extension Profile {
    /// CPU time per element of the gated norm (forward, and the forward with its recorded backward and the backward's
    /// backward) on [2538, 64] rows (the 63-atom cell's edges): on one set of arrays again and again (cache-resident) and
    /// cycling through 24 sets (memory-resident), to tell compute from memory traffic.
    static func kernels() {
        let rows = 2538, d = 64, sets = 24
        var rng = SeededGenerator(seed: 1)
        let data = (0..<sets).map { _ in (0..<3).map { _ in rng.normalTensor([rows, d]) } }
        let p = (0..<4).map { _ in rng.normalTensor([d]) }
        for (label, count) in [("cache-resident", 1), ("memory-resident", sets)] {
            var k = 0
            func run(_ secondOrder: Bool) {
                let t = data[k % count]
                k += 1
                if !secondOrder {
                    _ = gatedNorm(core: Variable(constant: t[0]), Variable(constant: p[0]), Variable(constant: p[1]),
                                  gate: Variable(constant: t[1]), Variable(constant: p[2]), Variable(constant: p[3]), weight: Variable(constant: t[2]))
                    return
                }
                let tape = Tape()
                let v = [t[0], p[0], p[1], t[1], p[2], p[3], t[2]].map { tape.variable($0) }
                let y = gatedNorm(core: v[0], v[1], v[2], gate: v[3], v[4], v[5], weight: v[6])
                let g = tape.vjp(of: [y], seeds: [Variable(constant: t[2])], wrt: [v[0], v[3], v[6]], createGraph: true)
                _ = tape.gradient(of: (g[0] * t[1]).sum() + (g[1] * t[0]).sum() + (g[2] * t[1]).sum(), wrt: v)
            }
            for second in [false, true] {
                for _ in 0..<count { run(second) }
                let c0 = cpuTime()
                let n = 3 * sets
                for _ in 0..<n { run(second) }
                let ns = (cpuTime() - c0) / Double(n * rows * d) * 1e9
                print("gatedNorm \(second ? "forward + backward + double backward" : "forward"), \(label): \(String(format: "%.2f", ns)) ns per element")
            }
        }
    }
}
