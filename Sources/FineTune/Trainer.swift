import Atoms
import Cluster
import Foundation
import Loss
import Potentials
import Relax
import Tape

/// One row of metrics.csv.
public struct FineTuneEpochMetrics: Codable, Sendable {
    public var epoch: Int
    public var trainDQMean: Double
    public var trainDQMedian: Double
    public var valDQMean: Double?
    public var valDQMedian: Double?
    public var gradientNorm: Double
    public var learningRate: Double
    public var relaxer: [String: Double]
    public var skippedSteps: Int
    public var seconds: Double
    /// RMS force error on the frames drawn for the force term during the epoch (eV/Å; nil without it).
    public var trainForceRMSE: Double? = nil
    /// Training examples of the epoch whose relaxation, loss or gradient was not finite (left out of their
    /// step and of the train ΔQ), and validation relaxations that failed.
    public var failedExamples: Int? = nil
    public var failedValidation: Int? = nil
    /// Implicit and guided modes: structures of the epoch whose implicit term was left out (no minimum reached).
    public var fixedPointFailures: Int? = nil
}

/// Resumable state of a run (RUN_DIR/checkpoint.safetensors, with the weights).
public struct FineTuneState: Sendable {
    public var nextEpoch = 0
    public var adam: Adam
    public var schedule: ScheduleState
    public var rng: SeededGenerator
    /// The relaxer with its hyperparameters as trained so far.
    public var relaxer: any Relaxer
    public var bestValidation: Double?
    public var bestEpoch: Int?
    public var epochsWithoutImprovement = 0
    /// Optimizer steps not taken (non-finite gradients, failed batches, updates the parameter guard refused).
    public var skippedSteps = 0
    /// Rejected updates in a row (the run stops at `maxRejectedSteps`); nil in runs written before it existed.
    public var rejections: UpdateRejections? = nil
    /// Training examples that failed, over the run.
    public var failedExamples: Int? = nil
    public var history: [FineTuneEpochMetrics] = []
    /// ΔQ of the starting model (empty until the initial evaluation is done).
    public var before: [String: Double] = [:]
    public var seconds = 0.0
    public var stoppedEarly = false

    public init(adam: Adam, schedule: ScheduleState, rng: SeededGenerator, relaxer: any Relaxer) {
        self.adam = adam
        self.schedule = schedule
        self.rng = rng
        self.relaxer = relaxer
    }
}

/// The relaxer is stored as {"relaxer": name, "hyperparameters": {…}}. States written before it was typed kept
/// only the hyperparameters ("hyper"); they are read with the run's configured relaxer (`relaxerKey` in the
/// decoder's userInfo) as the kind.
extension FineTuneState: Codable {
    public static let relaxerKey = CodingUserInfoKey(rawValue: "relaxft.relaxer")!

    enum CodingKeys: String, CodingKey {
        case nextEpoch, adam, schedule, rng, relaxer, hyper, bestValidation, bestEpoch, epochsWithoutImprovement, skippedSteps, history
        case before, seconds, stoppedEarly, rejections, failedExamples
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if let stored = try c.decodeIfPresent(StoredRelaxer.self, forKey: .relaxer) {
            relaxer = stored.relaxer
        } else {
            guard var r = decoder.userInfo[Self.relaxerKey] as? any Relaxer else {
                throw DecodingError.keyNotFound(CodingKeys.relaxer, .init(codingPath: c.codingPath, debugDescription: "no relaxer in the state"))
            }
            do { try r.set(try c.decode([String: Double].self, forKey: .hyper)) } catch let e as RelaxerError {
                throw DecodingError.dataCorruptedError(forKey: .hyper, in: c, debugDescription: e.message)
            }
            relaxer = r
        }
        nextEpoch = try c.decode(Int.self, forKey: .nextEpoch)
        adam = try c.decode(Adam.self, forKey: .adam)
        schedule = try c.decode(ScheduleState.self, forKey: .schedule)
        rng = try c.decode(SeededGenerator.self, forKey: .rng)
        bestValidation = try c.decodeIfPresent(Double.self, forKey: .bestValidation)
        bestEpoch = try c.decodeIfPresent(Int.self, forKey: .bestEpoch)
        epochsWithoutImprovement = try c.decode(Int.self, forKey: .epochsWithoutImprovement)
        skippedSteps = try c.decode(Int.self, forKey: .skippedSteps)
        history = try c.decode([FineTuneEpochMetrics].self, forKey: .history)
        before = try c.decode([String: Double].self, forKey: .before)
        seconds = try c.decode(Double.self, forKey: .seconds)
        stoppedEarly = try c.decode(Bool.self, forKey: .stoppedEarly)
        rejections = try c.decodeIfPresent(UpdateRejections.self, forKey: .rejections)
        failedExamples = try c.decodeIfPresent(Int.self, forKey: .failedExamples)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(nextEpoch, forKey: .nextEpoch)
        try c.encode(adam, forKey: .adam)
        try c.encode(schedule, forKey: .schedule)
        try c.encode(rng, forKey: .rng)
        try c.encode(StoredRelaxer(relaxer), forKey: .relaxer)
        try c.encodeIfPresent(bestValidation, forKey: .bestValidation)
        try c.encodeIfPresent(bestEpoch, forKey: .bestEpoch)
        try c.encode(epochsWithoutImprovement, forKey: .epochsWithoutImprovement)
        try c.encode(skippedSteps, forKey: .skippedSteps)
        try c.encode(history, forKey: .history)
        try c.encode(before, forKey: .before)
        try c.encode(seconds, forKey: .seconds)
        try c.encode(stoppedEarly, forKey: .stoppedEarly)
        try c.encodeIfPresent(rejections, forKey: .rejections)
        try c.encodeIfPresent(failedExamples, forKey: .failedExamples)
    }
}

