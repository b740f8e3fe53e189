import Atoms
import Dynamics
import Foundation
import Potentials
import Tape

/// Settings of a StABlE run (Raja et al., TMLR 2025; notes §2), saved as RUN_DIR/config.json.
public struct StableOptions: Codable, Sendable, Equatable {
    /// Potential spec of the starting model (model file, model name, or `sw:…`).
    public var pretrained = ""
    /// Parameters trained (empty: all but the per-element reference energies).
    public var trainable: [String] = []
    /// Energy/force training data (the QM term, weight `lambda`); may be empty when lambda is 0.
    public var dataFiles: [String] = []
    /// Held-out labelled frames, evaluated before and after.
    public var testFiles: [String] = []
    /// Starting structure of the replicas ("" → first frame of a reference trajectory, else of the data).
    public var structureFile = ""
    public var structureFrame = 0
    /// rdf.csv (columns r and g_reference, g or the second) or a reference trajectory (extended XYZ).
    public var reference = ""
    /// Frames of a reference trajectory skipped (equilibration).
    public var referenceSkip = 0
    public var rdfMax = 5.0
    public var rdfBins = 100
    /// Gaussian smearing of the RDF, Å; must be the one the reference was computed with.
    public var rdfSigma = 0.05
    public var temperature = 300.0
    public var timestep = 1.0
    public var thermostat: Thermostat = .langevin(friction: 0.01)
    public var replicas = 8
    /// MD steps per epoch (one segment per replica).
    public var steps = 1000
    /// Steps between the frames fed to the estimator (StABlE's n_dump = 100: decorrelated samples).
    public var sampleInterval = 100
    /// Also sample the frame at which a replica is found unstable (StABlE samples whole segments, unstable
    /// parts included, so the estimator sees the configurations that went wrong).
    public var sampleUnstable = true
    /// Steps at the start of every segment that are not sampled.
    public var discard = 0
    /// Steps run once with the starting model before the first epoch; the stored restart states are taken then.
    public var equilibrate = 0
    /// "initial": every learning epoch restarts all replicas from the stored states (StABlE);
    /// "continue": replicas continue (unstable ones are reset to their state at the start of the epoch).
    public var restart = "initial"
    public var epochs = 50
    public var learningRate = 1e-3
    /// Steps of scalar parameters relative to their starting magnitude (Adam's per-parameter scales).
    public var relativeSteps = true
    /// Global gradient-norm clipping (StABlE: 1.0; 0: off).
    public var clipNorm = 1.0
    /// Weight of the energy/force gradient (StABlE's λ_EF: 10 for the molecules, 0 for water).
    public var lambda = 10.0
    public var energyWeight = 0.01
    public var forceWeight = 0.99
    /// Training frames per energy/force gradient (0: all, as StABlE).
    public var efBatch = 0
    /// Instability: max bond deviation (StABlE training: 0.25 Å) and optionally a minimum distance.
    public var bondThreshold = 0.25
    public var bondCutoff: Double?
    public var minDistance: Double?
    /// A learning phase starts when at least this fraction of replicas went unstable in an epoch (0: always learn).
    public var unstableFraction = 0.75
    /// Reduce-on-plateau (StABlE: factor 0.2, patience 10, two reductions) on "unstable" (replicas unstable,
    /// StABlE) or "loss" (observable loss).
    public var plateauFactor = 0.2
    public var plateauPatience = 10
    public var maxReductions = 2
    public var monitor = "unstable"
    public var seed: UInt64 = 1
    public var command = ""

    public init() {}

