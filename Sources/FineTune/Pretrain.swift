import Atoms
import Foundation
import Potentials
import Tape

/// Settings of a pretraining run (saved as RUN_DIR/config.json; a resumed run reads them back).
public struct PretrainOptions: RunConfiguration, Sendable, Equatable {
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
    /// Structures per mini-batch (batched into one graph).
    public var batch = 4
    public var seed: UInt64 = 1
    /// Validation frames taken from the training files when no validation file is given.
    public var valFraction = 0.1
    /// Early stopping: epochs without a better validation loss.
    public var patience = 25
    /// Global gradient-norm clipping (0: off).
    public var clipNorm = 0.0
    public var dataFiles: [String] = []
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
        if epochs < 1 || batch < 1 || patience < 1 { try fail("epochs, batch and patience must be positive") }
        if !(learningRate > 0 && learningRate.isFinite) { try fail("learning rate must be positive") }
        if schedulePatience < 0 || (maxRejectedSteps ?? 0) < 0 || radialBasis < 1 { try fail("schedule patience and max rejected steps must be ≥ 0, radial basis positive") }
        if !(cutoff > 0 && cutoff.isFinite) || !(clipNorm >= 0 && clipNorm.isFinite) { try fail("cutoff must be positive and clip norm ≥ 0") }
        if [features, layers, heads, maxDegree].contains(where: { ($0 ?? 1) < 0 }) { try fail("features, layers, heads and max degree must be positive") }
        if valFiles.isEmpty && !(valFraction > 0 && valFraction < 1) { try fail("validation fraction must be in (0, 1) when no validation file is given") }
        if !["plateau", "cosine", "constant"].contains(schedule) { try fail("unknown schedule '\(schedule)' (plateau, cosine, constant)") }
    }
}

public struct PretrainError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// Everything that changes during training besides the weights; with the weights it makes resuming exact.
struct PretrainState: Codable {
    var epoch = 0
    var adam: Adam
    var schedule: ScheduleState
    var rng: SeededGenerator
    var bestValLoss = Double.infinity
    var bestEpoch = 0
    var stopped = false
    var trainIndices: [Int]
    var valIndices: [Int]
    /// Rejected optimizer updates (nil in runs written before it existed).
    var rejections: UpdateRejections? = nil
}

/// What a pretraining run reports while it works (the command line formats it).
public enum PretrainEvent: Sendable {
    /// `batch` of `batches` done in (1-based) `epoch`; mean loss of the epoch so far; time to the end of the run.
    case batch(epoch: Int, batch: Int, batches: Int, loss: Double, learningRate: Double, eta: Double?)
    case epoch(PretrainEpochMetrics, improved: Bool)
    /// An optimizer step of (1-based) `epoch` was not taken, and why.
    case rejectedStep(epoch: Int, reason: String)
}

/// One epoch's row of metrics.csv.
public struct PretrainEpochMetrics: Sendable {
    public var epoch: Int
    public var learningRate: Double
    public var trainLoss: Double
    public var train: ForceFieldMetrics
    public var valLoss: Double
    public var val: ForceFieldMetrics
    public var seconds: Double

    static let header = "epoch,lr,train_loss,train_energy_mae_mev_atom,train_energy_rmse_mev_atom,train_force_mae,train_force_rmse,val_loss,val_energy_mae_mev_atom,val_energy_rmse_mev_atom,val_force_mae,val_force_rmse,seconds"

    var csv: String {
        func g(_ x: Double) -> String { String(format: "%.6g", x) }
        return [String(epoch), g(learningRate), g(trainLoss), g(train.energyMAE), g(train.energyRMSE), g(train.forceMAE), g(train.forceRMSE),
                g(valLoss), g(val.energyMAE), g(val.energyRMSE), g(val.forceMAE), g(val.forceRMSE), String(format: "%.1f", seconds)].joined(separator: ",")
    }
}

