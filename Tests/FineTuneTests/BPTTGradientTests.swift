import Foundation
import Testing
import Tape
import Atoms
import Potentials
import Relax
import Loss
@testable import FineTune

/// Diamond Si (r×r×r conventional cells), optionally without atom 0, every atom displaced randomly.
func rattledSilicon(repeats r: Int, vacancy: Bool, rattle: Double, seed: UInt64) -> Structure {
    var s = Structure.diamond(repeats: r)
    var rng = SeededGenerator(seed: seed)
    let start = vacancy ? 1 : 0
    let n = s.count - start
    let x = s.positions.slice(axis: 0, start..<s.count) + rng.normalTensor([n, 3], scale: rattle)
    s = Structure(numbers: Array(repeating: 14, count: n), positions: x, cell: s.cell, pbc: s.pbc)
    return s
}

/// An example whose target is the relaxation of the same start under `targetPotential`.
func example(_ s: Structure, targetPotential: any Potential) -> RelaxationExample {
    var settings = RelaxationSettings()
    settings.fmax = 1e-6
    settings.maxSteps = 3000
    let r = relax(s, potential: targetPotential, relaxer: FIRE(), settings: settings)
    return RelaxationExample(name: "t", initial: s, target: r.structure.positions)
}

struct GradCase: Sendable, CustomStringConvertible {
    let relaxer: String
    let potential: String
    let trainable: [String]
    var overrides: [String: Double] = [:]
    var description: String { "\(relaxer)/\(potential)" }
}

func setup(_ c: GradCase) -> (RelaxationExample, any Potential, BPTTSettings) {
    let pot: any Potential, target: any Potential, s: Structure
    if c.potential == "sw" {
        pot = StillingerWeber()
        target = StillingerWeber(sigma: 2.0951 * 1.01, lambda: 23.1)
        // 63 atoms around a vacancy: the relaxed geometry depends on σ and λ (a perfect crystal's would not).
        s = rattledSilicon(repeats: 2, vacancy: true, rattle: 0.08, seed: 3)
    } else {
        pot = LennardJones(sigma: 2.0951, epsilon: 1, rc: 3.2, ro: 2.8, smooth: true)
        target = LennardJones(sigma: 2.0951 * 1.02, epsilon: 1, rc: 3.2, ro: 2.8, smooth: true)
        s = rattledSilicon(repeats: 2, vacancy: true, rattle: 0.05, seed: 4)
    }
    let relaxer = try! RelaxerFactory.make(c.relaxer, overrides: c.overrides)
    var settings = BPTTSettings(relaxer: relaxer, steps: 15)
    settings.trainableHyper = c.trainable
    settings.mode = .full
    return (example(s, targetPotential: target), pot, settings)
}

/// The loss and gradient with the potential's parameters and the relaxer's hyperparameters set to `p` and `h`.
func lossAndGradient(_ ex: RelaxationExample, _ pot: any Potential, _ p: [String: Tensor], _ h: [String: Double], _ settings: BPTTSettings) -> BPTTResult {
    var pot = pot, s = settings
    for (k, v) in p { pot.parameters[k] = v }
    try! s.relaxer.set(h)
    return relaxationLossAndGradient(ex, potential: pot, settings: s)
}

@Suite("BPTT gradients against finite differences of the unrolled loss")
struct BPTTGradientTests {
    static let cases: [GradCase] = [
        GradCase(relaxer: "frame", potential: "sw", trainable: ["eta"], overrides: ["eta": 0.02]),
        GradCase(relaxer: "frame", potential: "lj", trainable: ["eta", "maxstep"], overrides: ["eta": 0.05, "maxstep": 0.02]),
        GradCase(relaxer: "fire", potential: "sw", trainable: ["dt", "dtmax", "maxstep", "astart", "finc", "fa"]),
        GradCase(relaxer: "fire", potential: "lj", trainable: ["dt", "astart"]),
        GradCase(relaxer: "fire-jaxmd", potential: "sw", trainable: ["dt_start", "alpha_start", "dt_max", "f_inc"]),
        GradCase(relaxer: "fire-jaxmd", potential: "lj", trainable: ["dt_start"]),
        GradCase(relaxer: "bfgs", potential: "sw", trainable: ["alpha", "maxstep"]),
        GradCase(relaxer: "bfgs", potential: "lj", trainable: ["alpha"]),
        GradCase(relaxer: "lbfgs", potential: "sw", trainable: ["alpha", "maxstep"]),
    ]

