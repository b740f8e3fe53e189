import Foundation
import Relax

/// Everything needed to rerun a fine-tuning (RUN_DIR/config.json), as typed values: the relaxer with its
/// starting hyperparameters and the gradient mode are parsed once, where the options are read.
public struct FineTuneConfig: Sendable {
    public var pretrained: String
    public var data: [String] = []
    /// Frames of each data file used (a Python index or slice; nil: all).
    public var frames: String? = nil
    public var initial: String?
    public var target: String?
    /// The relaxer and its starting hyperparameters.
    public var relaxer: any Relaxer = ForceFollowing()
    public var steps: Int = 50
    public var gradient: GradientMode = .checkpoint(every: nil)
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
    public var forceData: [String]? = nil
    public var forceWeight: Double? = nil
    public var forceFrames: Int? = nil
    /// Structures (of the training, validation and force data) with elements the model does not know are
    /// left out instead of being an error.
    public var skipUnknownElements = false

    public init(pretrained: String) { self.pretrained = pretrained }

    /// The relaxation the training unrolls (T steps, perhaps stopped early).
    public var relaxation: RelaxationProtocol { RelaxationProtocol(relaxer: relaxer, steps: steps, stopFmax: stopFmax) }
}

/// config.json keeps the relaxer as its name ("relaxer") and hyperparameters ("relaxerParameters") and the
/// gradient mode as its command-line form, so that run directories and sweep tables read as before.
extension FineTuneConfig: RunConfiguration {
    enum CodingKeys: String, CodingKey {
        case pretrained, data, frames, initial, target, relaxer, relaxerParameters, steps, gradient, trainRelaxer, trainParameters, epochs
        case learningRate, relaxerLearningRate, batchSize, validationFraction, validationData, seed, schedule, clipNorm, weightDecay
        case patience, stopFmax, threads, relativeLearningRate, energyWeight, forceData, forceWeight, forceFrames, skipUnknownElements
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        func get<T: Decodable>(_ k: CodingKeys, _ fallback: T) throws -> T { try c.decodeIfPresent(T.self, forKey: k) ?? fallback }
        pretrained = try c.decode(String.self, forKey: .pretrained)
        data = try get(.data, [])
        frames = try c.decodeIfPresent(String.self, forKey: .frames)
        initial = try c.decodeIfPresent(String.self, forKey: .initial)
        target = try c.decodeIfPresent(String.self, forKey: .target)
        let name = try get(.relaxer, "frame")
        do { relaxer = try RelaxerFactory.make(name, overrides: try get(.relaxerParameters, [:])) } catch let e as RelaxerError {
            throw DecodingError.dataCorruptedError(forKey: .relaxer, in: c, debugDescription: e.message)
        }
        steps = try get(.steps, 50)
        gradient = try get(.gradient, .checkpoint(every: nil))
        trainRelaxer = try get(.trainRelaxer, [])
        trainParameters = try c.decodeIfPresent([String].self, forKey: .trainParameters)
        epochs = try get(.epochs, 30)
        learningRate = try get(.learningRate, 1e-3)
        relaxerLearningRate = try c.decodeIfPresent(Double.self, forKey: .relaxerLearningRate)
        batchSize = try get(.batchSize, 4)
        validationFraction = try get(.validationFraction, 0.2)
        validationData = try c.decodeIfPresent([String].self, forKey: .validationData)
        seed = try get(.seed, 0)
        schedule = try get(.schedule, "constant")
        clipNorm = try get(.clipNorm, 0)
        weightDecay = try get(.weightDecay, 0)
        patience = try get(.patience, 0)
        stopFmax = try c.decodeIfPresent(Double.self, forKey: .stopFmax)
        threads = try get(.threads, 1)
        relativeLearningRate = try get(.relativeLearningRate, false)
        energyWeight = try get(.energyWeight, 0)
        forceData = try c.decodeIfPresent([String].self, forKey: .forceData)
        forceWeight = try c.decodeIfPresent(Double.self, forKey: .forceWeight)
        forceFrames = try c.decodeIfPresent(Int.self, forKey: .forceFrames)
        skipUnknownElements = try get(.skipUnknownElements, false)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(pretrained, forKey: .pretrained)
        try c.encode(data, forKey: .data)
        try c.encodeIfPresent(frames, forKey: .frames)
        try c.encodeIfPresent(initial, forKey: .initial)
        try c.encodeIfPresent(target, forKey: .target)
        try c.encode(relaxer.name, forKey: .relaxer)
        try c.encode(relaxer.hyperparameters.dictionary, forKey: .relaxerParameters)
        try c.encode(steps, forKey: .steps)
        try c.encode(gradient, forKey: .gradient)
        try c.encode(trainRelaxer, forKey: .trainRelaxer)
        try c.encodeIfPresent(trainParameters, forKey: .trainParameters)
        try c.encode(epochs, forKey: .epochs)
        try c.encode(learningRate, forKey: .learningRate)
        try c.encodeIfPresent(relaxerLearningRate, forKey: .relaxerLearningRate)
        try c.encode(batchSize, forKey: .batchSize)
        try c.encode(validationFraction, forKey: .validationFraction)
        try c.encodeIfPresent(validationData, forKey: .validationData)
        try c.encode(seed, forKey: .seed)
        try c.encode(schedule, forKey: .schedule)
        try c.encode(clipNorm, forKey: .clipNorm)
        try c.encode(weightDecay, forKey: .weightDecay)
        try c.encode(patience, forKey: .patience)
        try c.encodeIfPresent(stopFmax, forKey: .stopFmax)
        try c.encode(threads, forKey: .threads)
        try c.encode(relativeLearningRate, forKey: .relativeLearningRate)
        try c.encode(energyWeight, forKey: .energyWeight)
        try c.encodeIfPresent(forceData, forKey: .forceData)
        try c.encodeIfPresent(forceWeight, forKey: .forceWeight)
        try c.encodeIfPresent(forceFrames, forKey: .forceFrames)
        try c.encode(skipUnknownElements, forKey: .skipUnknownElements)
    }
}