/// Pretraining of a neural potential on DFT energies, forces (and stresses): per-element reference energies
/// by least squares, then Adam on mini-batches with a learning-rate schedule and early stopping on the
/// validation loss. RUN_DIR holds config.json, checkpoint.safetensors (weights, optimizer and RNG state:
/// exact resume), last.safetensors and best.safetensors (model files with provenance) and metrics.csv.
///
/// Train metrics of an epoch are accumulated over its mini-batches with the weights before each update;
/// validation metrics use the weights at the end of the epoch.
public final class Pretrainer {
    public let options: PretrainOptions
    public var runDirectory: String { run.path }
    public internal(set) var model: any Potential
    var state: PretrainState
    let frames: [Structure]
    let lists: [NeighborList]
    /// The per-element reference energies, which are fitted, not trained.
    let referenceParameter: String
    let testSets: [(String, [Structure])]

    public let run: RunDirectory
    var session: RunDirectory.Session?
    static let checkpointKey = "pretrain_state"

    /// Reads frames from structure files (extended XYZ in practice); every frame needs an energy and forces.
    public static func loadFrames(_ paths: [String]) throws -> [Structure] { try loadNamedFrames(paths).frames }

    /// `loadFrames`, with each frame's name for messages ("train.xyz: frame 3").
    static func loadNamedFrames(_ paths: [String]) throws -> (frames: [Structure], names: [String]) {
        var out: [Structure] = [], names: [String] = []
        for p in paths {
            let fs = try StructureIO.read(p)
            do { try LabelledFrames.check(fs, source: p) } catch let e as DatasetError { throw PretrainError(message: e.message) }
            out += fs
            names += fs.indices.map { "\(p): frame \($0 + 1)" }
        }
        return (out, names)
    }

    /// A new run: reads the data, splits it, fits reference energies, initialises the model, then creates
    /// RUN_DIR (which must not hold a run) with config.json and the starting checkpoint.
    public convenience init(options: PretrainOptions, runDirectory: String) throws {
        try options.validate()
        if RunDirectory(runDirectory).exists("config.json") {
            throw PretrainError(message: "\(runDirectory) already holds a run (use --resume \(runDirectory), or another --out)")
        }
        // Data and model first: a run that cannot start leaves no directory behind.
        try self.init(options: options, run: RunDirectory(runDirectory), resuming: false)
        _ = try RunDirectory.create(runDirectory, config: options)
        try run.startMetrics(header: PretrainEpochMetrics.header)
        try saveCheckpoint()
    }

    /// Continues the run in RUN_DIR from its last completed epoch; `epochs` sets a new epoch budget (which
    /// re-targets a cosine schedule and is written into config.json).
    public static func resume(runDirectory: String, epochs: Int? = nil) throws -> Pretrainer {
        let (run, options) = try RunDirectory.resume(runDirectory, as: PretrainOptions.self, epochs: epochs)
        // Without a checkpoint the run was stopped between writing config.json and its first checkpoint: it
        // starts from the beginning, as the stored options say.
        let resuming = run.exists("checkpoint.safetensors")
        let p = try Pretrainer(options: options, run: run, resuming: resuming)
        try run.storeEpochs(options.epochs, as: PretrainOptions.self)
        if !resuming {
            try run.startMetrics(header: PretrainEpochMetrics.header)
            try p.saveCheckpoint()
        }
        return p
    }

