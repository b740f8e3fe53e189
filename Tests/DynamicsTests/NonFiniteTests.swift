import Foundation
import Testing
import Atoms
@testable import FineTune
import Potentials
import Relax
import Tape
@testable import Dynamics

/// Counts calls across copies (the potential is a value; relaxations copy it).
final class CallCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func next() -> Int { lock.lock(); defer { lock.unlock() }; n += 1; return n - 1 }
}

/// A potential that behaves as `inner` for its first `healthy` energy evaluations and then returns energies
/// multiplied by `poison` (NaN: NaN energies and forces; infinity: infinite energies, non-finite forces).
struct PoisonedPotential: Potential {
    var inner: any Potential
    let healthy: Int
    let poison: Double
    let calls = CallCounter()

    var kind: String { inner.kind }
    var cutoff: Double { inner.cutoff }
    var parameters: OrderedDictionary<Tensor> {
        get { inner.parameters }
        set { inner.parameters = newValue }
    }
    var metadata: [String: String] { inner.metadata }

    func energies(_ system: AtomicSystem, positions: Variable, cells: Variable, parameters: [String: Variable]) -> Variable {
        let e = inner.energies(system, positions: positions, cells: cells, parameters: parameters)
        return calls.next() < healthy ? e : e * poison
    }
}

/// A vacancy in 64-atom silicon with its neighbours pushed: something for a relaxation to do.
func strainedVacancy() -> Structure {
    let s = Structure.diamond(a: 5.431, repeats: 2)
    var x = Array(s.positions.array.dropFirst(3))  // atom 0 removed
    for k in 0..<12 { x[k] += 0.07 * Double((k % 3) - 1) }
    return Structure(numbers: Array(s.numbers.dropFirst()), positions: Tensor(shape: [s.count - 1, 3], x), cell: s.cell, pbc: s.pbc)
}

@Suite("Non-finite values: relax, evaluate and MD fail honestly")
struct NonFiniteTests {
    /// NaN (or infinity) from the potential at step k: the relaxation fails at step k, is not converged, and
    /// keeps the state of step k − 1 exactly as an unpoisoned run reached it; the log never sees the bad step.
    @Test(arguments: [("fire", 5, Double.nan), ("bfgs", 3, Double.nan), ("lbfgs", 4, Double.infinity), ("fire-jaxmd", 2, Double.nan),
                      ("frame", 6, -Double.infinity), ("fire", 0, Double.nan)])
    func relaxationFailsAtTheStep(relaxer name: String, step k: Int, poison: Double) throws {
        let s = strainedVacancy()
        var settings = RelaxationSettings()
        settings.fmax = 1e-6
        settings.maxSteps = 40
        let relaxer = try RelaxerFactory.make(name)
        var clean: [RelaxationStep] = []
        _ = relax(s, potential: StillingerWeber(), relaxer: relaxer, settings: settings) { clean.append($0) }
        #expect(clean.count > k + 1, "the clean run is long enough")
        var logged: [Int] = []
        let r = relax(s, potential: PoisonedPotential(inner: StillingerWeber(), healthy: k, poison: poison), relaxer: relaxer, settings: settings) {
            logged.append($0.step)
        }
        let f = try #require(r.failure)
        #expect(f.step == k)
        #expect(!r.converged)
        #expect(logged == Array(0..<k), "only finite steps are logged")
        if k > 0 {
            #expect(r.structure.positions == clean[k - 1].positions, "the last good state is kept")
            #expect(r.finalEnergy == clean[k - 1].energy)
            #expect(r.fmax == clean[k - 1].fmax)
        } else {
            #expect(r.finalEnergy.isNaN && r.initialEnergy.isNaN)
            #expect(r.structure.positions == s.positions)
        }
        #expect(f.reason.contains(poison.isNaN ? "nan" : "inf"), "\(f)")
    }

    /// Cell relaxation: the failure check covers the cell path (generalised coordinates) too.
    @Test func cellRelaxationFails() throws {
        var settings = RelaxationSettings()
        settings.fmax = 1e-6
        settings.maxSteps = 30
        settings.relaxCell = true
        let r = relax(strainedVacancy(), potential: PoisonedPotential(inner: StillingerWeber(), healthy: 4, poison: .nan), relaxer: FIRE(), settings: settings)
        #expect(r.failure?.step == 4)
        #expect(!r.converged)
        #expect(r.structure.cell.isFinite && r.structure.positions.isFinite)
    }