public struct FineTuneSummary: Codable, Sendable {
    public var train_dq_mean_before: Double
    public var train_dq_mean_after: Double
    public var val_dq_mean_before: Double?
    public var val_dq_mean_after: Double?
    public var val_dq_median_before: Double?
    public var val_dq_median_after: Double?
    public var epochs: Int
    public var best_epoch: Int?
    /// Training time summed over epochs (all sessions of a resumed run).
    public var seconds: Double
    /// The run's cost over every process that worked on it (resumes included): peak resident set size (MB),
    /// wall and CPU seconds (user + system; evaluations included), and the number of processes.
    public var peak_rss_mb: Double
    public var wall_seconds: Double? = nil
    public var cpu_seconds: Double? = nil
    public var sessions: Int? = nil
    public var skipped_steps: Int
    /// Training examples whose relaxation, loss or gradient went non-finite, over the run.
    public var failed_examples: Int? = nil
    public var stopped_early: Bool
    public var relaxer_hyperparameters: [String: Double]
    public var parameters: [String: [Double]]?
}

/// What a fine-tuning run reports while it works (the command line formats it).
public enum FineTuneEvent: Sendable {
    /// The starting model's relaxations (training and validation), `done` of `total` structures.
    case initialEvaluation(done: Int, total: Int, eta: Double?)
    /// Mini-batches of an epoch (1-based epoch), `done` of `total` structures.
    case batch(epoch: Int, done: Int, total: Int, eta: Double?)
    /// A completed epoch and the estimated time to the end of the run.
    case epoch(FineTuneEpochMetrics, eta: Double)
    /// A training example failed in (1-based) `epoch` and was left out of its step.
    case failedExample(epoch: Int, name: String, failure: RelaxationFailure)
    /// An optimizer step of (1-based) `epoch` was not taken, and why.
    case rejectedStep(epoch: Int, reason: String)
}

/// The loss and gradient of one mini-batch: per example ΔQ (and the energy term), and the gradient with respect
/// to the potential's trainable parameters (`p/NAME`) and the trained relaxer hyperparameters (`r/NAME`),
/// averaged over the examples that did not fail and accumulated in example order. Examples in, gradients out:
/// the unit a data-parallel run reduces across ranks.
public struct BatchGradient: Sendable {
    /// Per example; NaN for a failed one.
    public var losses: [Double]
    public var gradients: [String: Tensor]
    /// The examples (index in the batch) that failed, and why (over all ranks; another rank's failure is
    /// known by its step only).
    public var failures: [(index: Int, failure: RelaxationFailure)] = []
    /// Wall seconds this rank spent in the cross-rank sum and gather (waiting for other ranks included).
    public var communicationSeconds = 0.0
    /// Structures whose implicit-gradient term was left out (`BPTTResult.fixedPointFailure`), over all ranks.
    public var fixedPointFailures = 0

    /// Whether there is a finite gradient to step with (at least one example passed).
    public var isFinite: Bool { failures.count < losses.count && gradients.values.allSatisfy(\.isFinite) }
}