    private init(options: PretrainOptions, run: RunDirectory, resuming: Bool) throws {
        self.options = options
        self.run = run
        let checkpoint: String? = resuming ? run.checkpointPath : nil
        let (train, trainNames) = try Self.loadNamedFrames(options.dataFiles)
        let (val, valNames) = try Self.loadNamedFrames(options.valFiles)
        testSets = try options.testFiles.map { ($0, try Self.loadFrames([$0])) }
        let all = train + val
        frames = all
        // Split: a validation file, or a seeded random fraction of the training frames.
        var trainIdx = Array(0..<train.count), valIdx = Array(train.count..<frames.count)
        if val.isEmpty {
            var split = SeededGenerator(seed: options.seed &+ 0x5EED)
            split.shuffle(&trainIdx)
            let nVal = Swift.max(1, Int((Double(train.count) * options.valFraction).rounded()))
            guard nVal < train.count else { throw PretrainError(message: "too few training frames (\(train.count)) for a validation split") }
            valIdx = Array(trainIdx[..<nVal]).sorted()
            trainIdx = Array(trainIdx[nVal...]).sorted()
        }
        let trainFrames = trainIdx.map { all[$0] }
        var m: any Potential
        if let path = options.initModel {
            m = try ModelFile.load(path).potential
            guard Self.referenceEnergies(of: m) != nil else {
                throw PretrainError(message: "\(path): a \(m.kind) model cannot be trained on energies and forces here (so3krates, schnet, chgnet, sevennet)")
            }
            let names = trainNames + valNames
            for (k, f) in all.enumerated() { try m.checkInput(f, name: names[k], potentialName: path) }
            if options.refitReferenceEnergies == true && checkpoint == nil { try Self.refitReferenceEnergies(&m, frames: trainFrames) }
        } else {
            let elements = Array(Set(all.flatMap(\.numbers))).sorted()
            let ref = try Self.referenceEnergies(trainFrames, elements: elements)
            let scale = Self.forceRMS(trainFrames)
            switch options.model {
            case "so3krates":
                var c = SO3krates.Config(cutoff: options.cutoff, radialBasis: options.radialBasis, elements: elements, energyScale: scale)
                if let f = options.features { c.features = f }
                if let l = options.layers { c.layers = l }
                if let h = options.heads { c.heads = h }
                if let d = options.maxDegree { c.maxDegree = d }
                m = try SO3krates(c, seed: options.seed)
            default:
                var c = SchNet.Config(cutoff: options.cutoff, radialBasis: options.radialBasis, elements: elements, energyScale: scale)
                if let f = options.features { c.features = f }
                if let l = options.layers { c.layers = l }
                m = try SchNet(c, seed: options.seed)
            }
            m.parameters["atomic_energies"] = Tensor(ref)
        }
        referenceParameter = Self.referenceEnergies(of: m)!.name
        let cutoff = m.cutoff
        // Elements, positions and list sizes checked before any list is built.
        if options.initModel == nil {
            let names = trainNames + valNames
            for (k, f) in all.enumerated() { try m.checkInput(f, name: names[k]) }
        }
        lists = all.map { NeighborList.build($0, cutoff: cutoff) }
        let sched: LearningRateSchedule
        switch options.schedule {
        case "cosine": sched = .cosine(epochs: options.epochs, minFactor: 0.01)
        case "constant": sched = .constant
        default: sched = .reduceOnPlateau(factor: 0.5, patience: options.schedulePatience, minLearningRate: 1e-6)
        }
        state = PretrainState(adam: Adam(learningRate: options.learningRate), schedule: ScheduleState(sched, baseRate: options.learningRate),
                              rng: SeededGenerator(seed: options.seed), trainIndices: trainIdx, valIndices: valIdx)
        model = m
        if let ck = checkpoint, let (tensors, saved) = try run.readCheckpoint(PretrainState.self, key: Self.checkpointKey) {
            guard saved.trainIndices == trainIdx && saved.valIndices == valIdx else {
                throw PretrainError(message: "\(ck): the data files no longer give the split the run was started with")
            }
            try RunDirectory.install(tensors, into: &model, file: ck)
            state = saved
            try validateState()
            // A new epoch budget on resume re-targets a cosine schedule to it (the only state that depends
            // on the budget); without one the run continues bit for bit.
            if case .cosine(let old, let minFactor) = state.schedule.schedule, old != options.epochs {
                state.schedule.schedule = .cosine(epochs: options.epochs, minFactor: minFactor)
                state.schedule.endEpoch(state.epoch - 1, monitored: state.bestValLoss)
            }
            try run.truncateMetrics(after: saved.epoch, header: PretrainEpochMetrics.header)
        }
    }

    /// A state read from disk must be one this run could have written.
    func validateState() throws {
        let file = run.checkpointPath
        func fail(_ what: String) throws -> Never { throw PretrainError(message: "\(file): \(what) (not a state this run wrote)") }
        if state.epoch < 0 || state.bestEpoch < 0 || state.bestEpoch > state.epoch { try fail("epoch \(state.epoch), best epoch \(state.bestEpoch)") }
        if state.bestValLoss.isNaN { try fail("best validation loss NaN") }
        var sizes: [String: Int] = [:]
        for (k, v) in model.parameters where k != referenceParameter { sizes[k] = v.count }
        try RunDirectory.validate(state.adam, sizes: sizes, file: file)
        if let why = ParameterGuard.rejection(of: Dictionary(uniqueKeysWithValues: model.parameters.map { ($0.key, $0.value) }), for: model) { try fail(why) }
    }