    /// Parameters that blow the step up (forces of 1e300): positions become non-finite and the relaxation
    /// fails instead of trapping in the neighbour list or reporting fmax 0.
    @Test func overflowingForcesFail() throws {
        let sw = try PotentialSpec.parse("sw:lambda=1e300")
        var settings = RelaxationSettings()
        settings.maxSteps = 50
        for name in RelaxerFactory.names {
            let r = relax(strainedVacancy(), potential: sw, relaxer: try RelaxerFactory.make(name), settings: settings)
            #expect(!r.converged, "\(name)")
            // Step-clamped relaxers (BFGS) stay finite and run out of steps; the others overflow and fail.
            #expect(r.failure != nil || (r.steps == settings.maxSteps && !(r.fmax < 1e100)), "\(name): \(r.fmax)")
        }
    }

    @Test func maxRowNormPropagatesNaN() {
        #expect(maxRowNorm(Tensor(shape: [2, 3], [0, 0, 1, .nan, 0, 0])).isNaN)
        #expect(maxRowNorm(Tensor(shape: [2, 3], [.nan, 0, 0, 3, 4, 0])).isNaN)
        #expect(maxRowNorm(Tensor(shape: [2, 3], [0, 0, 1, 3, 4, 0])) == 5)
    }

    /// evaluate: a relaxation that goes non-finite is counted as failed, never converged or in the basin.
    @Test func evaluationCountsFailures() throws {
        let s = strainedVacancy()
        let target = relax(s, potential: StillingerWeber(), relaxer: FIRE(), settings: RelaxationSettings()).structure.positions
        let ex = RelaxationExample(name: "vacancy", initial: s, target: target)
        let proto = RelaxationProtocol(relaxer: FIRE(), steps: 200, stopFmax: 0.05)
        let good = evaluateRelaxations([ex], potential: StillingerWeber(), protocol: proto)[0]
        #expect(good.converged && good.failure == nil && good.sameBasin)
        let bad = evaluateRelaxations([ex], potential: PoisonedPotential(inner: StillingerWeber(), healthy: 7, poison: .nan), protocol: proto)[0]
        #expect(!bad.converged)
        #expect(!bad.sameBasin)
        #expect(bad.differingBonds == -1)
        #expect(bad.failure?.contains("step 7") == true, "\(bad.failure ?? "nil")")
        #expect(bad.deltaQ.isFinite, "ΔQ of the last good state")
    }

    /// MD: NaN at step k stops that replica at step k with the reason; the others run on unchanged.
    @Test func mdReplicaStopsAtTheStep() throws {
        let s = Structure.diamond(a: 5.431, repeats: 2)
        let settings = MDSettings(timestep: 1, temperature: 600, thermostat: .langevin(friction: 0.01))
        // One evaluation at the start, then one batched call per step: NaN from the call of step 6 on.
        let md = MolecularDynamics(starts: [s, s], potential: PoisonedPotential(inner: StillingerWeber(), healthy: 6, poison: .nan), settings: settings, seed: 3)
        let res = md.runSegment([0, 1], steps: 10, stopUnstable: false)
        #expect(res.nonFinite == [true, true])
        #expect(res.unstableStep == [6, 6])
        #expect(res.stepsTaken == [6, 6])
        #expect(res.failure.allSatisfy { $0?.contains("nan") == true }, "\(res.failure)")
        let clean = MolecularDynamics(starts: [s, s], potential: StillingerWeber(), settings: settings, seed: 3)
        let ok = clean.runSegment([0, 1], steps: 10, stopUnstable: false)
        #expect(ok.nonFinite == [false, false] && ok.stepsTaken == [10, 10])
    }

    /// MD with finite but absurd forces: the temperature passes the explosion limit and the replica stops with
    /// the time and the temperature, instead of running on at 10²¹ K.
    @Test func mdExplosionIsReported() throws {
        let s = Structure.diamond(a: 5.431, repeats: 2)
        let settings = MDSettings(timestep: 1, temperature: 300, thermostat: .none)
        let md = MolecularDynamics(starts: [s], potential: try PotentialSpec.parse("sw:lambda=1e12,sigma=2.2"), settings: settings, seed: 1)
        let res = md.runSegment([0], steps: 50, stopUnstable: false)
        #expect(res.nonFinite == [true])
        let at = try #require(res.unstableStep[0])
        #expect(at < 50)
        #expect(res.failure[0]?.contains("exploded") == true || res.failure[0]?.contains("non-finite") == true, "\(res.failure)")
        #expect(md.explosionTemperature == 1e5)
    }

