import Dynamics
import Foundation

/// Settings of a StABlE run (Raja et al., "Stability-aware training of machine learning force fields with
/// differentiable Boltzmann estimators", TMLR 2025), saved as RUN_DIR/config.json.
public struct StableConfig: RunConfiguration, Sendable, Equatable {
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