    /// Per-element reference energies e_Z minimising Σ_s (E_s − Σ_Z n_sZ e_Z)² (normal equations; a tiny
    /// ridge keeps collinear compositions solvable).
    static func referenceEnergies(_ frames: [Structure], elements: [Int]) throws -> [Double] {
        let k = elements.count
        var ata = Tensor.zeros([k, k]), atb = Tensor.zeros([k])
        for f in frames {
            var n = [Double](repeating: 0, count: k)
            for z in f.numbers { n[elements.firstIndex(of: z)!] += 1 }
            for a in 0..<k {
                atb[a] += n[a] * f.energy!
                for b in 0..<k { ata[a, b] += n[a] * n[b] }
            }
        }
        let trace = (0..<k).reduce(0.0) { $0 + ata[$1, $1] }
        for a in 0..<k { ata[a, a] += 1e-12 * trace }
        return try Tensor.solve(ata, atb).array
    }

    static func forceRMS(_ frames: [Structure]) -> Double {
        var sq = 0.0, n = 0
        for f in frames { let t = f.forces!; sq += t.dot(t); n += t.count }
        let r = n > 0 ? (sq / Double(n)).squareRoot() : 1
        return r > 0 ? r : 1
    }

    /// The per-element reference-energy parameter of a model and the index of element Z in it (nil for kinds
    /// that cannot be trained here).
    static func referenceEnergies(of m: any Potential) -> (name: String, index: (Int) -> Int?)? {
        switch m.kind {
        case "so3krates", "schnet":
            // In the model's element order (the metadata lists them in that order).
            return ("atomic_energies", elementIndex(m))
        case "sevennet":
            // SpeciesWiseRescale's shift, in the model's species order (the metadata's elements).
            return ("rescale_atomic_energy.shift", elementIndex(m))
        case "chgnet":
            // AtomRef: one weight per atomic number, Z − 1.
            return ("composition_model.fc.weight", { z in z >= 1 ? z - 1 : nil })
        default:
            return nil
        }
    }

    /// Position of element Z in the model's element list (the metadata's `elements`, in model order).
    static func elementIndex(_ m: any Potential) -> (Int) -> Int? {
        let els = (m.metadata["elements"] ?? "").split(separator: ",").compactMap { Elements.symbols.firstIndex(of: String($0).trimmingCharacters(in: .whitespaces)) }
        return { z in els.firstIndex(of: z) }
    }

    /// Shifts a model's per-element reference energies by the least-squares fit of E_ref − E_model over
    /// `frames` (forces are unchanged). A warm start on data from another DFT code would otherwise spend its
    /// first epochs, and its energy loss, on a constant per-atom offset.
    static func refitReferenceEnergies(_ m: inout any Potential, frames: [Structure]) throws {
        guard let (name, index) = referenceEnergies(of: m) else { return }
        let elements = Array(Set(frames.flatMap(\.numbers))).sorted()
        var residual = frames
        var start = 0
        while start < frames.count {
            let chunk = Array(frames[start..<Swift.min(start + 8, frames.count)])
            let sys = AtomicSystem(structures: chunk, lists: chunk.map { NeighborList.build($0, cutoff: m.cutoff) })
            let e = m.evaluate(sys, positions: Tensor.concatenate(chunk.map(\.positions), axis: 0),
                               cells: Tensor.concatenate(chunk.map { $0.cell.reshaped([1, 3, 3]) }, axis: 0)).energies
            for k in chunk.indices { residual[start + k].energy = chunk[k].energy! - e[flat: k] }
            start += 8
        }
        let shift = try referenceEnergies(residual, elements: elements)
        var w = m.parameters[name]!
        for (k, z) in elements.enumerated() {
            guard let i = index(z), i < w.count else { throw PretrainError(message: "the model has no reference energy for \(Elements.symbols[z])") }
            w[flat: i] += shift[k]
        }
        m.parameters[name] = w
    }

    /// Batched graph of frames `idx`: system, positions, cells.
    func batch(_ idx: [Int]) -> (AtomicSystem, Tensor, Tensor) {
        let sys = AtomicSystem(structures: idx.map { frames[$0] }, lists: idx.map { lists[$0] })
        let x = Tensor.concatenate(idx.map { frames[$0].positions }, axis: 0)
        let c = Tensor.concatenate(idx.map { frames[$0].cell.reshaped([1, 3, 3]) }, axis: 0)
        return (sys, x, c)
    }

