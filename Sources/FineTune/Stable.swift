import Atoms
import Dynamics
import Foundation
import Potentials
import Tape

public struct StableError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// One epoch's row of metrics.csv.
public struct StableEpochMetrics: Sendable {
    public var epoch: Int
    /// "simulate" or "learn".
    public var phase: String
    public var learningRate: Double
    public var fractionUnstable: Double
    /// Mean, over the replicas that went unstable this epoch, of the simulated time since their last restart
    /// (nil when none did).
    public var meanTimeToInstability: Double?
    /// Mean simulated time since the last restart over all replicas at the end of the epoch (stable ones
    /// count with their full time: a lower bound on the time to instability).
    public var meanStableTime: Double
    public var samples: Int
    /// mean_k (⟨g(r_k)⟩ − g_ref(r_k))² and mean |…| over the radii.
    public var observableLoss: Double?
    public var rdfMAE: Double?
    public var observableGradientNorm: Double?
    public var energyForceGradientNorm: Double?
    public var energyForceLoss: Double?
    public var energyMAE: Double?
    public var forceMAE: Double?
    /// Scalar trainable parameters at the start of the epoch (the model the epoch simulated).
    public var scalars: [(String, Double)]
    public var seconds: Double

    static func header(_ scalarNames: [String]) -> String {
        (["epoch", "phase", "lr", "fraction_unstable", "mean_time_to_instability_ps", "mean_stable_time_ps", "samples", "observable_loss", "rdf_mae",
          "grad_norm_observable", "grad_norm_energy_force", "energy_force_loss", "energy_mae_mev_atom", "force_mae"] + scalarNames.map { "param_" + $0 } + ["seconds"])
            .joined(separator: ",")
    }

    var csv: String {
        func g(_ x: Double?) -> String { x.map { String(format: "%.6g", $0) } ?? "" }
        return ([String(epoch), phase, g(learningRate), g(fractionUnstable), g(meanTimeToInstability.map { $0 / 1000 }), g(meanStableTime / 1000), String(samples),
                 g(observableLoss), g(rdfMAE), g(observableGradientNorm), g(energyForceGradientNorm), g(energyForceLoss), g(energyMAE), g(forceMAE)]
                + scalars.map { String(format: "%.10g", $0.1) } + [String(format: "%.1f", seconds)]).joined(separator: ",")
    }
}

/// Everything that changes during a run besides the weights; with them it makes --resume exact.
struct StableState: Codable {
    var epoch = 0
    var learning = false
    var cycle = 0
    var adam: Adam
    var rate: Double
    var plateauBest: Double?
    var plateauBad = 0
    var reductions = 0
    var replicas: [ReplicaState]
    var stored: [ReplicaState]
    /// Simulated time (fs) since each replica's last restart.
    var ages: [Double]
    var best: [Double]?
    var bestEpoch = 0
    var rng: SeededGenerator
    var initialRDF: [Double]?
    var lastRDF: [Double]?
    /// Metrics of the first epoch (the starting model), for summaries after a resume.
    var firstRDFMAE: Double?
    var firstFractionUnstable: Double?
}

/// StABlE training: MD replicas with the current model, alternating simulation and learning phases. In a
/// learning phase every epoch takes one optimizer step on
///   ∇θ L_obs (Boltzmann estimator on frames of the stable part of the replicas) + λ ∇θ L_EF (training data),
/// clipped to a global norm; the observable is the RDF against a reference.
public final class StableTrainer {
    public let config: StableConfig
    public let run: RunDirectory
    public var runDirectory: String { run.path }
    public internal(set) var model: any Potential
    var state: StableState
    var session: RunDirectory.Session?
    static let checkpointKey = "stable_state"
    let start: Structure
    let rdf: RDFSettings
    let referenceRDF: [Double]
    let trainFrames: [Structure]
    let testSets: [(String, [Structure])]
    let names: [String]
    let monitor: StabilityMonitor
    let settings: MDSettings
    public let initialModel: any Potential

    /// Parameters logged per epoch: all trainable ones when they are scalars (classical potentials).
    public var scalarNames: [String] { names.allSatisfy { model.parameters[$0]!.count == 1 } ? names : [] }
    var metricsHeader: String { StableEpochMetrics.header(scalarNames) }