/// With several ranks, each relaxes its contiguous share of `examples` (on `threads` threads) and the terms
/// g_i/B are summed by `orderedSum` in example order, ((0 + g₀/B) + g₁/B) + …, as one process adds them: every
/// rank gets one process's bits, for any number of ranks and threads.
public func batchGradient(_ examples: [RelaxationExample], potential: any Potential, settings: BPTTSettings, trainable: [String],
                          threads: Int, communicator comm: any Communicator = LocalCommunicator()) -> BatchGradient {
    let shard = comm.shard(of: examples.count)
    let results = parallelMap(shard.count, threads: threads) { i in
        relaxationLossAndGradient(examples[shard.lowerBound + i], potential: potential, settings: settings)
    }
    // Per example in one gather: loss, failed step + 1 (0: passed) and the fixed-point flag, so that every
    // rank knows the whole batch's failures before the sum, which is over the examples that passed.
    let t0 = Date()
    let perExample = comm.allgatherConcatenated(results.flatMap { [$0.loss, $0.failure.map { Double($0.step + 1) } ?? 0, $0.fixedPointFailure == nil ? 0 : 1] })
    let losses = stride(from: 0, to: perExample.count, by: 3).map { perExample[$0] }
    let failedStep = stride(from: 1, to: perExample.count, by: 3).map { Int(perExample[$0]) - 1 }
    let fixedPoint = stride(from: 2, to: perExample.count, by: 3).filter { perExample[$0] != 0 }.count
    let layout = GradientLayout(trainable.map { ("p/" + $0, potential.parameters[$0]!.shape) } + settings.trainableHyper.map { ("r/" + $0, []) })
    let w = 1 / Double(Swift.max(failedStep.filter { $0 < 0 }.count, 1))
    // A failed example adds zeros (and has no gradients to flatten).
    let terms = results.map { r -> [Double] in
        guard r.failure == nil else { return [Double](repeating: 0, count: layout.length) }
        var g: [String: Tensor] = [:]
        for name in trainable { g["p/" + name] = r.gradients[name]! }
        for name in settings.trainableHyper { g["r/" + name] = Tensor(scalar: r.hyperGradients[name]!) }
        return layout.flatten(g, scale: w)
    }
    let sum = comm.orderedSum(terms, count: examples.count, length: layout.length)
    let ranks = shardRanges(count: examples.count, parts: comm.size)
    let failures = failedStep.enumerated().compactMap { k, step -> (index: Int, failure: RelaxationFailure)? in
        guard step >= 0 else { return nil }
        if shard.contains(k), let f = results[k - shard.lowerBound].failure { return (k, f) }
        let rank = ranks.firstIndex { $0.contains(k) } ?? 0
        return (k, RelaxationFailure(step: step, reason: "non-finite values (on rank \(rank))"))
    }
    return BatchGradient(losses: losses, gradients: layout.unflatten(sum), failures: failures, communicationSeconds: Date().timeIntervalSince(t0),
                         fixedPointFailures: fixedPoint)
}

/// Fine-tuning by backpropagation through relaxations: Adam on the potential's parameters (and chosen relaxer
/// hyperparameters), mini-batches of examples, a seeded train/validation split, early stopping on validation
/// ΔQ, best and last model files, exact resume from RUN_DIR/checkpoint.safetensors.
public final class FineTuneTrainer {
    public let config: FineTuneConfig
    public let run: RunDirectory
    public var runDirectory: String { run.path }
    /// The ranks of a data-parallel job (one process: a single rank). Rank 0 alone writes the run directory.
    public let communicator: any Communicator
    public private(set) var potential: any Potential
    public let train: [RelaxationExample]
    public let validation: [RelaxationExample]
    /// Frames of the force-matching term (empty without it).
    public let forceFrames: [Structure]
    public private(set) var state: FineTuneState
    let trainable: [String]
    /// Whether the run directory exists (created by `run`, or opened by `resume`).
    private var started = false
    private var session: RunDirectory.Session?

    static let checkpointKey = "finetune_state"

