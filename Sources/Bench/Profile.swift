import Atoms
import Foundation
import Potentials
import Relax
import Tape

/// Fixed-size workloads for instruction-count profiling (valgrind --tool=callgrind), where timing loops would
/// make the work depend on the machine's speed: `relaxft-bench profile chain|fire|bptt|so3krates|schnet`.
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
        default:
            print("profile workloads: chain, fire, bptt, so3krates, schnet")
        }
    }
}