    /// A new run in `runDirectory` (which must not hold one): the inputs are read first, then the directory is
    /// created with config.json and the starting checkpoint.
    public convenience init(config: StableConfig, runDirectory: String) throws {
        try config.validate()
        if RunDirectory(runDirectory).exists("config.json") {
            throw StableError(message: "\(runDirectory) already holds a run (use --resume \(runDirectory), or another --out)")
        }
        try self.init(config: config, run: RunDirectory(runDirectory), resuming: false)
        _ = try RunDirectory.create(runDirectory, config: config)
        try run.startMetrics(header: metricsHeader)
        try saveCheckpoint()
    }

    /// Continues the run in `runDirectory`; `epochs` sets a new budget (written into config.json).
    public static func resume(runDirectory: String, epochs: Int? = nil) throws -> StableTrainer {
        let (run, config) = try RunDirectory.resume(runDirectory, as: StableConfig.self, epochs: epochs)
        guard run.exists("checkpoint.safetensors") else { throw StableError(message: "\(runDirectory): no checkpoint.safetensors to resume from") }
        return try StableTrainer(config: config, run: run, resuming: true)
    }

    private init(config o: StableConfig, run: RunDirectory, resuming: Bool) throws {
        config = o
        self.run = run
        let m0: any Potential
        do { m0 = try PotentialSpec.parse(o.pretrained) } catch let e as PotentialSpecError { throw StableError(message: "--pretrained: \(e.message)") }
        initialModel = m0
        model = m0
        let ns = o.trainable.isEmpty ? m0.parameters.keys.filter { $0 != "atomic_energies" } : o.trainable
        for n in ns where m0.parameters[n] == nil {
            throw StableError(message: "the model has no parameter '\(n)' (parameters: \(m0.parameters.keys.joined(separator: ", ")))")
        }
        guard !ns.isEmpty else { throw StableError(message: "no trainable parameters") }
        names = ns
        trainFrames = try PretrainTrainer.loadFrames(o.dataFiles)
        testSets = try o.testFiles.map { ($0, try PretrainTrainer.loadFrames([$0])) }

        // Reference observable: a table, or the mean RDF of a trajectory.
        var refFrames: [Structure] = []
        if o.reference.lowercased().hasSuffix(".csv") {
            let t: (radii: [Double], values: [Double])
            do { t = try RDFTable.read(o.reference) } catch let e as RDFTable.Error { throw StableError(message: e.message) }
            rdf = RDFSettings(radii: t.radii, sigma: o.rdfSigma)
            referenceRDF = t.values
        } else {
            let fs = try StructureIO.read(o.reference)
            guard fs.count > o.referenceSkip else { throw StableError(message: "\(o.reference): \(fs.count) frame(s), none left after skipping \(o.referenceSkip)") }
            refFrames = Array(fs[o.referenceSkip...])
            rdf = RDFSettings(rMax: o.rdfMax, bins: o.rdfBins, sigma: o.rdfSigma)
            referenceRDF = RadialDistribution.average(refFrames, settings: rdf)
        }
        var s: Structure
        if !o.structureFile.isEmpty {
            let fs = try StructureIO.read(o.structureFile)
            let k = o.structureFrame < 0 ? fs.count + o.structureFrame : o.structureFrame
            guard k >= 0 && k < fs.count else { throw StableError(message: "--structure-frame \(o.structureFrame): \(o.structureFile) has \(fs.count) frame(s)") }
            s = fs[k]
        } else if let f = refFrames.first {
            s = f
        } else if let f = trainFrames.first {
            s = f
        } else {
            throw StableError(message: "no starting structure: give --structure (or a reference trajectory, or --data)")
        }
        s.removeCalculatorResults()
        s.arrays = OrderedDictionary()
        s.info = OrderedDictionary()
        start = s
        guard s.count > 1 else { throw StableError(message: "the starting structure needs at least two atoms") }
        let bonds = BondSet.detect(s, cutoff: o.bondCutoff)
        monitor = StabilityMonitor(bonds: bonds, criterion: InstabilityCriterion(maxBondDeviation: bonds.count > 0 ? o.bondThreshold : nil, minimumDistance: o.minDistance), structure: s)
        settings = MDSettings(timestep: o.timestep, temperature: o.temperature, thermostat: o.thermostat)

        var adam = Adam(learningRate: o.learningRate)
        // Relative steps for potentials made of scalars (σ ≈ 2 Å and λ ≈ 20 move alike); not for network weights.
        if o.relativeSteps && ns.allSatisfy({ m0.parameters[$0]!.count == 1 }) {
            for n in ns { adam.scales[n] = Swift.max(Swift.abs(m0.parameters[n]!.scalar), 1e-12) }
        }
        state = StableState(adam: adam, rate: o.learningRate, replicas: [], stored: [], ages: Array(repeating: 0, count: o.replicas),
                            rng: SeededGenerator(seed: o.seed &+ 0x57AB1E))
        if resuming, let (tensors, saved) = try run.readCheckpoint(StableState.self, key: Self.checkpointKey) {
            for (name, t) in tensors {
                guard let old = model.parameters[name], old.shape == t.shape else {
                    throw StableError(message: "\(run.checkpointPath): tensor '\(name)' does not fit the model")
                }
                model.parameters[name] = t
            }
            state = saved
            try run.truncateMetrics(after: saved.epoch, header: metricsHeader)
        }
    }