    /// `validationExamples`: a separate validation set (e.g. the val split of a dataset); nil takes a seeded
    /// fraction `config.validationFraction` of `examples`. `forceFrames`: the frames of `config.forceData`.
    public init(config: FineTuneConfig, potential: any Potential, examples: [RelaxationExample], validationExamples: [RelaxationExample]? = nil,
                forceFrames: [Structure] = [], runDirectory: String, communicator: any Communicator = LocalCommunicator()) throws {
        self.config = config
        self.communicator = communicator
        self.forceFrames = forceFrames
        if (config.forceWeight ?? 0) > 0 {
            guard !forceFrames.isEmpty else { throw DatasetError(message: "a force weight needs frames with forces (forceData)") }
            for (k, f) in forceFrames.enumerated() where f.forces == nil {
                throw DatasetError(message: "force frame \(k) has no forces")
            }
        }
        run = RunDirectory(runDirectory)
        self.potential = potential
        let known = config.relaxer.hyperparameters.names
        for name in config.trainRelaxer where !known.contains(name) {
            throw DatasetError(message: "relaxer \(config.relaxer.name) has no hyperparameter '\(name)' (has: \(known.joined(separator: ", ")))")
        }
        let all = potential.parameters.keys
        if let names = config.trainParameters {
            for n in names where !all.contains(n) {
                throw DatasetError(message: "the potential has no parameter '\(n)' (has: \(all.joined(separator: ", ")))")
            }
            trainable = names
        } else {
            trainable = all
        }
        if let v = validationExamples {
            train = examples
            validation = v
        } else {
            let split = RelaxationDataset.split(count: examples.count, validationFraction: config.validationFraction, seed: config.seed)
            train = split.train.map { examples[$0] }
            validation = split.validation.map { examples[$0] }
        }
        guard !train.isEmpty else { throw DatasetError(message: "no training examples (\(examples.count) in the data)") }
        var adam = Adam(learningRate: config.learningRate, weightDecay: config.weightDecay)
        if config.relativeLearningRate {
            for name in trainable {
                let t = potential.parameters[name]!
                adam.scales["p/" + name] = Swift.max((t.dot(t) / Double(Swift.max(t.count, 1))).squareRoot(), 1e-12)
            }
            for name in config.trainRelaxer { adam.scales["r/" + name] = Swift.max(Swift.abs(config.relaxer.hyperparameters[name]!), 1e-12) }
        }
        state = FineTuneState(adam: adam,
                             schedule: ScheduleState(try LearningRateSchedule.parse(config.schedule, epochs: config.epochs), baseRate: config.learningRate),
                             rng: SeededGenerator(seed: config.seed &+ 0x5EED), relaxer: config.relaxer)
    }

    public var bestModelPath: String { run.bestModelPath }

    /// The relaxer with its hyperparameters as trained so far.
    public var relaxer: any Relaxer { state.relaxer }

    /// Restores the state and weights of an interrupted run (its config must be this trainer's; a new epoch
    /// budget in it re-targets a cosine schedule, the only state that depends on the budget).
    public func resume() throws {
        let legacy: [CodingUserInfoKey: Any] = [FineTuneState.relaxerKey: config.relaxer]
        if let ck = try run.readCheckpoint(FineTuneState.self, key: Self.checkpointKey, userInfo: legacy) {
            state = ck.state
            try RunDirectory.install(ck.tensors, into: &potential, file: run.checkpointPath)
        } else if let s = try run.readJSON(FineTuneState.self, from: "state.json", userInfo: legacy) {
            // Run directories written before checkpoint.safetensors: the state and last.safetensors.
            state = s
            potential.parameters = try ModelFile.load(run.lastModelPath).potential.parameters
        }
        // Without either, the run was stopped between writing config.json and its first checkpoint: it starts
        // from the beginning, as the stored configuration says.
        try validateState()
        if communicator.writesFiles { try run.storeEpochs(config.epochs, as: FineTuneConfig.self) }
        if case .cosine(let old, let minFactor) = state.schedule.schedule, old != config.epochs {
            state.schedule.schedule = .cosine(epochs: config.epochs, minFactor: minFactor)
            if state.nextEpoch > 0 { state.schedule.endEpoch(state.nextEpoch - 1, monitored: state.bestValidation ?? .infinity) }
        }
        started = true
    }

