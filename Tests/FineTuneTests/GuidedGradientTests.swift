import Foundation
import Testing
import Tape
import Atoms
import Potentials
import Relax
import Loss
@testable import FineTune

/// Guided mode: L(θ) = w·ΔQ(x_K(θ)) + (1 − w)·ΔQ(x*(θ)), the window x_K = Φ^K(x_0; θ) recorded, x* the minimum the
/// same relaxation reaches when continued from x_K.
@Suite("Guided gradient mode (window + fixed point)")
struct GuidedGradientTests {
    /// SW silicon with a vacancy (63 atoms): a unique, parameter-dependent minimum near the start, and a target
    /// (the minimum of other SW parameters) that neither x_K nor x* reaches.
    static func problem() -> (RelaxationExample, StillingerWeber) {
        let ex = example(rattledSilicon(repeats: 2, vacancy: true, rattle: 0.05, seed: 9), targetPotential: StillingerWeber(sigma: 2.0951 * 1.01, lambda: 23.1))
        return (ex, StillingerWeber())
    }

    static func settings(_ mode: GradientMode, trainable: [String] = []) -> BPTTSettings {
        var s = BPTTSettings(relaxer: FIRE(), steps: 1)
        s.mode = mode
        s.implicitFmax = 1e-8
        s.trainableHyper = trainable
        return s
    }

    /// The definition, written out with the plain relaxer loop: K FIRE steps from x_0, the same FIRE state
    /// continued until fmax < `fmax`; returns the loss and both structures.
    static func definition(_ ex: RelaxationExample, _ pot: any Potential, window K: Int, weight w: Double, fmax: Double)
        -> (loss: Double, xK: Tensor, xStar: Tensor) {
        let relaxer = FIRE()
        let hyper = relaxer.constantHyper, params = pot.constantParameters
        var evaluator = ForceEvaluator(potential: pot, structure: ex.initial, skin: 0.5)
        let f: ForceFunction = { x in evaluator.evaluate(positions: x, parameters: params) }
        var state = relaxer.start(positions: Variable(constant: ex.initial.positions), hyper: hyper, evaluate: f)
        unroll(relaxer, state: &state, hyper: hyper, control: UnrollControl(maxSteps: K), evaluate: f)
        let xK = state.positions.value
        let outcome = unroll(relaxer, state: &state, hyper: hyper, control: UnrollControl(maxSteps: 50000, stopFmax: fmax), evaluate: f)
        precondition(outcome.stopped, "the relaxation must converge")
        let s = ex.initial
        func dq(_ x: Tensor) -> Double { StructureLoss.deltaQ(Variable(constant: x), target: ex.target, masses: s.masses, cell: s.cell, pbc: s.pbc).scalar }
        return (w * dq(xK) + (1 - w) * dq(state.positions.value), xK, state.positions.value)
    }

    @Test func gradientMatchesFiniteDifferencesOfTheDefinition() {
        let (ex, pot) = Self.problem()
        let K = 8, w = 0.4
        let r = relaxationLossAndGradient(ex, potential: pot, settings: Self.settings(.guided(window: K, weight: w)))
        let base = Self.definition(ex, pot, window: K, weight: w, fmax: 1e-9)
        #expect(abs(r.loss - base.loss) <= 1e-6 * base.loss, "loss \(r.loss) vs definition \(base.loss)")
        #expect(r.fmax! < 1e-8)
        // Both terms matter here: the window ends far from the minimum, and neither part alone gives the gradient.
        let window = relaxationLossAndGradient(ex, potential: pot, settings: Self.settings(.guided(window: K, weight: 1)))
        let fixedPoint = relaxationLossAndGradient(ex, potential: pot, settings: Self.settings(.guided(window: K, weight: 0)))
        #expect(abs(window.loss - fixedPoint.loss) > 0.1 * fixedPoint.loss, "ΔQ(x_K) \(window.loss), ΔQ(x*) \(fixedPoint.loss)")
        var checks: [(String, Double, Double)] = []
        for name in pot.parameters.keys.sorted() {
            let v = pot.parameters[name]!.scalar, h = 1e-5 * v
            func at(_ d: Double) -> (loss: Double, xK: Tensor, xStar: Tensor) {
                var q = pot
                q.parameters[name] = Tensor(scalar: v + d)
                return Self.definition(ex, q, window: K, weight: w, fmax: 1e-9)
            }
            let up = at(h), down = at(-h)
            // The perturbation keeps the basin: the minima move by far less than a bond length.
            #expect(up.xStar.maxAbsDifference(base.xStar) < 1e-3 && down.xStar.maxAbsDifference(base.xStar) < 1e-3)
            checks.append((name, r.gradients[name]!.scalar, (up.loss - down.loss) / (2 * h)))
            // The two parts are combined as the definition weights them.
            let combined = w * window.gradients[name]!.scalar + (1 - w) * fixedPoint.gradients[name]!.scalar
            #expect(abs(r.gradients[name]!.scalar - combined) <= 1e-12 * abs(combined), "∂L/∂\(name): parts combined")
        }
        let scale = checks.map { abs($0.2) }.max()!
        #expect(scale > 0.01)
        for (name, a, fd) in checks {
            // ε only scales the energy: x* does not depend on it, and the window only weakly; compared at 1e-3 of the
            // largest gradient.
            let rel = abs(a - fd) / max(abs(a), abs(fd), 1e-3 * scale)
            #expect(rel <= 1e-3, "guided ∂L/∂\(name): \(a) vs FD \(fd) (rel \(rel))")
        }
        // The sum differs from each part alone by more than the tolerance above (the check can fail).
        let s = "sigma"
        for part in [window, fixedPoint] {
            #expect(abs(part.gradients[s]!.scalar - r.gradients[s]!.scalar) > 0.05 * abs(r.gradients[s]!.scalar))
        }
    }