    var lossWeights: (e: Double, f: Double, s: Double) {
        let t = options.energyWeight + options.forceWeight + options.stressWeight
        return (options.energyWeight / t, options.forceWeight / t, options.stressWeight / t)
    }

    /// Loss of a batch and (when `train`) its gradients w.r.t. the trainable parameters (all but the
    /// reference energies). Forces are recorded (createGraph) so that the loss differentiates through them.
    func lossAndGradients<P: Potential>(_ m: P, _ idx: [Int], train: Bool, metrics: inout ForceFieldMetrics.Accumulator) -> (Double, [String: Tensor]) {
        let (sys, xv, cv) = batch(idx)
        let w = lossWeights
        let nS = idx.count
        let stressIdx = w.s > 0 ? idx.enumerated().filter { frames[$0.element].stress != nil }.map(\.offset) : []
        let tape = Tape()
        var params: [String: Variable] = [:], leaves: [(String, Variable)] = []
        for (k, v) in m.parameters {
            if train && k != referenceParameter {
                let l = tape.variable(v)
                params[k] = l
                leaves.append((k, l))
            } else {
                params[k] = Variable(constant: v)
            }
        }
        let x = tape.variable(xv)
        let cells = Variable(constant: cv)
        let eps = tape.variable(Tensor.zeros([nS, 3, 3]))
        let (xs, cs) = stressIdx.isEmpty ? (x, cells) : P.strained(sys, positions: x, cells: cells, strain: eps)
        let e = m.energies(sys, positions: xs, cells: cs, parameters: params)
        let g = tape.gradient(of: e.sum(), wrt: stressIdx.isEmpty ? [x] : [x, eps], createGraph: train)
        let f = -g[0]
        let eRef = Tensor(idx.map { frames[$0].energy! })
        let fRef = Tensor.concatenate(idx.map { frames[$0].forces! }, axis: 0)
        var loss = Variable(constant: 0)
        if w.e > 0 { loss = loss + (e - eRef).squared().mean() * w.e }
        if w.f > 0 { loss = loss + (f - fRef).squared().mean() * w.f }
        if !stressIdx.isEmpty {
            // σ = sym(∂E/∂ε)/V (ASE sign), compared on the frames that carry a stress label.
            var mask = Tensor.zeros([nS, 1, 1]), vol = Tensor.ones([nS, 1, 1]), sRef = Tensor.zeros([nS, 3, 3])
            for k in stressIdx {
                let fr = frames[idx[k]]
                mask[k, 0, 0] = 1
                vol[k, 0, 0] = fr.volume
                let st = fr.stress!
                for a in 0..<3 { for b in 0..<3 { sRef[k, a, b] = st[a, b] } }
            }
            let sigma = (g[1] + g[1].permuted([0, 2, 1])) * 0.5 / vol
            loss = loss + ((sigma - sRef) * mask).squared().sum() * (w.s / Double(9 * stressIdx.count))
        }
        for (k, fr) in idx.enumerated() {
            metrics.add(atoms: fr >= 0 ? frames[fr].count : 0, energy: e.value[flat: k], reference: frames[fr].energy,
                        forces: f.value.slice(axis: 0, sys.atomOffsets[k]..<sys.atomOffsets[k + 1]), referenceForces: frames[fr].forces)
        }
        guard train else { return (loss.scalar, [:]) }
        let grads = tape.gradient(of: loss, wrt: leaves.map(\.1))
        var out: [String: Tensor] = [:]
        for ((name, _), gr) in zip(leaves, grads) { out[name] = gr.value }
        return (loss.scalar, out)
    }

    /// Validation loss and metrics with the current weights.
    func validate() -> (Double, ForceFieldMetrics) {
        var acc = ForceFieldMetrics.Accumulator()
        var total = 0.0
        var start = 0
        let v = state.valIndices
        while start < v.count {
            let chunk = Array(v[start..<Swift.min(start + options.batch, v.count)])
            let (l, _) = lossAndGradients(model, chunk, train: false, metrics: &acc)
            total += l * Double(chunk.count)
            start += options.batch
        }
        return (total / Double(Swift.max(v.count, 1)), acc.metrics)
    }