    /// A state read from disk must be one this run could have written (a hand-edited or foreign file is an
    /// error naming it, never "epoch −3/3").
    func validateState() throws {
        let where_ = run.checkpointPath
        func fail(_ what: String) throws -> Never { throw RunDirectoryError(message: "\(where_): \(what) (not a state this run wrote)") }
        if state.nextEpoch < 0 || state.nextEpoch != state.history.count { try fail("next epoch \(state.nextEpoch) with \(state.history.count) epochs recorded") }
        if let b = state.bestEpoch, b < 0 || b > state.nextEpoch { try fail("best epoch \(b) of \(state.nextEpoch)") }
        if state.skippedSteps < 0 || state.epochsWithoutImprovement < 0 { try fail("negative counters") }
        let hyper = state.relaxer.hyperparameters
        if state.relaxer.name != config.relaxer.name || !hyper.named.allSatisfy({ $0.value.isFinite }) {
            try fail("relaxer \(state.relaxer.name) with \(hyper.dictionary) does not fit the run's relaxer \(config.relaxer.name)")
        }
        var sizes: [String: Int] = [:]
        for (k, v) in potential.parameters { sizes["p/" + k] = v.count }
        for k in hyper.names { sizes["r/" + k] = 1 }
        try RunDirectory.validate(state.adam, sizes: sizes, file: where_)
        if let why = ParameterGuard.rejection(of: Dictionary(uniqueKeysWithValues: potential.parameters.map { ($0.key, $0.value) }), for: potential) {
            try fail(why)
        }
    }

    func settings() -> BPTTSettings {
        var s = BPTTSettings(relaxer: relaxer, steps: config.steps)
        s.mode = config.gradient
        s.stopFmax = config.stopFmax
        s.trainableHyper = config.trainRelaxer
        s.energyWeight = config.energyWeight
        return s
    }

    /// The relaxation protocol of the current model (trained hyperparameters, T steps).
    public var relaxationProtocol: RelaxationProtocol {
        RelaxationProtocol(relaxer: relaxer, steps: config.steps, stopFmax: config.stopFmax)
    }

    /// Relaxes `examples` on `config.threads` threads (each rank its share), reporting after each round.
    func evaluate(_ examples: [RelaxationExample], protocol p: RelaxationProtocol? = nil, potential pot: (any Potential)? = nil,
                  progress: (Int) -> Void = { _ in }) throws -> [ExampleEvaluation] {
        try evaluateRelaxations(examples, potential: pot ?? potential, protocol: p ?? relaxationProtocol, threads: config.threads,
                                communicator: communicator, progress: progress)
    }

    func saveModel(to name: String, epoch: Int) throws {
        guard communicator.writesFiles else { return }
        try run.saveModel(potential, to: name, metadata: [
            "relaxation_protocol": relaxationProtocol.metadataValue,
            "training": "relaxft finetune (BPTT) from \(ModelFile.recordedArgument(config.pretrained)), epoch \(epoch), gradient \(config.gradient), relaxer \(config.relaxer.name), T = \(config.steps)",
        ])
    }

    /// Weights and state in one atomic file, then the cost so far (collective: every rank calls it).
    func saveCheckpoint() throws {
        let cost = session.map { communicator.jobCost($0) }
        guard communicator.writesFiles else { return }
        try run.writeCheckpoint(potential.parameters, state: state, key: Self.checkpointKey)
        if let cost { try run.writeJSON(cost, to: "cost.json", pretty: true) }
    }

    /// A digest of what this rank read (configuration, data, weights, state), compared across ranks.
    func inputDigest() -> UInt64 {
        var d = InputDigest()
        var c = config
        c.threads = 0
        d.add(json: c)
        d.add(json: state)
        for (_, t) in potential.parameters { d.add(t) }
        for set in [train, validation] {
            d.add(Double(set.count))
            for ex in set {
                d.add(bytes: ex.name.utf8)
                d.add(ex.initial.positions)
                d.add(ex.initial.cell)
                d.add(ex.target)
            }
        }
        for f in forceFrames { d.add(f.positions); if let g = f.forces { d.add(g) } }
        return d.value
    }

    /// Runs (or continues) the training; `report` gets progress events. `stopAfterEpoch` ends the run early at
    /// that epoch, as an interruption would (the checkpoint is saved before the first relaxation and after
    /// every epoch).
    public func run(stopAfterEpoch: Int? = nil, report: (FineTuneEvent) -> Void = { _ in }) throws -> FineTuneSummary {
        try communicator.requireSameInputs(inputDigest(), what: "inputs (configuration, data, model or checkpoint)")
        if !started {
            if communicator.writesFiles { _ = try RunDirectory.create(run.path, config: config) }
            started = true
        }
        if !run.exists("checkpoint.safetensors") { try saveCheckpoint() }
        session = try run.beginSession()
        if state.before.isEmpty && state.history.isEmpty { try initialEvaluation(report: report) }
        let clock = Date()
        var epochsThisCall = 0
        while state.nextEpoch < Swift.min(config.epochs, stopAfterEpoch ?? .max) && !state.stoppedEarly {
            let metrics = try trainEpoch(report: report)
            epochsThisCall += 1
            // ETA from this process's epochs (earlier sessions may have run on another machine).
            let perEpoch = Date().timeIntervalSince(clock) / Double(epochsThisCall)
            report(.epoch(metrics, eta: perEpoch * Double(config.epochs - state.nextEpoch)))
        }
        return try summary()
    }

