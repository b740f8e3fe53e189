import Foundation

/// Settings of a pretraining run (saved as RUN_DIR/config.json; a resumed run reads them back).
public struct PretrainConfig: RunConfiguration, Sendable, Equatable {
    public var model = "so3krates"
    public var features: Int?
    public var layers: Int?
    public var heads: Int?
    public var maxDegree: Int?
    public var cutoff = 5.0
    public var radialBasis = 32
    /// Loss weights, renormalised to sum 1 (mlff convention): total-energy MSE (eV²), force-component MSE
    /// ((eV/Å)²), stress-component MSE ((eV/Å³)², frames with a stress label only).
    public var energyWeight = 0.01
    public var forceWeight = 0.99
    public var stressWeight = 0.0
    public var epochs = 100
    public var learningRate = 1e-3
    /// "plateau" (×0.5 after `schedulePatience` epochs without validation improvement), "cosine", "constant".
    public var schedule = "plateau"
    public var schedulePatience = 5
    /// Structures per mini-batch.
    public var batch = 4
    /// Structures per graph within a mini-batch (nil: 1): the unit whose gradients are summed in order, and the
    /// unit data-parallel ranks share out, so results do not depend on the rank count.
    public var microBatch: Int? = nil
    public var seed: UInt64 = 1
    /// Validation frames taken from the training files when no validation file is given.
    public var valFraction = 0.1
    /// Early stopping: epochs without a better validation loss.
    public var patience = 25
    /// Global gradient-norm clipping (0: off).
    public var clipNorm = 0.0
    public var dataFiles: [String] = []
    /// Frames of each data file used (a Python index or slice; nil: all).
    public var frames: String? = nil
    /// Frames with elements the starting model does not know are left out instead of being an error (nil:
    /// false; optional so that config.json files written before it existed still read).
    public var skipUnknownElements: Bool? = nil
    public var valFiles: [String] = []
    public var testFiles: [String] = []
    public var command = ""
    /// Warm start: a model file (so3krates, schnet or chgnet) whose architecture and weights training starts
    /// from, instead of a new model (conventional fine-tuning on energies and forces).
    public var initModel: String? = nil
    /// With `initModel`: shift the per-element reference energies by a least-squares fit of the training
    /// energies' residuals before training (needed when the data's energy zero differs from the model's, e.g.
    /// another DFT code); without it the model's reference energies are kept.
    public var refitReferenceEnergies: Bool? = nil
    /// Optimizer updates rejected in a row (non-finite loss or gradient, parameters the guard refuses) after
    /// which training stops with the last good model (nil: `ParameterGuard.defaultMaxRejectedSteps`; 0: never).
    public var maxRejectedSteps: Int? = nil

    public init() {}

    public func validate() throws {
        func fail(_ s: String) throws -> Never { throw PretrainError(message: s) }
        if initModel == nil && !["so3krates", "schnet"].contains(model) { try fail("unknown model '\(model)' (so3krates, schnet)") }
        if initModel != nil && (features != nil || layers != nil || heads != nil || maxDegree != nil) {
            try fail("the architecture comes from the initial model; leave out features, layers, heads and max-degree")
        }
        if initModel == nil && refitReferenceEnergies == true { try fail("refitting reference energies needs an initial model") }
        if dataFiles.isEmpty { try fail("no training data file") }
        if energyWeight < 0 || forceWeight < 0 || stressWeight < 0 || energyWeight + forceWeight + stressWeight <= 0 {
            try fail("loss weights must be ≥ 0 and not all 0")
        }
        if let m = microBatch, m < 1 { try fail("the micro-batch must be positive") }
        if epochs < 1 || batch < 1 || patience < 0 { try fail("epochs and batch must be positive, patience 0 (never stop early) or more") }
        if !(learningRate > 0 && learningRate.isFinite) { try fail("learning rate must be positive") }
        if schedulePatience < 0 || (maxRejectedSteps ?? 0) < 0 || radialBasis < 1 { try fail("schedule patience and max rejected steps must be ≥ 0, radial basis positive") }
        if !(cutoff > 0 && cutoff.isFinite) || !(clipNorm >= 0 && clipNorm.isFinite) { try fail("cutoff must be positive and clip norm ≥ 0") }
        if [features, layers, heads, maxDegree].contains(where: { ($0 ?? 1) < 0 }) { try fail("features, layers, heads and max degree must be positive") }
        if valFiles.isEmpty && !(valFraction > 0 && valFraction < 1) { try fail("validation fraction must be in (0, 1) when no validation file is given") }
        if !["plateau", "cosine", "constant"].contains(schedule) { try fail("unknown schedule '\(schedule)' (plateau, cosine, constant)") }
    }
}
