import Atoms
import Foundation
import Loss
import Potentials
import Relax
import Tape

/// Everything needed to rerun a fine-tuning (written to RUN_DIR/config.json).
public struct FineTuneConfig: Codable, Sendable {
    public var pretrained: String
    public var data: [String] = []
    public var initial: String?
    public var target: String?
    public var relaxer: String = "frame"
    public var relaxerParameters: [String: Double] = [:]
    public var steps: Int = 50
    public var gradient: String = "checkpoint"
    public var trainRelaxer: [String] = []
    /// Potential parameters to train (nil: all).
    public var trainParameters: [String]? = nil
    public var epochs: Int = 30
    public var learningRate: Double = 1e-3
    /// Learning rate of the relaxer hyperparameters (nil: the same as the potential's).
    public var relaxerLearningRate: Double? = nil
    public var batchSize: Int = 4
    public var validationFraction: Double = 0.2
    /// Validation structure files (used instead of a random fraction of the training data when given).
    public var validationData: [String]? = nil
    public var seed: UInt64 = 0
    public var schedule: String = "constant"
    public var clipNorm: Double = 0
    public var weightDecay: Double = 0
    /// Early stopping: epochs without validation improvement before stopping (0: never).
    public var patience: Int = 0
    public var stopFmax: Double? = nil
    public var threads: Int = 1
    /// Learning rate relative to each parameter's initial RMS magnitude (natural for classical potentials,
    /// whose parameters have different units and scales) instead of absolute.
    public var relativeLearningRate = false
    /// Weight of the per-atom energy error at the relaxed structure in the loss (needs energy_relaxed).
    public var energyWeight: Double = 0
    /// Frames with DFT forces (e.g. the training structures' DFT relaxation steps) for a force-matching term
    /// added to every optimizer step: `forceWeight · mean (F − F_ref)²` over `forceFrames` frames drawn at
    /// random, a regulariser against forgetting in the spirit of StABlE's QM term (Raja et al., TMLR 2025).
    /// Optional so that config.json files of earlier runs still decode.
    public var forceData: [String]? = nil
    public var forceWeight: Double? = nil
    public var forceFrames: Int? = nil

    public init(pretrained: String) { self.pretrained = pretrained }
}

/// One row of metrics.csv.
public struct EpochMetrics: Codable, Sendable {
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
}

/// Resumable state of a run (RUN_DIR/state.json); the weights are in RUN_DIR/last.safetensors.
public struct TrainerState: Codable, Sendable {
    public var nextEpoch = 0
    public var adam: Adam
    public var schedule: ScheduleState
    public var rng: SeededGenerator
    public var hyper: [String: Double]
    public var bestValidation: Double?
    public var bestEpoch: Int?
    public var epochsWithoutImprovement = 0
    public var skippedSteps = 0
    public var history: [EpochMetrics] = []
    public var before: [String: Double] = [:]
    public var seconds = 0.0
    public var stoppedEarly = false
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
    /// Peak resident set size of the process that wrote the summary (MB).
    public var peak_rss_mb: Double
    /// Wall and CPU time (user + system) of that process, set by the command (includes the evaluations).
    public var wall_seconds: Double? = nil
    public var cpu_seconds: Double? = nil
    public var skipped_steps: Int
    public var stopped_early: Bool
    public var relaxer_hyperparameters: [String: Double]
    public var parameters: [String: [Double]]?
}

/// Fine-tuning by backpropagation through relaxations: Adam on the potential's parameters (and chosen relaxer
/// hyperparameters), mini-batches of examples, a seeded train/validation split, early stopping on validation
/// ΔQ, best and last checkpoints, exact resume.
public final class FineTuner {
    public let config: FineTuneConfig
    public let runDirectory: String
    public private(set) var potential: any Potential
    public let train: [RelaxationExample]
    public let validation: [RelaxationExample]
    /// Frames of the force-matching term (empty without it).
    public let forceFrames: [Structure]
    public private(set) var state: TrainerState
    let baseRelaxer: any Relaxer
    let trainable: [String]