    @Test(arguments: cases)
    func fullGradientMatchesFiniteDifferences(_ c: GradCase) {
        let (ex, pot, settings) = setup(c)
        let params = Dictionary(uniqueKeysWithValues: pot.parameters.map { ($0.key, $0.value) })
        let hyper = settings.relaxer.hyperparameters.dictionary
        let r = relaxationLossAndGradient(ex, potential: pot, settings: settings)
        func loss(_ p: [String: Tensor], _ h: [String: Double]) -> Double {
            lossAndGradient(ex, pot, p, h, settings).loss
        }
        // Five-point central differences: truncation error O(h⁴), so a step large enough to keep round-off
        // small still resolves parameters whose gradient is 10⁶ times smaller than the largest.
        func fivePoint(_ f: (Double) -> Double, _ h: Double) -> Double {
            (-f(2 * h) + 8 * f(h) - 8 * f(-h) + f(-2 * h)) / (12 * h)
        }
        var checks: [(String, Double, Double)] = []
        for name in params.keys.sorted() {
            let v = params[name]!.scalar, step = 1e-5 * max(abs(v), 1)
            let fd = fivePoint({ d in var p = params; p[name] = Tensor(scalar: v + d); return loss(p, hyper) }, step)
            checks.append((name, r.gradients[name]!.scalar, fd))
        }
        for name in c.trainable {
            let v = hyper[name]!, step = 1e-5 * max(abs(v), 1e-3)
            let fd = fivePoint({ d in var h = hyper; h[name] = v + d; return loss(params, h) }, step)
            checks.append((name, r.hyperGradients[name]!, fd))
        }
        // Relative error per parameter; a gradient that is exactly zero (a hyperparameter that never acts in
        // these T steps) is compared against FD noise at 1e-6 of the largest gradient.
        let scale = checks.map { abs($0.2) }.max()!
        for (name, a, fd) in checks {
            let rel = abs(a - fd) / max(abs(a), abs(fd), 1e-6 * scale)
            #expect(rel <= 1e-5, "\(c) ∂L/∂\(name): tape \(a), FD \(fd), rel \(rel)")
        }
    }

