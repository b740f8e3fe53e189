import Foundation
import Testing
import Tape
import Atoms
import Potentials
import Relax
@testable import FineTune

/// Frames of the recovery set's initial structures labelled with a Stillinger–Weber potential `spec`.
func labelledFrames(_ spec: String, count: Int) throws -> [Structure] {
    let truth = try PotentialSpec.parse(spec)
    return try recoveryExamples("train").prefix(count).map { ex in
        var s = ex.initial
        let sys = AtomicSystem(structures: [s], lists: [NeighborList.build(s, cutoff: truth.cutoff)])
        let ev = truth.evaluate(sys, positions: s.positions, cells: s.cell.reshaped([1, 3, 3]))
        s.energy = ev.energy
        s.forces = ev.forces
        return s
    }
}

@Suite("Force-matching term")
struct ForceTermTests {
    /// The loss is the documented mean of squared errors (computed here from plain evaluations), and its
    /// gradient matches central differences; three frames in chunks of two exercise the chunk weighting.
    @Test func lossAndGradientMatchFiniteDifferences() throws {
        let frames = try labelledFrames("sw", count: 3)
        let model = try PotentialSpec.parse("sw:sigma=2.157953,lambda=18.9")
        let names = ["sigma", "lambda", "epsilon"]
        let (we, wf) = (0.3, 0.7)
        func direct(_ m: any Potential) -> Double {
            var e2 = 0.0, f2 = 0.0, n = 0
            for s in frames {
                let sys = AtomicSystem(structures: [s], lists: [NeighborList.build(s, cutoff: m.cutoff)])
                let ev = m.evaluate(sys, positions: s.positions, cells: s.cell.reshaped([1, 3, 3]))
                e2 += (ev.energy - s.energy!) * (ev.energy - s.energy!)
                let d = ev.forces - s.forces!
                f2 += d.dot(d)
                n += d.count
            }
            return we * e2 / Double(frames.count) + wf * f2 / Double(n)
        }
        let (loss, grads, metrics) = energyForceLossAndGradient(model, trainable: names, frames: frames, energyWeight: we, forceWeight: wf, chunk: 2)
        #expect(abs(loss - direct(model)) <= 1e-12 * abs(loss), "\(loss) vs \(direct(model))")
        #expect(metrics.frames == 3 && metrics.forceRMSE > 0.01)
        for n in names {
            let p = model.parameters[n]!.scalar, h = 1e-5 * abs(p)
            var up = model, down = model
            up.parameters[n] = Tensor(scalar: p + h)
            down.parameters[n] = Tensor(scalar: p - h)
            let fd = (direct(up) - direct(down)) / (2 * h)
            let g = grads[n]!.scalar
            #expect(abs(g - fd) <= 1e-6 * Swift.max(abs(fd), 1e-3), "\(n): tape \(g), finite differences \(fd)")
        }
        // Without the energy term, frames without energies are accepted and only forces count.
        var noEnergy = frames
        for k in noEnergy.indices { noEnergy[k].energy = nil }
        let forcesOnly = energyForceLossAndGradient(model, trainable: names, frames: noEnergy, energyWeight: 0, forceWeight: 1)
        #expect(forcesOnly.loss > 0 && forcesOnly.grads["sigma"]!.scalar.isFinite)
    }

    func config(forceWeight: Double?) -> FineTuneConfig {
        var c = FineTuneConfig(pretrained: "sw:sigma=2.157953,lambda=18.9")
        c.relaxer = FIRE()
        c.steps = 20
        c.trainParameters = ["sigma"]
        c.epochs = 3
        c.learningRate = 0.005
        c.relativeLearningRate = true
        c.batchSize = 2
        c.validationFraction = 0
        c.seed = 3
        c.threads = 2
        c.forceWeight = forceWeight
        c.forceFrames = 2
        return c
    }

    /// Known truth both ways: the relaxations were made with σ = 2.0951, the force frames are labelled with
    /// σ = 2.25. ΔQ alone moves σ down from 2.158; with a dominant force term it moves up instead.
    @Test func forceTermPullsTowardItsFrames() throws {
        let examples = Array(try recoveryExamples("train").prefix(4))
        let frames = try labelledFrames("sw:sigma=2.25", count: 4)
        var sigma: [Double] = []
        for w in [nil, 1e4] as [Double?] {
            let dir = try temporaryDirectory("force-term")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let c = config(forceWeight: w)
            let t = try FineTuneTrainer(config: c, potential: try PotentialSpec.parse(c.pretrained), examples: examples,
                                  forceFrames: w == nil ? [] : frames, runDirectory: dir)
            _ = try t.run()
            sigma.append(t.potential.parameters["sigma"]!.scalar)
            let header = try String(contentsOfFile: dir + "/metrics.csv", encoding: .utf8).split(separator: "\n")[0]
            #expect(header.hasSuffix(w == nil ? ",seconds" : ",seconds,train_force_rmse"))
            if w != nil { #expect(t.state.history.allSatisfy { ($0.trainForceRMSE ?? 0) > 0 }) }
        }
        #expect(sigma[0] < 2.157953 - 1e-3, "ΔQ only: σ \(sigma[0])")
        #expect(sigma[1] > 2.157953 + 1e-3, "with the force term: σ \(sigma[1])")
    }

    /// A run with the force term stopped after one epoch and resumed ends where an uninterrupted run ends
    /// (the frames drawn each step come from the saved generator).
    @Test func resumeIsExactWithTheForceTerm() throws {
        let examples = Array(try recoveryExamples("train").prefix(4))
        let frames = try labelledFrames("sw:sigma=2.25", count: 4)
        let c = config(forceWeight: 10)
        let a = try temporaryDirectory("force-a"), b = try temporaryDirectory("force-b")
        defer { try? FileManager.default.removeItem(atPath: a); try? FileManager.default.removeItem(atPath: b) }
        let straight = try FineTuneTrainer(config: c, potential: try PotentialSpec.parse(c.pretrained), examples: examples, forceFrames: frames, runDirectory: a)
        _ = try straight.run()
        let first = try FineTuneTrainer(config: c, potential: try PotentialSpec.parse(c.pretrained), examples: examples, forceFrames: frames, runDirectory: b)
        _ = try first.run(stopAfterEpoch: 1)
        let resumed = try FineTuneTrainer(config: c, potential: try PotentialSpec.parse(c.pretrained), examples: examples, forceFrames: frames, runDirectory: b)
        try resumed.resume()
        _ = try resumed.run()
        #expect(resumed.potential.parameters == straight.potential.parameters)
        #expect(resumed.state.history.map(\.trainForceRMSE) == straight.state.history.map(\.trainForceRMSE))
    }

    @Test func forceWeightWithoutFramesIsAnError() throws {
        let dir = try temporaryDirectory("force-none")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let c = config(forceWeight: 1)
        #expect(throws: DatasetError.self) {
            _ = try FineTuneTrainer(config: c, potential: try PotentialSpec.parse(c.pretrained), examples: try recoveryExamples("train"), runDirectory: dir)
        }
    }
}