    /// The starting model's ΔQ on the training and validation structures; best and last model files at epoch 0.
    func initialEvaluation(report: (FineTuneEvent) -> Void) throws {
        let total = train.count + validation.count
        let t0 = Date()
        func progress(_ done: Int) {
            let eta = done > 0 ? Date().timeIntervalSince(t0) / Double(done) * Double(total - done) : nil
            report(.initialEvaluation(done: done, total: total, eta: eta))
        }
        let tr = try evaluate(train, progress: progress)
        let va = try evaluate(validation) { progress(train.count + $0) }
        state.before["train_dq_mean"] = ErrorSummary(tr.map(\.deltaQ)).mean
        if !va.isEmpty {
            let s = ErrorSummary(va.map(\.deltaQ))
            state.before["val_dq_mean"] = s.mean
            state.before["val_dq_median"] = s.median
            state.bestValidation = s.mean
        }
        state.bestEpoch = 0
        try saveModel(to: "best.safetensors", epoch: 0)
        try saveModel(to: "last.safetensors", epoch: 0)
        try saveCheckpoint()
    }

    /// The gradient of one optimizer step: the batch's ΔQ gradient, plus the force term when it is on.
    func stepGradient(_ batch: [RelaxationExample], settings: BPTTSettings, forceSquares: inout Double, forceComponents: inout Int) -> BatchGradient {
        var g = batchGradient(batch, potential: potential, settings: settings, trainable: trainable, threads: config.threads, communicator: communicator)
        if let wf = config.forceWeight, wf > 0 {
            let (_, fg, m) = energyForceLossAndGradient(potential, trainable: trainable, frames: drawForceFrames(), energyWeight: 0, forceWeight: 1)
            for name in trainable { g.gradients["p/" + name] = g.gradients["p/" + name]! + fg[name]! * wf }
            forceSquares += m.forceRMSE * m.forceRMSE * Double(m.forceComponents)
            forceComponents += m.forceComponents
        }
        return g
    }

    /// One Adam step on `grads` (relaxer hyperparameters on their own learning rate), taken only when the
    /// parameter guard accepts the result: returns why it was refused (nothing changed then), or nil.
    func applyStep(_ grads: [String: Tensor]) -> String? {
        var values: [String: Tensor] = [:]
        for name in trainable { values["p/" + name] = potential.parameters[name]! }
        for name in config.trainRelaxer { values["r/" + name] = Tensor(scalar: state.relaxer.hyperparameters[name]!) }
        // Scale the relaxer's gradients' step so that one Adam (whose steps are ~lr per coordinate) serves both.
        var adam = state.adam
        adam.learningRate = state.schedule.rate
        var pValues = values.filter { $0.key.hasPrefix("p/") }, rValues = values.filter { $0.key.hasPrefix("r/") }
        let pGrads = grads.filter { $0.key.hasPrefix("p/") }, rGrads = grads.filter { $0.key.hasPrefix("r/") }
        adam.update(&pValues, gradients: pGrads)
        if !rValues.isEmpty {
            let saved = adam.learningRate
            let relaxerRate = config.relaxerLearningRate ?? config.learningRate
            adam.learningRate = relaxerRate * state.schedule.rate / config.learningRate
            adam.update(&rValues, gradients: rGrads, countStep: false)
            adam.learningRate = saved
        }
        var updated: [String: Tensor] = [:]
        for (k, v) in pValues { updated[String(k.dropFirst(2))] = v }
        if let why = ParameterGuard.rejection(of: updated, for: potential) { return why }
        if let (k, _) = rValues.sorted(by: { $0.key < $1.key }).first(where: { !$0.value.scalar.isFinite }) {
            return "relaxer hyperparameter \(k.dropFirst(2)) became non-finite"
        }
        state.adam = adam
        for (k, v) in updated { potential.parameters[k] = v }
        // Step sizes and the like must stay positive.
        try? state.relaxer.set(Dictionary(uniqueKeysWithValues: rValues.map { (String($0.key.dropFirst(2)), Swift.max($0.value.scalar, 1e-8)) }))
        return nil
    }

