import Atoms
import Foundation
import Potentials
import Tape

/// What single precision buys on the engine's own operations: a pair MLP energy of 216 atoms (28 neighbours each,
/// 6,048 pairs, width 64: the shape of CHGNet's and SchNet's per-pair layers), run between two casts as a
/// mixed-precision potential would be, against the same in float64. Energy+forces (forces recorded, as a
/// relaxation step records them) and one BPTT-like step (gradient of a force loss with respect to the weights,
/// through the recorded forces). The weights and positions stay float64; the gradient error is reported.
enum PrecisionBench {
    static func run() {
        print("== precision (pair MLP, 216 atoms × 28 neighbours, width 64) ==")
        var rng = SeededGenerator(seed: 3)
        let atoms = 216, neighbours = 28, width = 64
        let positions = rng.normalTensor([atoms, 3], scale: 3)
        var ii: [Int] = [], jj: [Int] = []
        for i in 0..<atoms {
            for k in 1...neighbours { ii.append(i); jj.append((i + k * 7) % atoms) }
        }
        let weights = [rng.normalTensor([3, width], scale: 0.5), rng.normalTensor([width], scale: 0.1),
                       rng.normalTensor([width, width], scale: 1 / 8), rng.normalTensor([width], scale: 0.1),
                       rng.normalTensor([width, width], scale: 1 / 8), rng.normalTensor([width, 1], scale: 1 / 8)]

        func step(_ kind: ScalarKind, secondOrder: Bool) -> (forces: Tensor, grads: [Tensor]) {
            let tape = Tape()
            let x = tape.variable(positions)
            let params = weights.map { tape.variable($0) }
            let p = params.map { $0.cast(to: kind) }
            let xs = x.cast(to: kind)
            let d = xs.gatherRows(jj) - xs.gatherRows(ii)
            var h = (matmul(d, p[0]) + p[1]).silu()
            h = (matmul(h, p[2]) + p[3]).silu()
            h = matmul(h, p[4]).silu()
            let energy = matmul(h, p[5]).sum().cast(to: .float64)
            let forces = -tape.gradient(of: energy, wrt: [x], createGraph: true)[0]
            guard secondOrder else { return (forces.value, []) }
            let loss = (forces * forces).sum()
            return (forces.value, tape.gradient(of: loss, wrt: params).map(\.value))
        }

        let reference = step(.float64, secondOrder: true), single = step(.float32, secondOrder: true)
        func rel(_ a: Tensor, _ b: Tensor) -> Double { a.maxAbsDifference(b) / b.maxAbs }
        let gradError = zip(single.grads, reference.grads).map { rel($0, $1) }.max() ?? 0
        print("float32 against float64: forces max |ΔF|/max|F| \(fmt(rel(single.forces, reference.forces))), weight gradients (worst of 6) \(fmt(gradError))")
        for (name, second) in [("energy+forces", false), ("BPTT step", true)] {
            let t64 = measureBoth(minRuns: 5) { _ = step(.float64, secondOrder: second) }
            let t32 = measureBoth(minRuns: 5) { _ = step(.float32, secondOrder: second) }
            print("\(name): float64 min \(fmtTime(t64.min)) (median \(fmtTime(t64.median))), float32 min \(fmtTime(t32.min)) (median \(fmtTime(t32.median))); float32 / float64 \(fmt(t32.min / t64.min))")
        }
        schnet()
    }

    /// SchNet (the committed model when present, as `scripts/bench neural`) on 216 atoms of rattled diamond: the
    /// network in float32 (`SchNet.precision`) against float64, energy+forces and the BPTT step of `neural`.
    static func schnet() {
        guard let (name, potential) = NeuralBench.models().first(where: { $0.0.hasPrefix("schnet") }), let model = potential as? SchNet else { return }
        print("-- \(name), 216 atoms: network in float32, geometry and sums in float64")
        var single = model
        single.precision = .float32
        let s = NeuralBench.rattledDiamond(repeats: 3)
        let sys = AtomicSystem(s, cutoff: model.cutoff)
        let cells = s.cell.reshaped([1, 3, 3])
        let e64 = model.evaluate(sys, positions: s.positions, cells: cells), e32 = single.evaluate(sys, positions: s.positions, cells: cells)
        // A force loss: its gradient is a second derivative, as in BPTT (`neural`'s step has Σ F = 0, so no gradient to compare).
        func forceLossGradient(_ m: SchNet) -> Tensor {
            let tape = Tape()
            let x = tape.variable(s.positions)
            let params = m.parameterLeaves(on: tape)
            let (_, f) = m.energyAndForces(sys, positions: x, cells: Variable(constant: cells), parameters: params)
            return Tensor(tape.gradient(of: (f * f).sum(), wrt: params.keys.sorted().map { params[$0]! }).flatMap(\.value.array))
        }
        let g64 = forceLossGradient(model), g32 = forceLossGradient(single)
        print("float32 against float64: energy \(fmt(Swift.abs(e32.energies.sum() - e64.energies.sum()))) eV of \(fmt(e64.energies.sum())), forces max |ΔF| \(fmt(e32.forces.maxAbsDifference(e64.forces))) eV/Å (max |F| \(fmt(e64.forces.maxAbs))), gradient of Σ F² (all parameters) max |Δg|/max |g| \(fmt(g32.maxAbsDifference(g64) / g64.maxAbs))")
        let ef64 = measureBoth(minRuns: 5, minSeconds: 1) { _ = model.evaluate(sys, positions: s.positions, cells: cells) }
        let ef32 = measureBoth(minRuns: 5, minSeconds: 1) { _ = single.evaluate(sys, positions: s.positions, cells: cells) }
        let b64 = measureBoth(minRuns: 3, minSeconds: 1) { NeuralBench.bpttStep(model, sys, s) }
        let b32 = measureBoth(minRuns: 3, minSeconds: 1) { NeuralBench.bpttStep(single, sys, s) }
        print("energy+forces: float64 min \(fmtTime(ef64.min)), float32 min \(fmtTime(ef32.min)); float32 / float64 \(fmt(ef32.min / ef64.min))")
        print("BPTT step: float64 min \(fmtTime(b64.min)), float32 min \(fmtTime(b32.min)); float32 / float64 \(fmt(b32.min / b64.min))")
    }
}