    @Test func windowWeightOneIsBPTTOfTheWindow() {
        let (ex, pot) = Self.problem()
        let K = 9
        let trainable = ["dt", "astart"]
        let g = relaxationLossAndGradient(ex, potential: pot, settings: Self.settings(.guided(window: K, weight: 1), trainable: trainable))
        for mode in [GradientMode.full, .truncated(last: K)] {
            var s = Self.settings(mode, trainable: trainable)
            s.steps = K
            let b = relaxationLossAndGradient(ex, potential: pot, settings: s)
            #expect(g.loss.bitPattern == b.loss.bitPattern, "\(mode): loss")
            #expect(g.steps == K && g.finalPositions.bitwiseEqual(b.finalPositions))
            for (name, t) in b.gradients { #expect(g.gradients[name]!.bitwiseEqual(t), "\(mode): ∂L/∂\(name)") }
            for (name, t) in b.hyperGradients { #expect(g.hyperGradients[name]!.bitPattern == t.bitPattern, "\(mode): ∂L/∂\(name)") }
        }
    }

    @Test func windowWeightZeroIsImplicitMode() {
        let (ex, pot) = Self.problem()
        let K = 7
        let g = relaxationLossAndGradient(ex, potential: pot, settings: Self.settings(.guided(window: K, weight: 0), trainable: ["dt"]))
        // The same relaxation from x_0 (the window is its first K steps), so the same minimum to the last bit.
        let i = relaxationLossAndGradient(ex, potential: pot, settings: Self.settings(.implicit, trainable: ["dt"]))
        #expect(g.finalPositions.bitwiseEqual(i.finalPositions) && g.steps == i.steps)
        #expect(g.loss.bitPattern == i.loss.bitPattern)
        for (name, t) in i.gradients { #expect(g.gradients[name]!.bitwiseEqual(t), "∂L/∂\(name)") }
        #expect(g.hyperGradients == ["dt": 0] && i.hyperGradients == ["dt": 0])
        // Implicit mode started from x_K with a fresh relaxer finds the same minimum (to its tolerance) and gradient.
        var fromK = ex
        fromK.initial.positions = Self.definition(ex, pot, window: K, weight: 0, fmax: 1e-8).xK
        let k = relaxationLossAndGradient(fromK, potential: pot, settings: Self.settings(.implicit))
        #expect(k.finalPositions.maxAbsDifference(g.finalPositions) < 1e-6)
        // ∂L/∂ε is zero up to the convergence noise (ε only scales the energy): compared at 1e-6 of the largest.
        let scale = k.gradients.values.map { abs($0.scalar) }.max()!
        for (name, t) in k.gradients {
            let a = g.gradients[name]!.scalar, b = t.scalar
            #expect(abs(a - b) <= 1e-5 * max(abs(a), abs(b), 0.1 * scale), "∂L/∂\(name): \(a) from x_0 vs \(b) from x_K")
        }
    }

    @Test func parsesAndRoundTrips() throws {
        #expect(try GradientMode.parse("guided:20") == .guided(window: 20, weight: 0.5))
        #expect(try GradientMode.parse("guided:5:0.25") == .guided(window: 5, weight: 0.25))
        #expect(try GradientMode.parse("guided:5:0") == .guided(window: 5, weight: 0))
        for bad in ["guided", "guided:0", "guided:-3", "guided:5:1.5", "guided:5:-0.1", "guided:5:x", "guided:5:0.5:1", "guided:5:nan"] {
            #expect(throws: GradientMode.ParseError.self, "\(bad)") { try GradientMode.parse(bad) }
        }
        for mode in [GradientMode.guided(window: 20, weight: 0.5), .guided(window: 3, weight: 0.3), .implicit, .checkpoint(every: nil)] {
            #expect(try GradientMode.parse(mode.description) == mode)
            let json = try JSONEncoder().encode([mode])
            #expect(try JSONDecoder().decode([GradientMode].self, from: json) == [mode])
        }
        #expect(GradientMode.guided(window: 4, weight: 0.5).differentiatesMinimum && GradientMode.implicit.differentiatesMinimum)
        #expect(!GradientMode.full.differentiatesMinimum && !GradientMode.truncated(last: 3).differentiatesMinimum)
    }

    /// A training run in guided mode with a trained relaxer hyperparameter: it learns, and resumes.
    @Test func trainsWithGuidedGradients() throws {
        let examples = Array(try recoveryExamples("train").prefix(4))
        var c = FineTuneConfig(pretrained: "sw:sigma=2.157953,lambda=18.9")
        c.relaxer = FIRE()
        c.steps = 60
        c.stopFmax = 0.01
        c.gradient = .guided(window: 6, weight: 0.5)
        c.trainParameters = ["sigma", "lambda"]
        c.trainRelaxer = ["dt"]
        c.epochs = 3
        c.learningRate = 0.01
        c.relativeLearningRate = true
        c.batchSize = 2
        c.validationFraction = 0.25
        c.threads = 2
        let dir = try temporaryDirectory("guided")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let t = try FineTuner(config: c, potential: try PotentialSpec.parse(c.pretrained), examples: examples, runDirectory: dir)
        let summary = try t.run()
        #expect(summary.train_dq_mean_after < summary.train_dq_mean_before, "\(summary.train_dq_mean_before) → \(summary.train_dq_mean_after)")
        let stored = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/config.json"))) as! [String: Any]
        #expect(stored["gradient"] as? String == "guided:6:0.5")
    }
}

/// The implicit-function theorem holds at a minimum only: implicit and guided modes leave the implicit term out
/// (and say why) when the relaxation stops short of `implicitFmax` or conjugate gradients meet negative curvature.
@Suite struct FixedPointGuardTests {
    let pot = StillingerWeber()
    var ex: RelaxationExample {
        example(rattledSilicon(repeats: 2, vacancy: true, rattle: 0.05, seed: 9), targetPotential: StillingerWeber(sigma: 2.0951 * 1.01, lambda: 23.1))
    }

    @Test(arguments: [GradientMode.implicit, .guided(window: 3, weight: 0.5)])
    func unconvergedRelaxationGivesNoImplicitTerm(_ mode: GradientMode) {
        var s = BPTTSettings(relaxer: FIRE(), steps: 1)
        s.mode = mode
        s.implicitFmax = 1e-5
        let converged = relaxationLossAndGradient(ex, potential: pot, settings: s)
        #expect(converged.fixedPointFailure == nil && converged.fmax! < 1e-5)
        s.implicitMaxSteps = 8
        let short = relaxationLossAndGradient(ex, potential: pot, settings: s)
        #expect(short.fixedPointFailure?.contains("not below") == true, "\(String(describing: short.fixedPointFailure))")
        if case .implicit = mode {
            #expect(short.gradients.values.allSatisfy { $0.array.allSatisfy { $0 == 0 } })
        } else {
            // The window's term is kept: it is the whole gradient, the window run alone with weight w.
            var w = s
            w.mode = .guided(window: 3, weight: 1)
            let window = relaxationLossAndGradient(ex, potential: pot, settings: w)
            for (name, g) in window.gradients { #expect(short.gradients[name]!.bitwiseEqual(g * 0.5), "\(name)") }
            #expect(short.gradients.values.contains { $0.array.contains { $0 != 0 } })
        }
    }

    @Test func conjugateGradientsReportNegativeCurvatureAndNoConvergence() {
        let spd = Tensor(shape: [2, 2], [2, 0, 0, 1]), saddle = Tensor(shape: [2, 2], [1, 0, 0, -1])
        let b = Tensor(shape: [2], [1, 1])
        func op(_ m: Tensor) -> (Tensor) -> Tensor { { v in Tensor(shape: [2], [m[0, 0] * v[0] + m[0, 1] * v[1], m[1, 0] * v[0] + m[1, 1] * v[1]]) } }
        let (x, _, ok) = conjugateGradient(op(spd), b, tolerance: 1e-12, maxIterations: 10)
        #expect(ok == nil && abs(x[0] - 0.5) < 1e-14 && abs(x[1] - 1) < 1e-14)
        #expect(conjugateGradient(op(saddle), b, tolerance: 1e-12, maxIterations: 10).2?.contains("non-positive curvature") == true)
        #expect(conjugateGradient(op(spd), b, tolerance: 1e-12, maxIterations: 1).2?.contains("residual") == true)
    }
}