    /// Requests checked before an MD run: covered elements, replicas within memory.
    @Test func mdRequestsAreChecked() throws {
        let s = Structure.diamond(a: 5.431, repeats: 1)
        let settings = MDSettings()
        try MolecularDynamics.checkRequest(s, replicas: 4, potential: StillingerWeber(), settings: settings, name: "si")
        #expect(throws: ResourceError.self) { try MolecularDynamics.checkRequest(s, replicas: 1 << 50, potential: StillingerWeber(), settings: settings, name: "si") }
        #expect(throws: ResourceError.self) { try MolecularDynamics.checkRequest(s, replicas: 0, potential: StillingerWeber(), settings: settings, name: "si") }
        var carbon = s
        carbon.numbers[3] = 6
        let schnet = try SchNet(SchNet.Config(features: 4, layers: 1, cutoff: 4, radialBasis: 4, elements: [14]))
        do {
            try MolecularDynamics.checkRequest(carbon, replicas: 1, potential: schnet, settings: settings, name: "si+c")
            Issue.record("carbon accepted by a silicon model")
        } catch let e as PotentialInputError {
            #expect(e.message.contains("si+c contains C") && e.message.contains("its elements: Si"), "\(e)")
        }
    }

    @Test func rdfSettingsAreChecked() throws {
        _ = try RDFSettings.checked(rMax: 5, bins: 100, sigma: 0.05)
        for (r, b, s) in [(5.0, 1_000_000_000_000, 0.05), (5.0, 100_000_000, 0.05), (0.0, 10, 0.05), (1e6, 10, 0.05), (5.0, 10, 0.0), (5.0, 0, 0.05)] {
            #expect(throws: ResourceError.self, "rMax \(r), bins \(b), sigma \(s)") { _ = try RDFSettings.checked(rMax: r, bins: b, sigma: s) }
        }
    }
}

/// Parameters and labels checked at the library boundaries of training.
@Suite("Training guards")
struct TrainingGuardTests {
    @Test func parameterGuardRejectsNonsense() {
        let sw = StillingerWeber()
        #expect(ParameterGuard.rejection(of: ["sigma": Tensor(scalar: 2.1)], for: sw) == nil)
        #expect(ParameterGuard.rejection(of: ["sigma": Tensor(scalar: -0.1)], for: sw)?.contains("sigma") == true)
        #expect(ParameterGuard.rejection(of: ["lambda": Tensor(scalar: .nan)], for: sw)?.contains("lambda") == true)
        #expect(ParameterGuard.rejection(of: ["sigma": Tensor(shape: [2], [1, 2])], for: sw)?.contains("shape") == true)
        #expect(ParameterGuard.rejection(of: ["bogus": Tensor(scalar: 1)], for: sw)?.contains("bogus") == true)
        #expect(ParameterGuard.rejection(of: ["sigma": Tensor(scalar: 60)], for: sw)?.contains("cutoff") == true, "a·σ beyond 100 Å")
    }