    public var completedEpochs: Int { state.epoch }
    public var trainableNames: [String] { names }
    public var trainableCount: Int { names.reduce(0) { $0 + model.parameters[$1]!.count } }
    public var reference: (radii: [Double], values: [Double]) { (rdf.radii, referenceRDF) }

    /// Replica states at the start (after the optional equilibration), the stored restart states.
    func initialStates() -> [ReplicaState] {
        let md = MolecularDynamics(starts: Array(repeating: start, count: config.replicas), potential: model, settings: settings, seed: config.seed)
        if config.equilibrate > 0 {
            _ = md.runSegment(Array(0..<config.replicas), steps: config.equilibrate, monitor: nil, stopUnstable: false)
            for r in 0..<md.replicaCount { md.replicas[r].step = 0 }
        }
        return md.replicas
    }

    /// Loss and gradient of the energy/force term on `frames` (total-energy and force-component MSE, weights
    /// normalised as in pretraining), with the metrics of the current weights.
    func energyForceGradient(_ frames: [Structure]) -> (loss: Double, grads: [String: Tensor], metrics: ForceFieldMetrics) {
        let we = config.energyWeight / (config.energyWeight + config.forceWeight)
        return energyForceLossAndGradient(model, trainable: names, frames: frames, energyWeight: we, forceWeight: 1 - we)
    }

    func scalars() -> [(String, Double)] { scalarNames.map { ($0, model.parameters[$0]!.scalar) } }

    /// RUN_DIR/rdf.csv: r, g_initial (first epoch), g_model (last epoch), g_reference.
    func writeRDF() throws {
        let n = rdf.radii.count
        let empty = [Double](repeating: .nan, count: n)
        try AtomicFile.write(RDFTable.text(radii: rdf.radii, columns: [("g_initial", state.initialRDF ?? empty), ("g_model", state.lastRDF ?? empty), ("g_reference", referenceRDF)]),
                             to: run.file("rdf.csv"))
    }

    /// Weights and state in one atomic file, then the cost so far.
    func saveCheckpoint() throws {
        try run.saveCheckpoint(model.parameters, state: state, key: Self.checkpointKey, session: session)
    }

    /// The run's cost over all its processes so far (written to cost.json).
    public func cost() throws -> RunDirectory.Cost { try run.cost(session) }

    var recordedCommand: String { run.recordedCommand(config.command) }

    func provenance(kind: String, epoch: Int) -> [String: String] {
        [
            "training_method": "StABlE (Boltzmann estimator on the RDF, energy/force weight \(config.lambda))",
            "training_reference": ModelFile.recordedArgument(config.reference),
            "training_data": config.dataFiles.map(ModelFile.recordedArgument).joined(separator: ","),
            "training_command": recordedCommand,
            "training_epochs": "\(epoch)",
            "training_checkpoint": kind,
        ]
    }

    public var bestEpoch: Int { state.bestEpoch }
    public var firstEpochMetrics: (rdfMAE: Double?, fractionUnstable: Double?) { (state.firstRDFMAE, state.firstFractionUnstable) }

    /// Energy/force metrics of the starting and the best model on each test file.
    public func testMetrics() throws -> [(String, before: ForceFieldMetrics, after: ForceFieldMetrics)] {
        let best = try ModelFile.load(run.bestModelPath).potential
        return testSets.map { ($0.0, ForceFieldMetrics.compute(potential: initialModel, frames: $0.1), ForceFieldMetrics.compute(potential: best, frames: $0.1)) }
    }
}