    /// `validationExamples`: a separate validation set (e.g. the val split of a dataset); nil takes a seeded
    /// fraction `config.validationFraction` of `examples`. `forceFrames`: the frames of `config.forceData`.
    public init(config: FineTuneConfig, potential: any Potential, examples: [RelaxationExample], validationExamples: [RelaxationExample]? = nil,
                forceFrames: [Structure] = [], runDirectory: String) throws {
        self.config = config
        self.forceFrames = forceFrames
        if (config.forceWeight ?? 0) > 0 {
            guard !forceFrames.isEmpty else { throw DatasetError(message: "a force weight needs frames with forces (forceData)") }
            for (k, f) in forceFrames.enumerated() where f.forces == nil {
                throw DatasetError(message: "force frame \(k) has no forces")
            }
        }
        self.runDirectory = runDirectory
        self.potential = potential
        baseRelaxer = try RelaxerFactory.make(config.relaxer, overrides: config.relaxerParameters)
        for name in config.trainRelaxer where baseRelaxer.hyperparameters[name] == nil {
            throw DatasetError(message: "relaxer \(config.relaxer) has no hyperparameter '\(name)' (has: \(baseRelaxer.hyperparameters.keys.joined(separator: ", ")))")
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
        var hyper: [String: Double] = [:]
        for (k, v) in baseRelaxer.hyperparameters { hyper[k] = v }
        var adam = Adam(learningRate: config.learningRate, weightDecay: config.weightDecay)
        if config.relativeLearningRate {
            for name in trainable {
                let t = potential.parameters[name]!
                adam.scales["p/" + name] = Swift.max((t.dot(t) / Double(Swift.max(t.count, 1))).squareRoot(), 1e-12)
            }
            for name in config.trainRelaxer { adam.scales["r/" + name] = Swift.max(Swift.abs(hyper[name]!), 1e-12) }
        }
        state = TrainerState(adam: adam,
                             schedule: ScheduleState(try LearningRateSchedule.parse(config.schedule, epochs: config.epochs), baseRate: config.learningRate),
                             rng: SeededGenerator(seed: config.seed &+ 0x5EED), hyper: hyper)
    }

    var statePath: String { runDirectory + "/state.json" }
    var lastModelPath: String { runDirectory + "/last.safetensors" }
    public var bestModelPath: String { runDirectory + "/best.safetensors" }

    /// Restores the state and weights saved by an interrupted run.
    public func resume() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: statePath))
        let d = JSONDecoder()
        d.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        state = try d.decode(TrainerState.self, from: data)
        let (p, _) = try ModelFile.load(lastModelPath)
        potential.parameters = p.parameters
    }

    func settings(mode: GradientMode) throws -> BPTTSettings {
        var r = baseRelaxer
        for (k, v) in state.hyper { r.hyperparameters[k] = v }
        var s = BPTTSettings(relaxer: r, steps: config.steps)
        s.mode = mode
        s.stopFmax = config.stopFmax
        s.trainableHyper = config.trainRelaxer
        s.energyWeight = config.energyWeight
        return s
    }

    public var relaxationProtocol: RelaxationProtocol {
        RelaxationProtocol(relaxer: config.relaxer, hyperparameters: state.hyper, steps: config.steps, stopFmax: config.stopFmax)
    }

    func evaluate(_ examples: [RelaxationExample], protocol p: RelaxationProtocol? = nil, potential pot: (any Potential)? = nil) throws -> [ExampleEvaluation] {
        try evaluateRelaxations(examples, potential: pot ?? potential, protocol: p ?? relaxationProtocol, threads: config.threads)
    }

    func saveModel(to path: String, epoch: Int) throws {
        try ModelFile.save(potential, to: path, extraMetadata: [
            "relaxation_protocol": relaxationProtocol.metadataValue,
            "training": "relaxft finetune (BPTT) from \(ModelFile.recordedArgument(config.pretrained)), epoch \(epoch), gradient \(config.gradient), relaxer \(config.relaxer), T = \(config.steps)",
        ], derived: true)
    }

    func saveState() throws {
        let e = JSONEncoder.sorted
        e.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        try AtomicFile.write(try e.encode(state), to: statePath)
    }

    /// Runs (or continues) the training; `progress` gets a line per epoch. `stopAfterEpoch` ends the run early
    /// at that epoch, as an interruption would (state and checkpoints are saved after every epoch).
    public func run(stopAfterEpoch: Int? = nil, progress: (EpochMetrics, _ eta: Double) -> Void = { _, _ in }) throws -> FineTuneSummary {
        let mode = try GradientMode.parse(config.gradient)
        if state.nextEpoch == 0 && state.history.isEmpty {
            let tr = try evaluate(train), va = try evaluate(validation)
            state.before["train_dq_mean"] = ErrorSummary(tr.map(\.deltaQ)).mean
            if !va.isEmpty {
                let s = ErrorSummary(va.map(\.deltaQ))
                state.before["val_dq_mean"] = s.mean
                state.before["val_dq_median"] = s.median
                state.bestValidation = s.mean
            }
            state.bestEpoch = 0
            try saveModel(to: bestModelPath, epoch: 0)
            try saveModel(to: lastModelPath, epoch: 0)
            try saveState()
        }
        let relaxerRate = config.relaxerLearningRate ?? config.learningRate
        while state.nextEpoch < Swift.min(config.epochs, stopAfterEpoch ?? .max) && !state.stoppedEarly {
            let epoch = state.nextEpoch
            let t0 = Date()
            var order = Array(0..<train.count)
            state.rng.shuffle(&order)
            var losses: [Double] = []
            var forceSquares = 0.0, forceComponents = 0
            var lastNorm = 0.0
            let settings = try self.settings(mode: mode)
            var b = 0
            while b < order.count {
                let batch = Array(order[b..<Swift.min(b + config.batchSize, order.count)])
                b += config.batchSize
                let params = Dictionary(uniqueKeysWithValues: potential.parameters.map { ($0.key, $0.value) })
                let pot = potential
                let hyper = state.hyper
                let examples = batch.map { train[$0] }
                let results = parallelMap(examples.count, threads: config.threads) { i in
                    relaxationLossAndGradient(examples[i], potential: pot, parameters: params, hyper: hyper, settings: settings)
                }
                // Mean over the batch, accumulated in a fixed order.
                var grads: [String: Tensor] = [:]
                let w = 1 / Double(results.count)
                for r in results {
                    losses.append(r.loss)
                    for name in trainable { grads["p/" + name] = (grads["p/" + name] ?? Tensor.zeros(params[name]!.shape)) + r.gradients[name]! * w }
                    for name in config.trainRelaxer { grads["r/" + name] = (grads["r/" + name] ?? Tensor(scalar: 0)) + Tensor(scalar: r.hyperGradients[name]! * w) }
                }
                if let wf = config.forceWeight, wf > 0 {
                    let (_, g, m) = energyForceLossAndGradient(potential, trainable: trainable, frames: drawForceFrames(),
                                                               energyWeight: 0, forceWeight: 1)
                    for name in trainable { grads["p/" + name] = grads["p/" + name]! + g[name]! * wf }
                    forceSquares += m.forceRMSE * m.forceRMSE * Double(m.forceComponents)
                    forceComponents += m.forceComponents
                }
                guard grads.values.allSatisfy(\.isFinite), results.allSatisfy({ $0.loss.isFinite }) else {
                    state.skippedSteps += 1
                    continue
                }
                lastNorm = clipGradients(&grads, maxNorm: config.clipNorm)
                var values: [String: Tensor] = [:]
                for name in trainable { values["p/" + name] = params[name]! }
                for name in config.trainRelaxer { values["r/" + name] = Tensor(scalar: state.hyper[name]!) }
                // Relaxer hyperparameters move on their own learning rate: scale their gradients so that one
                // Adam (whose steps are ~lr per coordinate) serves both.
                state.adam.learningRate = state.schedule.rate
                var pValues = values.filter { $0.key.hasPrefix("p/") }, rValues = values.filter { $0.key.hasPrefix("r/") }
                let pGrads = grads.filter { $0.key.hasPrefix("p/") }, rGrads = grads.filter { $0.key.hasPrefix("r/") }
                state.adam.update(&pValues, gradients: pGrads)
                if !rValues.isEmpty {
                    let saved = state.adam.learningRate
                    state.adam.learningRate = relaxerRate * state.schedule.rate / config.learningRate
                    state.adam.update(&rValues, gradients: rGrads, countStep: false)
                    state.adam.learningRate = saved
                }
                for (k, v) in pValues { potential.parameters[String(k.dropFirst(2))] = v }
                // Step sizes and the like must stay positive.
                for (k, v) in rValues { state.hyper[String(k.dropFirst(2))] = Swift.max(v.scalar, 1e-8) }
            }
            let tr = ErrorSummary(losses)
            var metrics = EpochMetrics(epoch: epoch + 1, trainDQMean: tr.mean, trainDQMedian: tr.median, valDQMean: nil, valDQMedian: nil,
                                       gradientNorm: lastNorm, learningRate: state.schedule.rate, relaxer: state.hyper,
                                       skippedSteps: state.skippedSteps, seconds: 0)
            if forceComponents > 0 { metrics.trainForceRMSE = (forceSquares / Double(forceComponents)).squareRoot() }
            var monitored = tr.mean
            if !validation.isEmpty {
                let va = ErrorSummary(try evaluate(validation).map(\.deltaQ))
                metrics.valDQMean = va.mean
                metrics.valDQMedian = va.median
                monitored = va.mean
            }
            if monitored < (state.bestValidation ?? .infinity) {
                state.bestValidation = monitored
                state.bestEpoch = epoch + 1
                state.epochsWithoutImprovement = 0
                try saveModel(to: bestModelPath, epoch: epoch + 1)
            } else {
                state.epochsWithoutImprovement += 1
                if config.patience > 0 && state.epochsWithoutImprovement >= config.patience { state.stoppedEarly = true }
            }
            state.schedule.endEpoch(epoch, monitored: monitored)
            metrics.seconds = Date().timeIntervalSince(t0)
            state.seconds += metrics.seconds
            state.history.append(metrics)
            state.nextEpoch = epoch + 1
            try saveModel(to: lastModelPath, epoch: epoch + 1)
            try saveState()
            try writeMetricsCSV()
            let perEpoch = state.seconds / Double(state.history.count)
            progress(metrics, perEpoch * Double(config.epochs - state.nextEpoch))
        }
        return try summary()
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

    func writeMetricsCSV() throws {
        let hyperNames = state.hyper.keys.sorted()
        // The force term's column only when it is on, so that the file of a plain run keeps its layout.
        let withForces = (config.forceWeight ?? 0) > 0
        var lines = ["epoch,train_dq_mean,train_dq_median,val_dq_mean,val_dq_median,grad_norm,lr," + hyperNames.map { "relaxer_" + $0 }.joined(separator: ",")
            + ",skipped_steps,seconds" + (withForces ? ",train_force_rmse" : "")]
        func f(_ x: Double?) -> String { x.map { "\($0)" } ?? "" }
        for m in state.history {
            lines.append(["\(m.epoch)", f(m.trainDQMean), f(m.trainDQMedian), f(m.valDQMean), f(m.valDQMedian), f(m.gradientNorm), f(m.learningRate)]
                .joined(separator: ",") + "," + hyperNames.map { f(m.relaxer[$0]) }.joined(separator: ",") + ",\(m.skippedSteps),\(f(m.seconds))"
                + (withForces ? "," + f(m.trainForceRMSE) : ""))
        }
        try AtomicFile.write(lines.joined(separator: "\n") + "\n", to: runDirectory + "/metrics.csv")
    }

    /// ΔQ before (start of the run) and after (best checkpoint, with the relaxer settings saved with it).
    public func summary() throws -> FineTuneSummary {
        let (best, meta) = try ModelFile.load(bestModelPath)
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
        return FineTuneSummary(train_dq_mean_before: state.before["train_dq_mean"] ?? .nan, train_dq_mean_after: tr.mean,
                               val_dq_mean_before: state.before["val_dq_mean"], val_dq_mean_after: vaMean,
                               val_dq_median_before: state.before["val_dq_median"], val_dq_median_after: vaMedian,
                               epochs: state.history.count, best_epoch: state.bestEpoch, seconds: state.seconds,
                               peak_rss_mb: peakResidentMegabytes(), skipped_steps: state.skippedSteps,
                               stopped_early: state.stoppedEarly, relaxer_hyperparameters: proto.hyperparameters, parameters: params)
    }
}

/// Peak resident set size of this process (MB).
public func peakResidentMegabytes() -> Double {
    var ru = rusage()
    getrusage(RUSAGE_SELF.rawValue, &ru)
    return Double(ru.ru_maxrss) / 1024
}

/// CPU time (user + system, all threads) used by this process so far, in seconds: on a shared machine a
/// steadier measure of training cost than wall time.
public func processCPUSeconds() -> Double {
    var ru = rusage()
    getrusage(RUSAGE_SELF.rawValue, &ru)
    func s(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) * 1e-6 }
    return s(ru.ru_utime) + s(ru.ru_stime)
}