    /// Validation loss and energy/force errors of the current weights.
    public func validationMetrics() -> (loss: Double, metrics: ForceFieldMetrics) { validate() }

    public var trainFrameCount: Int { state.trainIndices.count }
    public var validationFrameCount: Int { state.valIndices.count }
    public var completedEpochs: Int { state.epoch }
    public var stoppedEarly: Bool { state.stopped }
    public var bestEpoch: Int { state.bestEpoch }

    /// Trains until the epoch budget, early stopping, or `maxEpochsThisCall` epochs (for interruption tests).
    /// `report` receives an event after every batch and every epoch.
    @discardableResult
    public func run(maxEpochsThisCall: Int? = nil, report: (PretrainEvent) -> Void = { _ in }) throws -> [PretrainEpochMetrics] {
        session = try run.beginSession()
        var rows: [PretrainEpochMetrics] = []
        let startTime = Date()
        var epochsDone = 0
        while state.epoch < options.epochs && !state.stopped {
            if let mx = maxEpochsThisCall, epochsDone >= mx { break }
            let t0 = Date()
            let (trainLoss, trainMetrics) = try trainEpoch(report: report) { b, nb, loss in
                let elapsed = Date().timeIntervalSince(startTime)
                let fracDone = (Double(epochsDone) + Double(b) / Double(nb)) / Double(options.epochs - state.epoch + epochsDone)
                report(.batch(epoch: state.epoch + 1, batch: b, batches: nb, loss: loss, learningRate: state.adam.learningRate,
                              eta: fracDone > 0 ? elapsed * (1 - fracDone) / fracDone : nil))
            }
            let (vl, vm) = validate()
            state.epoch += 1
            epochsDone += 1
            let row = PretrainEpochMetrics(epoch: state.epoch, learningRate: state.adam.learningRate, trainLoss: trainLoss,
                                           train: trainMetrics, valLoss: vl, val: vm, seconds: Date().timeIntervalSince(t0))
            rows.append(row)
            let improved = vl < state.bestValLoss
            if improved { state.bestValLoss = vl; state.bestEpoch = state.epoch }
            state.schedule.endEpoch(state.epoch - 1, monitored: vl)
            if state.epoch - state.bestEpoch >= options.patience { state.stopped = true }
            // Model files and metrics.csv first, the checkpoint (atomic) last: a process killed in between
            // repeats the epoch on resume, which gives the same files again, and drops metric rows past the
            // checkpoint's epoch.
            try run.saveModel(model, to: "last.safetensors", metadata: provenance(kind: "last"))
            if improved { try run.saveModel(model, to: "best.safetensors", metadata: provenance(kind: "best")) }
            try run.appendMetrics(row.csv, header: PretrainEpochMetrics.header)
            try saveCheckpoint()
            report(.epoch(row, improved: improved))
        }
        return rows
    }

    /// One pass over the shuffled training frames in mini-batches, an Adam step each; returns the mean loss and
    /// the metrics accumulated with the weights before each update. `batchDone(b, batches, mean loss so far)`.
    func trainEpoch(report: (PretrainEvent) -> Void = { _ in }, batchDone: (Int, Int, Double) -> Void) throws -> (loss: Double, metrics: ForceFieldMetrics) {
        var order = state.trainIndices
        state.rng.shuffle(&order)
        var acc = ForceFieldMetrics.Accumulator()
        var lossSum = 0.0
        let nb = (order.count + options.batch - 1) / options.batch
        state.adam.learningRate = state.schedule.rate
        for b in 0..<nb {
            let idx = Array(order[(b * options.batch)..<Swift.min((b + 1) * options.batch, order.count)])
            let (l, grads0) = lossAndGradients(model, idx, train: true, metrics: &acc)
            var grads = grads0
            if options.clipNorm > 0 { _ = clipGradients(&grads, maxNorm: options.clipNorm) }
            var p: [String: Tensor] = [:]
            for (k, v) in model.parameters where grads[k] != nil { p[k] = v }
            // The update is taken only when loss, gradients and the new parameters pass the guard; otherwise
            // weights and optimizer state stay as they were and the step is counted as rejected.
            var adam = state.adam
            adam.update(&p, gradients: grads)
            let why: String? = !l.isFinite ? "the loss of frames \(idx.map { String($0 + 1) }.joined(separator: ",")) is \(l)"
                : !grads.values.allSatisfy(\.isFinite) ? "the gradient is not finite" : ParameterGuard.rejection(of: p, for: model)
            var r = state.rejections ?? UpdateRejections()
            if let why {
                report(.rejectedStep(epoch: state.epoch + 1, reason: why))
                defer { state.rejections = r }
                try r.reject(why, limit: options.maxRejectedSteps ?? ParameterGuard.defaultMaxRejectedSteps,
                             kept: "\(run.lastModelPath) (epoch \(state.epoch)) and \(run.bestModelPath) (epoch \(state.bestEpoch))")
            } else {
                r.accept()
                state.rejections = r
                state.adam = adam
                for (k, v) in p { model.parameters[k] = v }
            }
            lossSum += l * Double(idx.count)
            batchDone(b + 1, nb, lossSum / Double(Swift.min((b + 1) * options.batch, order.count)))
        }
        return (lossSum / Double(order.count), acc.metrics)
    }