    /// Counts an optimizer step not taken; stops the run (`TrainingStopped`) after `maxRejectedSteps` in a row.
    func reject(_ reason: String, epoch: Int, report: (FineTuneEvent) -> Void) throws {
        state.skippedSteps += 1
        report(.rejectedStep(epoch: epoch + 1, reason: reason))
        var r = state.rejections ?? UpdateRejections()
        defer { state.rejections = r }
        try r.reject(reason, limit: config.maxRejectedSteps ?? ParameterGuard.defaultMaxRejectedSteps,
                     kept: "\(run.lastModelPath) (epoch \(epoch)) and \(run.bestModelPath) (epoch \(state.bestEpoch ?? 0))")
    }

    /// One epoch: shuffled mini-batches, validation, best/last model files, checkpoint, metrics row.
    func trainEpoch(report: (FineTuneEvent) -> Void) throws -> FineTuneEpochMetrics {
        let epoch = state.nextEpoch
        let t0 = Date()
        var order = Array(0..<train.count)
        state.rng.shuffle(&order)
        var losses: [Double] = []
        var forceSquares = 0.0, forceComponents = 0
        var lastNorm = 0.0
        var failed = 0
        var fixedPointFailures = 0
        var b = 0
        while b < order.count {
            let batch = order[b..<Swift.min(b + config.batchSize, order.count)].map { train[$0] }
            b += config.batchSize
            // The relaxer as trained so far: its hyperparameters change with every step.
            var g = stepGradient(batch, settings: settings(), forceSquares: &forceSquares, forceComponents: &forceComponents)
            // A failed example is counted and left out; the train ΔQ is over the examples that passed.
            losses += g.losses.filter(\.isFinite)
            failed += g.failures.count
            for (k, f) in g.failures { report(.failedExample(epoch: epoch + 1, name: batch[k].displayName, failure: f)) }
            fixedPointFailures += g.fixedPointFailures
            let done = Swift.min(b, order.count)
            report(.batch(epoch: epoch + 1, done: done, total: order.count, eta: Date().timeIntervalSince(t0) / Double(done) * Double(order.count - done)))
            guard g.isFinite else {
                try reject(g.failures.count == batch.count ? "every example of the batch failed" : "the gradient is not finite", epoch: epoch, report: report)
                continue
            }
            let norm = clipGradients(&g.gradients, maxNorm: config.clipNorm)
            if let why = applyStep(g.gradients) {
                try reject(why, epoch: epoch, report: report)
                continue
            }
            lastNorm = norm
            state.rejections?.accept()
        }
        let tr = ErrorSummary(losses)
        var metrics = FineTuneEpochMetrics(epoch: epoch + 1, trainDQMean: tr.mean, trainDQMedian: tr.median, valDQMean: nil, valDQMedian: nil,
                                   gradientNorm: lastNorm, learningRate: state.schedule.rate, relaxer: state.relaxer.hyperparameters.dictionary,
                                   skippedSteps: state.skippedSteps, seconds: 0)
        if forceComponents > 0 { metrics.trainForceRMSE = (forceSquares / Double(forceComponents)).squareRoot() }
        metrics.failedExamples = failed
        state.failedExamples = (state.failedExamples ?? 0) + failed
        if config.gradient.differentiatesMinimum { metrics.fixedPointFailures = fixedPointFailures }
        var monitored = tr.mean
        if !validation.isEmpty {
            let evals = try evaluate(validation)
            let va = ErrorSummary(evals.map(\.deltaQ))
            metrics.valDQMean = va.mean
            metrics.valDQMedian = va.median
            metrics.failedValidation = evals.filter { $0.failure != nil }.count
            // A model whose validation relaxations fail is never the best one.
            monitored = metrics.failedValidation! > 0 ? .infinity : va.mean
        }
        if monitored < (state.bestValidation ?? .infinity) {
            state.bestValidation = monitored
            state.bestEpoch = epoch + 1
            state.epochsWithoutImprovement = 0
            try saveModel(to: "best.safetensors", epoch: epoch + 1)
        } else {
            state.epochsWithoutImprovement += 1
            if config.patience > 0 && state.epochsWithoutImprovement >= config.patience { state.stoppedEarly = true }
        }
        state.schedule.endEpoch(epoch, monitored: monitored)
        metrics.seconds = Date().timeIntervalSince(t0)
        state.seconds += metrics.seconds
        state.history.append(metrics)
        state.nextEpoch = epoch + 1
        try saveModel(to: "last.safetensors", epoch: epoch + 1)
        try saveCheckpoint()
        try writeMetricsCSV()
        return metrics
    }

