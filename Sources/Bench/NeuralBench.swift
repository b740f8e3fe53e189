import Atoms
import CLinalg
import Foundation
import Potentials
import Tape

/// Energy+forces per call and one BPTT-style step for the neural potentials on diamond Si.
enum NeuralBench {
    static func models() -> [(String, any Potential)] {
        // Sizes of the committed pretrained models when present, else the defaults of `relaxft pretrain`.
        var out: [(String, any Potential)] = []
        for (name, file) in [("so3krates", "si-so3krates-pretrained"), ("schnet", "si-schnet-pretrained")] {
            if let m = try? ModelFile.load("Fixtures/models/\(file).safetensors").potential {
                out.append(("\(name) (\(file))", m))
            } else if name == "so3krates" {
                out.append(("so3krates (F=48, 2 layers, random)", try! SO3krates(.init())))
            } else {
                out.append(("schnet (F=64, 3 layers, random)", try! SchNet(.init())))
            }
        }
        return out
    }

    static func dgemmRate() -> Double {
        let n = 256
        var rng = SeededGenerator(seed: 3)
        let a = rng.normalTensor([n, n]).array, b = rng.normalTensor([n, n]).array
        var c = [Double](repeating: 0, count: n * n)
        let t = measureBoth(minRuns: 20) {
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(n), Int32(n), 1, a, Int32(n), b, Int32(n), 0, &c, Int32(n))
        }
        return 2 * Double(n * n * n) / t.min
    }

    static func run() {
        print("== neural potentials: diamond Si (a = 5.431 Å, 0.05 Å noise) ==")
        let rate = dgemmRate()
        print("measured dgemm rate (256³, 1 thread): \(fmt(rate / 1e9)) GFLOP/s")
        for (name, model) in models() {
            print("-- \(name): \(model.parameterCount) parameters, cutoff \(model.cutoff) Å")
            print("atoms  pairs    energy+forces (min / median)   matmul GFLOP/call  fraction of dgemm   BPTT step (min)")
            for r in [2, 3, 4] {
                let s = rattledDiamond(repeats: r)
                let sys = AtomicSystem(s, cutoff: model.cutoff)
                let cells = s.cell.reshaped([1, 3, 3])
                let t = measureBoth(minRuns: r >= 4 ? 3 : 5, minSeconds: 1) { _ = model.evaluate(sys, positions: s.positions, cells: cells) }
                // FLOPs: matrix products recorded in one forward pass, times 2 for the backward through
                // their tracked inputs (parameters are constants here, so no weight gradients).
                let tape = Tape()
                let x = tape.variable(s.positions)
                _ = model.energies(sys, positions: x, cells: Variable(constant: cells), parameters: model.constantParameters)
                let flops = 2 * tape.matmulFlops()
                let tb = measureBoth(minRuns: 3, minSeconds: 1) { bpttStep(model, sys, s) }
                let pairs = sys.within(model.cutoff, positions: s.positions, cells: cells).pairs.pairCount
                print("\(pad(s.count, 6)) \(pad(pairs, 8)) \(pad(fmtTime(t.min) + " / " + fmtTime(t.median), 30)) \(pad(fmt(flops / 1e9), 18)) \(pad(fmt(flops / t.min / rate), 18)) \(fmtTime(tb.min))")
            }
        }
        print("BPTT step: energy, forces with createGraph, x' = x + 0.01·F, gradient of Σ c·x' w.r.t. all parameters.")
    }

    /// Diamond Si of r×r×r conventional cells with 0.05 Å Gaussian noise (seed r): the benchmark's structures.
    static func rattledDiamond(repeats r: Int) -> Structure {
        var s = Structure.diamond(repeats: r)
        var rng = SeededGenerator(seed: UInt64(r))
        s.positions = s.positions + rng.normalTensor(s.positions.shape, scale: 0.05)
        return s
    }

    /// One BPTT-style step: the gradient of Σ 0.1·(x + 0.01·F(x)) with respect to every parameter (second
    /// derivatives through the forces), flattened in the parameters' name order.
    @discardableResult
    static func bpttStep(_ model: any Potential, _ sys: AtomicSystem, _ s: Structure) -> [Double] {
        let tape = Tape()
        let x = tape.variable(s.positions)
        let params = model.parameterLeaves(on: tape)
        let (_, f) = model.energyAndForces(sys, positions: x, cells: Variable(constant: s.cell.reshaped([1, 3, 3])), parameters: params)
        let xNew = x + f * 0.01
        let loss = (xNew * Tensor(shape: xNew.shape, repeating: 0.1)).sum()
        let names = params.keys.sorted()
        return tape.gradient(of: loss, wrt: names.map { params[$0]! }).flatMap { $0.value.array }
    }

    static func pad(_ x: Any, _ w: Int) -> String { "\(x)".padding(toLength: w, withPad: " ", startingAt: 0) }
}