    public func validate() throws {
        func fail(_ s: String) throws -> Never { throw StableError(message: s) }
        if pretrained.isEmpty { try fail("no starting model (--pretrained)") }
        if reference.isEmpty { try fail("no reference observable (--reference-observable)") }
        if lambda > 0 && dataFiles.isEmpty { try fail("--lambda \(lambda) needs training data (--data), or use --lambda 0") }
        if lambda < 0 { try fail("--lambda must be ≥ 0") }
        if replicas < 1 || steps < 1 || epochs < 1 || sampleInterval < 1 { try fail("replicas, steps, epochs and sample interval must be positive") }
        if discard < 0 || equilibrate < 0 || efBatch < 0 || referenceSkip < 0 { try fail("discard, equilibrate, ef batch and reference skip must be ≥ 0") }
        if discard >= steps { try fail("--discard \(discard) leaves no steps of a \(steps)-step segment to sample") }
        if !(learningRate > 0) || !(temperature > 0) || !(timestep > 0) { try fail("learning rate, temperature and time step must be positive") }
        if !(unstableFraction >= 0 && unstableFraction <= 1) { try fail("--unstable-fraction must be in [0, 1]") }
        if !(plateauFactor > 0 && plateauFactor < 1) { try fail("--plateau-factor must be in (0, 1)") }
        if !["initial", "continue"].contains(restart) { try fail("--restart expects initial or continue, got '\(restart)'") }
        if !["unstable", "loss"].contains(monitor) { try fail("--monitor expects unstable or loss, got '\(monitor)'") }
        if !(rdfSigma > 0 && rdfMax > 0) || rdfBins < 2 { try fail("RDF settings must be positive (at least 2 bins)") }
        if energyWeight < 0 || forceWeight < 0 || energyWeight + forceWeight <= 0 { try fail("energy and force weights must be ≥ 0 and not both 0") }
    }
}

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
    public let options: StableOptions
    public let runDirectory: String
    public private(set) var model: any Potential
    var state: StableState
    let start: Structure
    let rdf: RDFSettings
    let referenceRDF: [Double]
    let trainFrames: [Structure]
    let testSets: [(String, [Structure])]
    let names: [String]
    let monitor: StabilityMonitor
    let settings: MDSettings
    public let initialModel: any Potential

    var checkpointPath: String { runDirectory + "/checkpoint.safetensors" }
    var metricsPath: String { runDirectory + "/metrics.csv" }
    /// Parameters logged per epoch: all trainable ones when they are scalars (classical potentials).
    public var scalarNames: [String] { names.allSatisfy { model.parameters[$0]!.count == 1 } ? names : [] }

    /// A new run in `runDirectory` (which must not hold one).
    public convenience init(options: StableOptions, runDirectory: String) throws {
        try options.validate()
        let fm = FileManager.default
        if fm.fileExists(atPath: runDirectory + "/checkpoint.safetensors") {
            throw StableError(message: "\(runDirectory) already holds a run (use --resume \(runDirectory), or another --out)")
        }
        try self.init(options: options, runDirectory: runDirectory, checkpoint: nil)
        try fm.createDirectory(atPath: runDirectory, withIntermediateDirectories: true)
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write(try enc.encode(options), to: runDirectory + "/config.json")
        try AtomicFile.write(StableEpochMetrics.header(scalarNames) + "\n", to: metricsPath)
    }

    /// Continues the run in `runDirectory`; `epochs` may raise the budget.
    public static func resume(runDirectory: String, epochs: Int? = nil) throws -> StableTrainer {
        guard let data = FileManager.default.contents(atPath: runDirectory + "/config.json") else {
            throw StableError(message: "\(runDirectory): no config.json (not a StABlE run directory)")
        }
        var options = try JSONDecoder().decode(StableOptions.self, from: data)
        if let e = epochs { options.epochs = e }
        let ck = runDirectory + "/checkpoint.safetensors"
        guard FileManager.default.fileExists(atPath: ck) else { throw StableError(message: "\(runDirectory): no checkpoint.safetensors to resume from") }
        return try StableTrainer(options: options, runDirectory: runDirectory, checkpoint: ck)
    }

    private init(options o: StableOptions, runDirectory: String, checkpoint: String?) throws {
        options = o
        self.runDirectory = runDirectory
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
        trainFrames = try Pretrainer.loadFrames(o.dataFiles)
        testSets = try o.testFiles.map { ($0, try Pretrainer.loadFrames([$0])) }

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
            do { rdf = try RDFSettings.checked(rMax: o.rdfMax, bins: o.rdfBins, sigma: o.rdfSigma, option: ("--rdf-rmax", "--rdf-bins", "--rdf-sigma")) }
            catch let e as ResourceError { throw StableError(message: e.message) }
            referenceRDF = RadialDistribution.average(refFrames, settings: rdf)
        }
        var s: Structure
        var startName = "the starting structure"
        if !o.structureFile.isEmpty {
            let fs = try StructureIO.read(o.structureFile)
            let k = o.structureFrame < 0 ? fs.count + o.structureFrame : o.structureFrame
            guard k >= 0 && k < fs.count else { throw StableError(message: "--structure-frame \(o.structureFrame): \(o.structureFile) has \(fs.count) frame(s)") }
            s = fs[k]
            startName = "\(o.structureFile): frame \(k + 1)"
        } else if let f = refFrames.first {
            s = f
            startName = "\(o.reference): frame \(o.referenceSkip + 1)"
        } else if let f = trainFrames.first {
            s = f
            startName = "\(o.dataFiles.first ?? "--data"): frame 1"
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
        // Elements the model covers, positions it can bin, replicas that fit in memory: checked before any MD.
        do { try MolecularDynamics.checkRequest(s, replicas: o.replicas, potential: m0, settings: settings, name: startName,
                                                   potentialName: o.pretrained) }
        catch { throw StableError(message: "\(error)") }

        var adam = Adam(learningRate: o.learningRate)
        // Relative steps for potentials made of scalars (σ ≈ 2 Å and λ ≈ 20 move alike); not for network weights.
        if o.relativeSteps && ns.allSatisfy({ m0.parameters[$0]!.count == 1 }) {
            for n in ns { adam.scales[n] = Swift.max(Swift.abs(m0.parameters[n]!.scalar), 1e-12) }
        }
        state = StableState(adam: adam, rate: o.learningRate, replicas: [], stored: [], ages: Array(repeating: 0, count: o.replicas),
                            rng: SeededGenerator(seed: o.seed &+ 0x57AB1E))
        if let ck = checkpoint {
            let (tensors, meta) = try SafeTensors.read(ck)
            guard let js = meta["stable_state"], let saved = try? JSONDecoder().decode(StableState.self, from: Data(js.utf8)) else {
                throw StableError(message: "\(ck): no readable stable_state in __metadata__")
            }
            for (name, t) in tensors {
                guard let old = model.parameters[name], old.shape == t.shape else { throw StableError(message: "\(ck): tensor '\(name)' does not fit the model") }
                model.parameters[name] = t
            }
            state = saved
            try Pretrainer.truncateMetrics(metricsPath, after: saved.epoch, header: StableEpochMetrics.header(scalarNames))
        }
    }

    public var completedEpochs: Int { state.epoch }
    public var trainableNames: [String] { names }
    public var trainableCount: Int { names.reduce(0) { $0 + model.parameters[$1]!.count } }
    public var reference: (radii: [Double], values: [Double]) { (rdf.radii, referenceRDF) }

    /// Replica states at the start (after the optional equilibration), the stored restart states.
    func initialStates() -> [ReplicaState] {
        let md = MolecularDynamics(starts: Array(repeating: start, count: options.replicas), potential: model, settings: settings, seed: options.seed)
        if options.equilibrate > 0 {
            _ = md.runSegment(Array(0..<options.replicas), steps: options.equilibrate, monitor: nil, stopUnstable: false)
            for r in 0..<md.replicaCount { md.replicas[r].step = 0 }
        }
        return md.replicas
    }

    /// Loss and gradient of the energy/force term on `frames` (total-energy and force-component MSE, weights
    /// normalised as in pretraining), with the metrics of the current weights.
    func energyForceGradient(_ frames: [Structure]) -> (loss: Double, grads: [String: Tensor], metrics: ForceFieldMetrics) {
        let we = options.energyWeight / (options.energyWeight + options.forceWeight)
        return energyForceLossAndGradient(model, trainable: names, frames: frames, energyWeight: we, forceWeight: 1 - we)
    }

    func scalars() -> [(String, Double)] { scalarNames.map { ($0, model.parameters[$0]!.scalar) } }

    /// Runs epochs until the budget (or `maxEpochsThisCall`); `log` gets one line per epoch.
    @discardableResult
    public func run(maxEpochsThisCall: Int? = nil, log: (String) -> Void = { _ in }) throws -> [StableEpochMetrics] {
        let o = options
        if state.replicas.isEmpty {
            state.stored = initialStates()
            state.replicas = state.stored
        }
        let md = MolecularDynamics(structure: start, potential: model, settings: settings, states: state.replicas)
        md.refreshForces()
        let dtFs = o.timestep
        var rows: [StableEpochMetrics] = []
        var done = 0
        // Energy/force metrics of the weights of a given version (bumped by every update).
        var efCache: (version: Int, metrics: ForceFieldMetrics)?
        var version = 0
        while state.epoch < o.epochs {
            if let mx = maxEpochsThisCall, done >= mx { break }
            let t0 = Date()
            let learning = state.learning
            if learning && o.restart == "initial" {
                // Same positions and velocities, fresh Langevin noise each epoch (else the paths repeat).
                var fresh = state.stored
                for r in 0..<o.replicas { fresh[r].rng = SeededGenerator(seed: o.seed &+ 0x5EED &* UInt64(state.epoch + 1) &+ UInt64(r)) }
                md.setStates(fresh, forIndices: Array(0..<o.replicas))
                md.refreshForces()
                state.ages = Array(repeating: 0, count: o.replicas)
            }
            let atStart = md.replicas
            let agesAtStart = state.ages
            let paramsAtStart = model.parameters
            let versionAtStart = version
            let scalarsAtStart = scalars()
            // Sample every sampleInterval steps after the discarded ones: run the discarded part first.
            var res: SegmentResult
            var samples: [[Structure]] = Array(repeating: [], count: o.replicas)
            var unstableStep: [Int?] = Array(repeating: nil, count: o.replicas)
            let all = Array(0..<o.replicas)
            if o.discard > 0 {
                res = md.runSegment(all, steps: o.discard, monitor: monitor, checkInterval: 10)
                unstableStep = res.unstableStep
            }
            let running = all.filter { unstableStep[$0] == nil }
            res = md.runSegment(running, steps: o.steps - o.discard, sampleInterval: o.sampleInterval, monitor: monitor,
                                checkInterval: Swift.min(10, o.sampleInterval), sampleUnstable: o.sampleUnstable)
            for r in running {
                samples[r] = res.samples[r]
                if let u = res.unstableStep[r] { unstableStep[r] = u + o.discard }
            }
            let unstable = all.filter { unstableStep[$0] != nil }
            let frac = Double(unstable.count) / Double(o.replicas)
            let times = unstable.map { agesAtStart[$0] + Double(unstableStep[$0]!) * dtFs }
            for r in all { state.ages[r] = agesAtStart[r] + Double(unstableStep[r] ?? o.steps) * dtFs }
            let meanStable = state.ages.reduce(0, +) / Double(o.replicas)

            let pooled = samples.flatMap { $0 }
            var obsLoss: Double?, mae: Double?, gObs: Double?, gEF: Double?, efLoss: Double?
            var coefficients: [Double] = []
            if !pooled.isEmpty {
                let values = pooled.map { RadialDistribution.values($0, settings: rdf) }
                let obs = Tensor(shape: [pooled.count, rdf.radii.count], values.flatMap { $0 })
                let (l, mean, c) = BoltzmannEstimator.lossCoefficients(observables: obs, reference: referenceRDF,
                                                                       beta: BoltzmannEstimator.beta(temperature: o.temperature))
                obsLoss = l
                mae = RadialDistribution.meanAbsoluteError(mean, referenceRDF)
                coefficients = c
                if state.initialRDF == nil { state.initialRDF = mean }
                state.lastRDF = mean
            }
            var efMetrics: ForceFieldMetrics?
            let rate = state.rate
            if learning {
                var grads: [String: Tensor] = [:]
                for n in names { grads[n] = Tensor.zeros(model.parameters[n]!.shape) }
                if pooled.count >= 2 {
                    let g = BoltzmannEstimator.weightedEnergyGradient(model, frames: pooled, coefficients: coefficients, names: names)
                    gObs = names.reduce(0.0) { $0 + g[$1]!.dot(g[$1]!) }.squareRoot()
                    for n in names { grads[n] = grads[n]! + g[n]! }
                }
                if o.lambda > 0 {
                    var frames = trainFrames
                    if o.efBatch > 0 && o.efBatch < frames.count {
                        state.rng.shuffle(&frames)
                        frames = Array(frames.prefix(o.efBatch))
                    }
                    let (l, g, m) = energyForceGradient(frames)
                    efLoss = l
                    if o.efBatch == 0 { efMetrics = m; efCache = (versionAtStart, m) }
                    gEF = names.reduce(0.0) { $0 + g[$1]!.dot(g[$1]!) }.squareRoot()
                    for n in names { grads[n] = grads[n]! + g[n]! * o.lambda }
                }
                if o.clipNorm > 0 { _ = clipGradients(&grads, maxNorm: o.clipNorm) }
                var p: [String: Tensor] = [:]
                for n in names { p[n] = model.parameters[n]! }
                state.adam.learningRate = rate
                state.adam.update(&p, gradients: grads)
                if p.values.allSatisfy(\.isFinite) {
                    for (k, v) in p { model.parameters[k] = v }
                    md.setPotential(model)
                    version += 1
                } else {
                    log("epoch \(state.epoch + 1): non-finite parameters after the step; step skipped")
                }
            }
            if efMetrics == nil && !trainFrames.isEmpty {
                let v0 = versionAtStart
                if let c = efCache, c.version == v0 { efMetrics = c.metrics } else {
                    var m = model
                    m.parameters = paramsAtStart
                    let fm = ForceFieldMetrics.compute(potential: m, frames: trainFrames)
                    efMetrics = fm
                    efCache = (v0, fm)
                }
            }

            // Best: fewest unstable replicas, then the lowest observable loss (the model this epoch simulated).
            let score = [frac, obsLoss ?? .infinity]
            let improved = state.best.map { score.lexicographicallyPrecedes($0) } ?? true
            if improved {
                state.best = score
                state.bestEpoch = state.epoch + 1
                var bm = model
                bm.parameters = paramsAtStart
                try ModelFile.save(bm, to: runDirectory + "/best.safetensors", extraMetadata: provenance(kind: "best", epoch: state.epoch + 1), derived: true)
            }

            // Phase changes (StABlE's simulate/learn cycle).
            var note = ""
            if learning {
                let monitored = o.monitor == "loss" ? (obsLoss ?? .infinity) : Double(unstable.count)
                if monitored < (state.plateauBest ?? .infinity) { state.plateauBest = monitored; state.plateauBad = 0 } else {
                    state.plateauBad += 1
                    if state.plateauBad > o.plateauPatience {
                        state.rate *= o.plateauFactor
                        state.reductions += 1
                        state.plateauBad = 0
                        note = String(format: "  lr → %.3g", state.rate)
                    }
                }
                let calm = o.unstableFraction > 0 && unstable.isEmpty
                if calm || state.reductions > o.maxReductions {
                    state.learning = false
                    state.cycle += 1
                    state.rate = o.learningRate
                    state.reductions = 0
                    state.plateauBest = nil
                    state.plateauBad = 0
                    try ModelFile.save(model, to: runDirectory + "/end_of_cycle\(state.cycle).safetensors", extraMetadata: provenance(kind: "end of cycle \(state.cycle)", epoch: state.epoch + 1), derived: true)
                    note += calm ? "  → simulate (no replica unstable)" : "  → simulate (learning rate reduced \(o.maxReductions + 1) times)"
                }
            }
            // Unstable replicas go back to their state at the start of the epoch (simulation phase, and
            // learning without restarts); learning epochs with restarts begin from the stored states anyway.
            if (!learning || o.restart == "continue") && !unstable.isEmpty {
                md.setStates(unstable.map { atStart[$0] }, forIndices: unstable)
                md.refreshForces()
                for r in unstable { state.ages[r] = agesAtStart[r] }
            }
            if !learning {
                if frac >= o.unstableFraction {
                    state.learning = true
                    note = String(format: "  → learn (%.0f%% unstable)", 100 * frac)
                }
            }
            state.replicas = md.replicas
            state.epoch += 1
            done += 1
            let row = StableEpochMetrics(epoch: state.epoch, phase: learning ? "learn" : "simulate", learningRate: learning ? rate : 0, fractionUnstable: frac,
                                         meanTimeToInstability: times.isEmpty ? nil : times.reduce(0, +) / Double(times.count), meanStableTime: meanStable,
                                         samples: pooled.count, observableLoss: obsLoss, rdfMAE: mae, observableGradientNorm: gObs,
                                         energyForceGradientNorm: gEF, energyForceLoss: efLoss, energyMAE: efMetrics?.energyMAE, forceMAE: efMetrics?.forceMAE,
                                         scalars: scalarsAtStart, seconds: Date().timeIntervalSince(t0))
            rows.append(row)
            if state.epoch == 1 {
                state.firstRDFMAE = mae
                state.firstFractionUnstable = frac
            }
            let old = (try? String(contentsOfFile: metricsPath, encoding: .utf8)) ?? (StableEpochMetrics.header(scalarNames) + "\n")
            try AtomicFile.write(old + row.csv + "\n", to: metricsPath)
            try writeRDF()
            try saveCheckpoint()
            try ModelFile.save(model, to: runDirectory + "/last.safetensors", extraMetadata: provenance(kind: "last", epoch: state.epoch), derived: true)
            var line = String(format: "epoch %d/%d %@ unstable %d/%d", state.epoch, o.epochs, learning ? "learn   " : "simulate", unstable.count, o.replicas)
            if let t = row.meanTimeToInstability { line += String(format: " (at %.3g ps)", t / 1000) }
            if let l = obsLoss, let a = mae { line += String(format: "  RDF MSE %.4g MAE %.4g (%d samples)", l, a, pooled.count) }
            if learning { line += String(format: "  lr %.3g", rate) }
            if let g = gObs { line += String(format: "  |g_obs| %.3g", g) }
            if let g = gEF { line += String(format: "  |g_EF| %.3g", g) }
            if let m = efMetrics { line += String(format: "  E %.2f meV/atom F %.4f eV/Å", m.energyMAE, m.forceMAE) }
            if !scalarsAtStart.isEmpty { line += "  " + scalarsAtStart.map { String(format: "%@ %.5g", $0.0, $0.1) }.joined(separator: " ") }
            line += String(format: "  %.0f s", row.seconds) + (improved ? "  *best" : "") + note
            log(line)
        }
        return rows
    }

    /// RUN_DIR/rdf.csv: r, g_initial (first epoch), g_model (last epoch), g_reference.
    func writeRDF() throws {
        let n = rdf.radii.count
        let empty = [Double](repeating: .nan, count: n)
        try AtomicFile.write(RDFTable.text(radii: rdf.radii, columns: [("g_initial", state.initialRDF ?? empty), ("g_model", state.lastRDF ?? empty), ("g_reference", referenceRDF)]),
                             to: runDirectory + "/rdf.csv")
    }

    func saveCheckpoint() throws {
        let js = String(data: try JSONEncoder().encode(state), encoding: .utf8)!
        try SafeTensors.write(model.parameters.map { ($0.key, $0.value) }, metadata: ["stable_state": js], to: checkpointPath)
    }

    var recordedCommand: String {
        let name = URL(fileURLWithPath: runDirectory).lastPathComponent
        return options.command.replacingOccurrences(of: "--out " + runDirectory, with: "--out " + name)
            .replacingOccurrences(of: "--out=" + runDirectory, with: "--out=" + name)
    }

    func provenance(kind: String, epoch: Int) -> [String: String] {
        [
            "training_method": "StABlE (Boltzmann estimator on the RDF, energy/force weight \(options.lambda))",
            "training_reference": ModelFile.recordedArgument(options.reference),
            "training_data": options.dataFiles.map(ModelFile.recordedArgument).joined(separator: ","),
            "training_command": recordedCommand,
            "training_epochs": "\(epoch)",
            "training_checkpoint": kind,
        ]
    }

    public var bestEpoch: Int { state.bestEpoch }
    public var firstEpochMetrics: (rdfMAE: Double?, fractionUnstable: Double?) { (state.firstRDFMAE, state.firstFractionUnstable) }

    /// Energy/force metrics of the starting and the best model on each test file.
    public func testMetrics() throws -> [(String, before: ForceFieldMetrics, after: ForceFieldMetrics)] {
        let best = try ModelFile.load(runDirectory + "/best.safetensors").potential
        return testSets.map { ($0.0, ForceFieldMetrics.compute(potential: initialModel, frames: $0.1), ForceFieldMetrics.compute(potential: best, frames: $0.1)) }
    }
}