    /// Weights and state in one atomic file, then the cost so far.
    func saveCheckpoint() throws {
        try run.writeCheckpoint(model.parameters, state: state, key: Self.checkpointKey)
        if let s = session { try run.recordCost(s) }
    }

    /// The run's cost over all its processes so far (written to cost.json).
    public func cost() throws -> RunDirectory.Cost {
        guard let s = session else { return try run.readJSON(RunDirectory.Cost.self, from: "cost.json") ?? RunDirectory.Cost() }
        return try run.recordCost(s)
    }

    /// The command line, with the run directory by its name only (where it lived is machine-specific).
    var recordedCommand: String {
        let name = URL(fileURLWithPath: runDirectory).lastPathComponent
        return options.command.replacingOccurrences(of: "--out " + runDirectory, with: "--out " + name)
            .replacingOccurrences(of: "--out=" + runDirectory, with: "--out=" + name)
    }

    /// Provenance metadata for model files written by this run.
    func provenance(kind: String) -> [String: String] {
        [
            "training_data": options.dataFiles.map(ModelFile.recordedArgument).joined(separator: ","),
            "training_validation": options.valFiles.isEmpty ? "fraction \(options.valFraction) of the training frames (seed \(options.seed))" : options.valFiles.map(ModelFile.recordedArgument).joined(separator: ","),
            "training_command": recordedCommand,
            "training_epochs": "\(state.epoch)",
            "training_best_epoch": "\(state.bestEpoch)",
            "training_checkpoint": kind,
            "training_frames": "\(state.trainIndices.count) train, \(state.valIndices.count) validation",
            "training_loss": String(format: "energy %.4g, forces %.4g, stress %.4g (normalised weights; total-energy, force and stress MSE)",
                                    lossWeights.e, lossWeights.f, lossWeights.s),
            "training_best_val_loss": "\(state.bestValLoss)",
            "training_init": options.initModel.map { URL(fileURLWithPath: $0).lastPathComponent + (options.refitReferenceEnergies == true ? " (reference energies refitted)" : "") } ?? "",
        ].filter { !$0.value.isEmpty }
    }

    /// Metrics of the best checkpoint on each test file (and, when `record`, written into best.safetensors).
    public func evaluateBest(record: Bool = true) throws -> [(String, ForceFieldMetrics)] {
        let path = run.bestModelPath
        let (best, meta) = try ModelFile.load(path)
        var out: [(String, ForceFieldMetrics)] = []
        var extra = meta
        extra["training_command"] = recordedCommand
        for (file, fs) in testSets {
            let m = ForceFieldMetrics.compute(potential: best, frames: fs)
            out.append((file, m))
            let stem = URL(fileURLWithPath: file).deletingPathExtension().lastPathComponent
            extra["test_\(stem)"] = String(format: "energy MAE %.2f meV/atom, RMSE %.2f; force MAE %.4f eV/Å, RMSE %.4f (%d frames)",
                                           m.energyMAE, m.energyRMSE, m.forceMAE, m.forceRMSE, m.frames)
        }
        if record && !testSets.isEmpty {
            extra["relaxft_kind"] = nil
            try ModelFile.save(best, to: path, extraMetadata: extra)
        }
        return out
    }
}