    /// `config.forceFrames` frames (8 by default) drawn without replacement from the force frames, by the run's
    /// seeded generator (so a resumed run draws the same ones).
    func drawForceFrames() -> [Structure] {
        let k = Swift.min(config.forceFrames ?? 8, forceFrames.count)
        var idx = Array(forceFrames.indices)
        // Partial Fisher–Yates: the first k entries are a uniform sample.
        for i in 0..<k {
            let j = i + state.rng.int(below: idx.count - i)
            idx.swapAt(i, j)
        }
        return idx.prefix(k).map { forceFrames[$0] }
    }

    /// metrics.csv from the state's history (the state is the record: a resumed run rewrites it whole).
    func writeMetricsCSV() throws {
        let hyperNames = state.relaxer.hyperparameters.names.sorted()
        // The force term's column only when it is on, so that the file of a plain run keeps its layout.
        let withForces = (config.forceWeight ?? 0) > 0
        let withFixedPoint = config.gradient.differentiatesMinimum
        var lines = ["epoch,train_dq_mean,train_dq_median,val_dq_mean,val_dq_median,grad_norm,lr," + hyperNames.map { "relaxer_" + $0 }.joined(separator: ",")
            + ",skipped_steps,failed_examples,failed_validation,seconds" + (withForces ? ",train_force_rmse" : "") + (withFixedPoint ? ",fixed_point_failures" : "")]
        func f(_ x: Double?) -> String { x.map { "\($0)" } ?? "" }
        for m in state.history {
            lines.append(["\(m.epoch)", f(m.trainDQMean), f(m.trainDQMedian), f(m.valDQMean), f(m.valDQMedian), f(m.gradientNorm), f(m.learningRate)]
                .joined(separator: ",") + "," + hyperNames.map { f(m.relaxer[$0]) }.joined(separator: ",") + ",\(m.skippedSteps),"
                + "\(m.failedExamples.map(String.init) ?? ""),\(m.failedValidation.map(String.init) ?? ""),\(f(m.seconds))"
                + (withForces ? "," + f(m.trainForceRMSE) : "") + (withFixedPoint ? "," + (m.fixedPointFailures.map { "\($0)" } ?? "") : ""))
        }
        if communicator.writesFiles { try run.writeMetrics(lines) }
    }

    /// ΔQ before (start of the run) and after (best model, with the relaxer settings saved with it), and the
    /// run's cost; written to RUN_DIR/summary.json.
    public func summary() throws -> FineTuneSummary {
        let (best, meta) = try communicator.loadModelFromRankZero(bestModelPath)
        let proto = RelaxationProtocol.fromMetadata(meta) ?? relaxationProtocol
        let tr = ErrorSummary(try evaluate(train, protocol: proto, potential: best).map(\.deltaQ))
        var vaMean: Double? = nil, vaMedian: Double? = nil
        if !validation.isEmpty {
            let va = ErrorSummary(try evaluate(validation, protocol: proto, potential: best).map(\.deltaQ))
            vaMean = va.mean
            vaMedian = va.median
        }
        var params: [String: [Double]]? = nil
        if best.parameterCount <= 64 {
            var d: [String: [Double]] = [:]
            for (k, v) in best.parameters { d[k] = v.array }
            params = d
        }
        let cost = session.map { communicator.jobCost($0) } ?? RunDirectory.Cost()
        if let _ = session, communicator.writesFiles { try run.writeJSON(cost, to: "cost.json", pretty: true) }
        let s = FineTuneSummary(train_dq_mean_before: state.before["train_dq_mean"] ?? .nan, train_dq_mean_after: tr.mean,
                                val_dq_mean_before: state.before["val_dq_mean"], val_dq_mean_after: vaMean,
                                val_dq_median_before: state.before["val_dq_median"], val_dq_median_after: vaMedian,
                                epochs: state.history.count, best_epoch: state.bestEpoch, seconds: state.seconds,
                                peak_rss_mb: cost.peakRSSMB, wall_seconds: cost.wallSeconds, cpu_seconds: cost.cpuSeconds, sessions: cost.sessions,
                                skipped_steps: state.skippedSteps, failed_examples: state.failedExamples, stopped_early: state.stoppedEarly,
                                relaxer_hyperparameters: proto.relaxer.hyperparameters.dictionary, parameters: params)
        if communicator.writesFiles { try run.writeJSON(s, to: "summary.json", pretty: true) }
        return s
    }
}