    @Test(arguments: cases)
    func checkpointEqualsFullBitForBit(_ c: GradCase) {
        let (ex, pot, base) = setup(c)
        let full = relaxationLossAndGradient(ex, potential: pot, settings: base)
        for k in [nil, 1, 4, 7] as [Int?] {
            var s = base
            s.mode = .checkpoint(every: k)
            let ck = relaxationLossAndGradient(ex, potential: pot, settings: s)
            #expect(ck.loss.bitPattern == full.loss.bitPattern, "\(c) k=\(String(describing: k)): loss")
            for (name, g) in full.gradients { #expect(ck.gradients[name]!.bitwiseEqual(g), "\(c) k=\(String(describing: k)): ∂L/∂\(name)") }
            for (name, g) in full.hyperGradients { #expect(ck.hyperGradients[name]!.bitPattern == g.bitPattern, "\(c) k=\(String(describing: k)): ∂L/∂\(name)") }
            #expect(ck.tapeNodes < full.tapeNodes)
        }
    }

    @Test func checkpointWithEarlyStopEqualsFull() {
        var (ex, pot, base) = setup(GradCase(relaxer: "fire", potential: "sw", trainable: ["dt"]))
        base.steps = 200
        base.stopFmax = 0.05
        let full = relaxationLossAndGradient(ex, potential: pot, settings: base)
        #expect(full.steps < 200)
        var s = base
        s.mode = .checkpoint(every: 6)
        let ck = relaxationLossAndGradient(ex, potential: pot, settings: s)
        #expect(ck.steps == full.steps)
        for (name, g) in full.gradients { #expect(ck.gradients[name]!.bitwiseEqual(g), "∂L/∂\(name)") }
        #expect(ck.hyperGradients["dt"]!.bitPattern == full.hyperGradients["dt"]!.bitPattern)
    }

    @Test func truncatedGradientMatchesFiniteDifferencesOfTheTruncatedMap() {
        // With truncation, the gradient is that of the last K steps with the state at T − K held fixed;
        // truncating at K = T reproduces the full gradient.
        let (ex, pot, base) = setup(GradCase(relaxer: "frame", potential: "sw", trainable: ["eta"], overrides: ["eta": 0.02]))
        let full = relaxationLossAndGradient(ex, potential: pot, settings: base)
        var s = base
        s.mode = .truncated(last: base.steps)
        let t = relaxationLossAndGradient(ex, potential: pot, settings: s)
        for (name, g) in full.gradients { #expect(t.gradients[name]!.bitwiseEqual(g)) }
        s.mode = .truncated(last: 5)
        let t5 = relaxationLossAndGradient(ex, potential: pot, settings: s)
        #expect(t5.loss.bitPattern == full.loss.bitPattern)
        #expect(t5.gradients["sigma"]!.scalar != full.gradients["sigma"]!.scalar)
    }

    /// Systems with a unique, parameter-dependent minimum: SW Si with a vacancy (63 atoms), and an LJ fcc
    /// crystal with a vacancy (the Si-like nearest-neighbour LJ network is floppy: its Hessian has soft modes
    /// beyond translations, so x*(θ) is not defined by the potential alone).
    @Test(arguments: ["sw", "lj"])
    func implicitGradientMatchesFiniteDifferencesOfConvergedLoss(_ potName: String) {
        let pot: any Potential, ex: RelaxationExample
        if potName == "sw" {
            pot = StillingerWeber()
            ex = example(rattledSilicon(repeats: 2, vacancy: true, rattle: 0.05, seed: 9), targetPotential: StillingerWeber(sigma: 2.0951 * 1.01, lambda: 23.1))
        } else {
            pot = LennardJones(sigma: 2.3, epsilon: 0.1, rc: 5.5, ro: 4.5, smooth: true)
            var fcc = Structure(numbers: [18, 18, 18, 18], positions: Tensor(shape: [4, 3], [0, 0, 0, 0, 1.825, 1.825, 1.825, 0, 1.825, 1.825, 1.825, 0]),
                                cell: Tensor(shape: [3, 3], [3.65, 0, 0, 0, 3.65, 0, 0, 0, 3.65]), pbc: [true, true, true])
            var pos: [Double] = []
            for i in 0..<2 { for j in 0..<2 { for k in 0..<2 { for a in 0..<4 where !(i == 0 && j == 0 && k == 0 && a == 0) {
                pos += [fcc.positions[a, 0] + 3.65 * Double(i), fcc.positions[a, 1] + 3.65 * Double(j), fcc.positions[a, 2] + 3.65 * Double(k)]
            } } } }
            var rng = SeededGenerator(seed: 5)
            let x = Tensor(shape: [31, 3], pos) + rng.normalTensor([31, 3], scale: 0.05)
            fcc = Structure(numbers: Array(repeating: 18, count: 31), positions: x, cell: Tensor(shape: [3, 3], [7.3, 0, 0, 0, 7.3, 0, 0, 0, 7.3]), pbc: [true, true, true])
            ex = example(fcc, targetPotential: LennardJones(sigma: 2.3 * 1.02, epsilon: 0.1, rc: 5.5, ro: 4.5, smooth: true))
        }
        var s = BPTTSettings(relaxer: FIRE(), steps: 1)
        s.mode = .implicit
        s.implicitFmax = 1e-7
        let params = Dictionary(uniqueKeysWithValues: pot.parameters.map { ($0.key, $0.value) })
        let r = relaxationLossAndGradient(ex, potential: pot, settings: s)
        #expect(r.fmax! < 1e-6)
        #expect(r.loss > 0.01, "the target must differ from the model's minimum")
        // Finite differences of the converged-relaxation loss.
        func loss(_ p: [String: Tensor]) -> Double {
            var q = pot
            for (k, v) in p { q.parameters[k] = v }
            var rs = RelaxationSettings()
            rs.fmax = 1e-9
            rs.maxSteps = 20000
            let x = relax(ex.initial, potential: q, relaxer: FIRE(), settings: rs).structure.positions
            return StructureLoss.deltaQ(Variable(constant: x), target: ex.target, masses: ex.initial.masses, cell: ex.initial.cell, pbc: ex.initial.pbc).scalar
        }
        // ε only scales the energy, so the minimum (and ∂L/∂ε) is zero up to noise: compared at 1e-3 of the
        // largest gradient.
        var checks: [(String, Double, Double)] = []
        for name in params.keys.sorted() {
            let v = params[name]!.scalar, step = 1e-5 * v
            var up = params, down = params
            up[name] = Tensor(scalar: v + step); down[name] = Tensor(scalar: v - step)
            checks.append((name, r.gradients[name]!.scalar, (loss(up) - loss(down)) / (2 * step)))
        }
        let scale = checks.map { abs($0.2) }.max()!
        #expect(scale > 0.01)
        for (name, a, fd) in checks {
            let rel = abs(a - fd) / max(abs(a), abs(fd), 1e-3 * scale)
            #expect(rel <= 1e-3, "\(potName) implicit ∂L/∂\(name): \(a) vs FD \(fd) (rel \(rel))")
        }
    }
}

@Suite struct EnergyTermTests {
    @Test func energyTermGradientMatchesFiniteDifferences() throws {
        var ex = try recoveryExamples("train")[0]
        ex.targetEnergy = (ex.targetEnergy ?? 0) + 0.3
        let pot = try PotentialSpec.parse("sw:sigma=2.12")
        var settings = BPTTSettings(relaxer: FIRE(), steps: 10)
        settings.mode = .checkpoint(every: 3)
        settings.energyWeight = 2
        let params = Dictionary(uniqueKeysWithValues: pot.parameters.map { ($0.key, $0.value) })
        let hyper = settings.relaxer.hyperparameters.dictionary
        let r = relaxationLossAndGradient(ex, potential: pot, settings: settings)
        var noEnergy = settings
        noEnergy.energyWeight = 0
        #expect(relaxationLossAndGradient(ex, potential: pot, settings: noEnergy).loss < r.loss)
        for name in ["sigma", "epsilon"] {
            let v = params[name]!.scalar, h = 1e-5 * v
            func f(_ d: Double) -> Double {
                var p = params
                p[name] = Tensor(scalar: v + d)
                return lossAndGradient(ex, pot, p, hyper, settings).loss
            }
            let fd = (-f(2 * h) + 8 * f(h) - 8 * f(-h) + f(-2 * h)) / (12 * h)
            let a = r.gradients[name]!.scalar
            #expect(abs(a - fd) <= 1e-5 * max(abs(a), abs(fd)), "∂L/∂\(name): \(a) vs \(fd)")
        }
    }
}