    @Test func labelledFramesRefuseNonFiniteLabels() throws {
        var s = Structure.diamond(a: 5.431, repeats: 1)
        s.energy = -30
        s.forces = Tensor.zeros([8, 3])
        try LabelledFrames.check([s, s], source: "d.xyz")
        var bad = s
        bad.energy = .nan
        #expect(throws: DatasetError.self) { try LabelledFrames.check([s, bad], source: "d.xyz") }
        do { try LabelledFrames.check([s, bad], source: "d.xyz") } catch let e as DatasetError { #expect(e.message.contains("d.xyz: frame 2"), "\(e)") }
        bad = s
        var f = Tensor.zeros([8, 3])
        f[5, 1] = .infinity
        bad.forces = f
        do { try LabelledFrames.check([bad], source: "d.xyz"); Issue.record("accepted") } catch let e as DatasetError {
            #expect(e.message.contains("frame 1") && e.message.contains("atom 6"), "\(e)")
        }
        bad = s
        bad.forces = nil
        #expect(throws: DatasetError.self) { try LabelledFrames.check([bad], source: "d.xyz") }
        try LabelledFrames.check([bad], source: "d.xyz", requireLabels: false)
    }

    @Test func relaxationDataRefusesNonFiniteEnergies() throws {
        var s = Structure.diamond(a: 5.431, repeats: 1)
        s.arrays["pos_relaxed"] = .doubles(s.positions)
        _ = try RelaxationDataset.examples(from: [s], source: "d.xyz")
        s.info["energy_relaxed"] = .double(.nan)
        #expect(throws: DatasetError.self) { _ = try RelaxationDataset.examples(from: [s], source: "d.xyz") }
    }
}

/// NaN from the potential at a given evaluation in each trainer: the failing examples or steps are counted,
/// no update is taken from them, and the run stops (`TrainingStopped`, exit 1 in the CLI) after
/// `maxRejectedSteps` rejected updates in a row, with the last good model in its directory.
@Suite("Non-finite values: trainers reject and stop", .serialized)
struct TrainerNonFiniteTests {
    func scratch(_ tag: String) throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("relaxft-nan-\(tag)-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    /// Rattled 8-atom silicon cells with SW energies and forces, written to `dir/frames.extxyz`.
    func labelledFrames(_ dir: String) throws -> String {
        var rng = SeededGenerator(seed: 11)
        let frames = (0..<6).map { _ -> Structure in
            var f = Structure.diamond(a: 5.431, repeats: 1)
            f.positions = f.positions + Tensor(shape: f.positions.shape, (0..<f.positions.count).map { _ in 0.1 * (rng.uniform() - 0.5) })
            let ev = StillingerWeber().evaluate(AtomicSystem(f, cutoff: 4), positions: f.positions, cells: f.cell.reshaped([1, 3, 3]))
            f.energy = ev.energy
            f.forces = ev.forces
            return f
        }
        try StructureIO.write(frames, dir + "/frames.extxyz")
        return dir + "/frames.extxyz"
    }

    /// finetune: the relaxation of the first training example goes NaN at its step 4: that example fails there
    /// (every later one too), each batch without a passing example is a rejected step, and the third in a row
    /// stops the run; the starting model is what the directory keeps.
    @Test(arguments: [GradientMode.full, .checkpoint(every: 2), .truncated(last: 3)])
    func finetuneCountsFailedExamplesAndStops(mode: GradientMode) throws {
        let s = strainedVacancy()
        let target = relax(s, potential: StillingerWeber(), relaxer: FIRE(), settings: RelaxationSettings()).structure.positions
        let examples = (0..<2).map { RelaxationExample(name: "vacancy-\($0)", initial: s, target: target) }
        var c = FineTuneConfig(pretrained: "sw")
        c.relaxer = FIRE()
        c.steps = 6
        c.gradient = mode
        c.epochs = 5
        c.batchSize = 1
        c.validationFraction = 0
        c.threads = 1
        c.maxRejectedSteps = 3
        // The initial evaluation relaxes both examples (7 evaluations each); the first training relaxation then
        // evaluates steps 0–3 and gets NaN at step 4.
        let poisoned = PoisonedPotential(inner: StillingerWeber(), healthy: 14 + 4, poison: .nan)
        let dir = try scratch("finetune")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let t = try FineTuneTrainer(config: c, potential: poisoned, examples: examples, runDirectory: dir)
        var failures: [RelaxationFailure] = [], rejected: [String] = []
        do {
            _ = try t.run { event in
                if case .failedExample(_, _, let f) = event { failures.append(f) }
                if case .rejectedStep(_, let why) = event { rejected.append(why) }
            }
            Issue.record("the run went on with NaN")
        } catch let e as TrainingStopped {
            #expect(e.message.contains("3 optimizer updates in a row"), "\(e)")
        }
        #expect(failures.first?.step == 4, "\(failures)")
        #expect(failures.first?.reason.contains("nan") == true, "\(failures)")
        #expect(failures.count == 3 && rejected.count == 3 && rejected.allSatisfy { $0.contains("every example") }, "\(rejected)")
        #expect(t.state.skippedSteps == 3 && t.state.rejections?.inARow == 3)
        #expect(t.state.history.count == 1 && t.state.history[0].failedExamples == 2)
        #expect(t.potential.parameters == StillingerWeber().parameters, "no update was taken")
        let best = try ModelFile.load(dir + "/best.safetensors").potential
        #expect(best.parameters == StillingerWeber().parameters)
    }

    /// pretrain: NaN energies from the fifth batch evaluation on: the losses of those batches are NaN, their
    /// updates are rejected, and the third rejection in a row stops the run after two completed epochs.
    @Test func pretrainRejectsNonFiniteLossesAndStops() throws {
        let dir = try scratch("pretrain")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var o = PretrainConfig()
        o.model = "schnet"
        o.features = 4
        o.layers = 1
        o.radialBasis = 4
        o.cutoff = 4
        o.epochs = 6
        o.batch = 2
        o.valFraction = 0.34
        o.maxRejectedSteps = 3
        o.dataFiles = [try labelledFrames(dir)]
        let t = try PretrainTrainer(config: o, runDirectory: dir + "/run")
        // Per epoch: two training batches, then one validation batch; NaN from evaluation 4 (epoch 2's second batch).
        t.model = PoisonedPotential(inner: t.model, healthy: 4, poison: .nan)
        var rejected: [String] = []
        do {
            try t.run { if case .rejectedStep(_, let why) = $0 { rejected.append(why) } }
            Issue.record("the run went on with NaN")
        } catch let e as TrainingStopped {
            #expect(e.message.contains("3 optimizer updates in a row"), "\(e)")
        }
        #expect(rejected.count == 3 && rejected.allSatisfy { $0.contains("loss") }, "\(rejected)")
        #expect(t.completedEpochs == 2)
        #expect(t.model.parameters.allSatisfy { $0.value.isFinite })
        let last = try ModelFile.load(dir + "/run/last.safetensors").potential
        #expect(last.parameters.allSatisfy { $0.value.isFinite })
    }

    /// stable: NaN forces from the 10th batched evaluation on (MD step 7 of the first epoch): both replicas stop
    /// there as unstable (non-finite), the energy/force and observable gradients are NaN, every learning step is
    /// rejected, and the third in a row stops the run with the starting parameters.
    @Test func stableRejectsNonFiniteStepsAndStops() throws {
        let dir = try scratch("stable")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Data(("r,g\n" + (0..<50).map { "\(0.05 + 0.1 * Double($0)),\($0 < 20 ? 0.0 : 1.0)" }.joined(separator: "\n") + "\n").utf8)
            .write(to: URL(fileURLWithPath: dir + "/rdf.csv"))
        var o = StableConfig()
        o.pretrained = "sw:sigma=2.16"
        o.reference = dir + "/rdf.csv"
        o.dataFiles = [try labelledFrames(dir)]
        o.structureFile = o.dataFiles[0]
        o.temperature = 600
        o.replicas = 2
        o.steps = 20
        o.sampleInterval = 5
        o.epochs = 6
        o.unstableFraction = 0
        o.lambda = 1
        o.maxRejectedSteps = 3
        let t = try StableTrainer(config: o, runDirectory: dir + "/run")
        let start = t.model.parameters
        t.model = PoisonedPotential(inner: t.model, healthy: 10, poison: .nan)
        var rejected: [String] = []
        do {
            try t.run { if case .skippedStep(_, let why) = $0 { rejected.append(why) } }
            Issue.record("the run went on with NaN")
        } catch let e as TrainingStopped {
            #expect(e.message.contains("3 optimizer updates in a row"), "\(e)")
        }
        #expect(rejected.count == 3, "\(rejected)")
        // Epoch 1 simulates only (the learning phase starts at its end); epochs 2 and 3 reject their step and
        // complete, epoch 4's rejection stops the run.
        #expect(t.completedEpochs == 3)
        #expect(t.model.parameters == start, "no update was taken")
        let metrics = try String(contentsOfFile: dir + "/run/metrics.csv", encoding: .utf8).split(separator: "\n")
        let header = metrics[0].split(separator: ",").map(String.init)
        let k = try #require(header.firstIndex(of: "fraction_unstable"))
        #expect(metrics.count == 4 && metrics.dropFirst().allSatisfy { $0.split(separator: ",", omittingEmptySubsequences: false)[k] == "1" }, "\(metrics)")
    }
}
