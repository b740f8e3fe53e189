import Atoms
import Cluster
import Foundation
import Potentials
import Tape

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
public final class PretrainTrainer {
    public let config: PretrainConfig
    public var runDirectory: String { run.path }
    public internal(set) var model: any Potential
    var state: PretrainState
    let frames: [Structure]
    let lists: [NeighborList]
    /// The per-element reference energies, which are fitted, not trained.
    let referenceParameter: String
    let testSets: [(String, [Structure])]
    /// Frames left out of the data (--skip-unknown-elements), one line per file.
    public let dataNotes: [String]

    public let run: RunDirectory
    /// The ranks of a data-parallel job (one process: a single rank). Rank 0 alone writes the run directory.
    public let communicator: any Communicator
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
    public convenience init(config: PretrainConfig, runDirectory: String, communicator: any Communicator = LocalCommunicator()) throws {
        try config.validate()
        if RunDirectory(runDirectory).exists("config.json") {
            throw PretrainError(message: "\(runDirectory) already holds a run (use --resume \(runDirectory), or another --out)")
        }
        // Data and model first: a run that cannot start leaves no directory behind.
        try self.init(config: config, run: RunDirectory(runDirectory), resuming: false, communicator: communicator)
        try communicator.requireSameInputs(inputDigest(), what: "inputs (configuration, data or starting model)")
        if communicator.writesFiles {
            _ = try RunDirectory.create(runDirectory, config: config)
            try run.startMetrics(header: PretrainEpochMetrics.header)
        }
        try saveCheckpoint()
    }

    /// Continues the run in RUN_DIR from its last completed epoch; `epochs` sets a new epoch budget (which
    /// re-targets a cosine schedule and is written into config.json).
    public static func resume(runDirectory: String, epochs: Int? = nil, communicator: any Communicator = LocalCommunicator()) throws -> PretrainTrainer {
        let (run, config) = try RunDirectory.resume(runDirectory, as: PretrainConfig.self, epochs: epochs)
        // Without a checkpoint the run was stopped between writing config.json and its first checkpoint: it
        // starts from the beginning, as the stored configuration says. (Every rank looks before the collective
        // input check below, so none sees the checkpoint rank 0 writes after it.)
        let resuming = run.exists("checkpoint.safetensors")
        let p = try PretrainTrainer(config: config, run: run, resuming: resuming, communicator: communicator)
        try communicator.requireSameInputs(p.inputDigest(), what: "inputs (configuration, data or checkpoint)")
        if communicator.writesFiles {
            try run.storeEpochs(config.epochs, as: PretrainConfig.self)
            if !resuming { try run.startMetrics(header: PretrainEpochMetrics.header) }
        }
        if !resuming { try p.saveCheckpoint() }
        return p
    }

    private init(config: PretrainConfig, run: RunDirectory, resuming: Bool, communicator: any Communicator) throws {
        self.config = config
        self.run = run
        self.communicator = communicator
        let start = try config.initModel.map { try Self.startingModel($0) }
        let data = try Self.readData(config, known: start.flatMap(declaredElements), modelName: config.initModel ?? "")
        dataNotes = data.notes
        testSets = data.tests
        let all = data.train + data.val
        frames = all
        let (trainIdx, valIdx) = try Self.split(train: data.train.count, validation: data.val.count, config: config)
        let trainFrames = trainIdx.map { all[$0] }
        var m: any Potential
        if var s = start {
            if config.refitReferenceEnergies == true && !resuming { try Self.refitReferenceEnergies(&s, frames: trainFrames) }
            m = s
        } else {
            m = try Self.newModel(config, trainFrames: trainFrames, elements: Array(Set(all.flatMap(\.numbers))).sorted())
        }
        referenceParameter = Self.referenceEnergies(of: m)!.name
        let cutoff = m.cutoff
        // Elements, positions and list sizes checked before any list is built.
        for (k, f) in all.enumerated() { try m.checkInput(f, name: data.names[k], potentialName: config.initModel) }
        lists = all.map { NeighborList.build($0, cutoff: cutoff) }
        let sched: LearningRateSchedule
        switch config.schedule {
        case "cosine": sched = .cosine(epochs: config.epochs, minFactor: 0.01)
        case "constant": sched = .constant
        default: sched = .reduceOnPlateau(factor: 0.5, patience: config.schedulePatience, minLearningRate: 1e-6)
        }
        state = PretrainState(adam: Adam(learningRate: config.learningRate), schedule: ScheduleState(sched, baseRate: config.learningRate),
                              rng: SeededGenerator(seed: config.seed), trainIndices: trainIdx, valIndices: valIdx)
        model = PotentialFaults.wrap(m)
        if resuming { try restoreCheckpoint() }
    }

    /// The model a warm start begins from; it must have per-element reference energies (so3krates, schnet, chgnet).
    static func startingModel(_ path: String) throws -> any Potential {
        let m = try ModelFile.load(path).potential
        guard referenceEnergies(of: m) != nil else {
            throw PretrainError(message: "\(path): a \(m.kind) model cannot be trained on energies and forces here (so3krates, schnet, chgnet, sevennet)")
        }
        return m
    }

    /// Training (the `frames` selection of each data file), validation and test frames; frames with elements
    /// outside `known` are an error, or with `skipUnknownElements` left out (counted in `notes`).
    /// `names`: the training then validation frames' names for messages ("train.xyz: frame 3").
    static func readData(_ o: PretrainConfig, known: Set<Int>?, modelName: String) throws
        -> (train: [Structure], val: [Structure], names: [String], tests: [(String, [Structure])], notes: [String]) {
        let selection = try o.frames.map { text -> FrameSelection in
            guard let s = FrameSelection(text) else { throw PretrainError(message: "frames: '\(text)' is not an index or a slice") }
            return s
        }
        var notes: [String] = []
        typealias Named = (frame: Structure, name: String)
        func named(_ path: String) throws -> [Named] {
            try loadFrames([path]).enumerated().map { ($1, "\(path): frame \($0 + 1)") }
        }
        func keepKnown(_ fs: [Named], _ file: String) throws -> [Named] {
            let kept = fs.filter { unknownElements($0.frame.numbers, known: known).isEmpty }
            if kept.count < fs.count {
                let missing = Set(fs.flatMap { unknownElements($0.frame.numbers, known: known) }).sorted().map { Elements.symbols[$0] }.joined(separator: ", ")
                guard o.skipUnknownElements == true else {
                    let first = fs.first { !unknownElements($0.frame.numbers, known: known).isEmpty }!
                    throw PretrainError(message: "\(first.name) contains \(missing), which \(modelName) does not know (its elements: "
                                        + "\(known!.sorted().map { Elements.symbols[$0] }.joined(separator: ", "))); leave such frames out, or skip them with --skip-unknown-elements")
                }
                notes.append("left out \(fs.count - kept.count) of \(fs.count) frames of \(file) (they contain \(missing), which \(modelName) does not know)")
            }
            return kept
        }
        var train: [Named] = []
        for path in o.dataFiles {
            var fs = try named(path)
            if let sel = selection {
                guard let picked = sel.indices(count: fs.count), !picked.isEmpty else { throw PretrainError(message: "frames \(o.frames!) selects no frame of \(path)") }
                fs = picked.map { fs[$0] }
            }
            train += try keepKnown(fs, path)
        }
        let val = try o.valFiles.flatMap { try keepKnown(try named($0), $0) }
        let tests = try o.testFiles.map { ($0, try keepKnown(try named($0), $0).map(\.frame)) }
        return (train.map(\.frame), val.map(\.frame), (train + val).map(\.name), tests, notes)
    }

    /// Indices of the training and validation frames: a validation file, or a seeded random fraction of the
    /// training frames.
    static func split(train n: Int, validation nv: Int, config: PretrainConfig) throws -> (train: [Int], val: [Int]) {
        var trainIdx = Array(0..<n)
        guard nv == 0 else { return (trainIdx, Array(n..<(n + nv))) }
        var rng = SeededGenerator(seed: config.seed &+ 0x5EED)
        rng.shuffle(&trainIdx)
        let nVal = Swift.max(1, Int((Double(n) * config.valFraction).rounded()))
        guard nVal < n else { throw PretrainError(message: "too few training frames (\(n)) for a validation split") }
        return (Array(trainIdx[nVal...]).sorted(), Array(trainIdx[..<nVal]).sorted())
    }

    /// A new model of `config.model`'s architecture with least-squares reference energies.
    static func newModel(_ config: PretrainConfig, trainFrames: [Structure], elements: [Int]) throws -> any Potential {
        let ref = try referenceEnergies(trainFrames, elements: elements)
        let scale = forceRMS(trainFrames)
        var m: any Potential
        switch config.model {
        case "so3krates":
            var c = SO3krates.Config(cutoff: config.cutoff, radialBasis: config.radialBasis, elements: elements, energyScale: scale)
            if let f = config.features { c.features = f }
            if let l = config.layers { c.layers = l }
            if let h = config.heads { c.heads = h }
            if let d = config.maxDegree { c.maxDegree = d }
            m = try SO3krates(c, seed: config.seed)
        default:
            var c = SchNet.Config(cutoff: config.cutoff, radialBasis: config.radialBasis, elements: elements, energyScale: scale)
            if let f = config.features { c.features = f }
            if let l = config.layers { c.layers = l }
            m = try SchNet(c, seed: config.seed)
        }
        m.parameters["atomic_energies"] = Tensor(ref)
        return m
    }

    /// Weights and state of the run's checkpoint (the data must give the split the run started with).
    func restoreCheckpoint() throws {
        let ck = run.checkpointPath
        guard let (tensors, saved) = try run.readCheckpoint(PretrainState.self, key: Self.checkpointKey) else { return }
        guard saved.trainIndices == state.trainIndices && saved.valIndices == state.valIndices else {
            throw PretrainError(message: "\(ck): the data files no longer give the split the run was started with")
        }
        try RunDirectory.install(tensors, into: &model, file: ck)
        state = saved
        try validateState()
        // A new epoch budget on resume re-targets a cosine schedule to it (the only state that depends
        // on the budget); without one the run continues bit for bit.
        if case .cosine(let old, let minFactor) = state.schedule.schedule, old != config.epochs {
            state.schedule.schedule = .cosine(epochs: config.epochs, minFactor: minFactor)
            state.schedule.endEpoch(state.epoch - 1, monitored: state.bestValLoss)
        }
        if communicator.writesFiles { try run.truncateMetrics(after: saved.epoch, header: PretrainEpochMetrics.header) }
    }

    /// A digest of what this rank read (configuration, frames, weights, state), compared across ranks.
    func inputDigest() -> UInt64 {
        var d = InputDigest()
        d.add(json: config)
        d.add(json: state)
        for (_, t) in model.parameters { d.add(t) }
        for f in frames {
            d.add(f.positions)
            d.add(f.cell)
            d.add(f.energy ?? .nan)
            if let g = f.forces { d.add(g) }
        }
        return d.value
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
        let t = config.energyWeight + config.forceWeight + config.stressWeight
        return (config.energyWeight / t, config.forceWeight / t, config.stressWeight / t)
    }

    /// What a batch's loss terms are averaged over: its frames, force components and stress-labelled frames.
    struct LossNorm {
        var frames: Int
        var components: Int
        var stressFrames: Int
    }

    func lossNorm(_ idx: [Int]) -> LossNorm {
        LossNorm(frames: idx.count, components: idx.reduce(0) { $0 + 3 * frames[$1].count },
                 stressFrames: lossWeights.s > 0 ? idx.filter { frames[$0].stress != nil }.count : 0)
    }

    /// Loss of the frames `idx`, a part of a batch whose terms are averaged as `norm` says, and (when `train`) its
    /// gradients w.r.t. the trainable parameters (all but the reference energies); the predicted energies and
    /// forces (for the metrics). Forces are recorded (createGraph) so that the loss differentiates through them.
    func lossAndGradients<P: Potential>(_ m: P, _ idx: [Int], train: Bool, norm: LossNorm) -> (loss: Double, gradients: [String: Tensor], energies: Tensor, forces: Tensor) {
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
        if w.e > 0 { loss = loss + (e - eRef).squared().sum() * (w.e / Double(norm.frames)) }
        if w.f > 0 { loss = loss + (f - fRef).squared().sum() * (w.f / Double(norm.components)) }
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
            loss = loss + ((sigma - sRef) * mask).squared().sum() * (w.s / Double(9 * norm.stressFrames))
        }
        guard train else { return (loss.scalar, [:], e.value, f.value) }
        let grads = tape.gradient(of: loss, wrt: leaves.map(\.1))
        var out: [String: Tensor] = [:]
        for ((name, _), gr) in zip(leaves, grads) { out[name] = gr.value }
        return (loss.scalar, out, e.value, f.value)
    }

    /// The trainable parameters (all but the reference energies) in one flat vector, in the model's order.
    var gradientLayout: GradientLayout {
        GradientLayout(model.parameters.filter { $0.key != referenceParameter }.map { ($0.key, $0.value.shape) })
    }

    /// One pass over `units` (lists of frame indices): every rank computes the loss (and with `train` the
    /// gradient) of its contiguous share of the units; every rank gets the loss pieces in unit order, the
    /// gradient sum ((0 + g₀) + g₁) + … in unit order (`orderedSum`: one process's bits for any rank count) and
    /// the metrics of the predictions accumulated frame by frame in order.
    func unitPass(_ units: [[Int]], train: Bool, norm: (Int) -> LossNorm, metrics: inout ForceFieldMetrics.Accumulator) -> (losses: [Double], gradient: [String: Tensor]) {
        let comm = communicator
        let layout = gradientLayout
        var terms: [[Double]] = [], losses: [Double] = [], predictions: [Double] = []
        for u in comm.shard(of: units.count) {
            let r = lossAndGradients(model, units[u], train: train, norm: norm(u))
            if train { terms.append(layout.flatten(r.gradients)) }
            losses.append(r.loss)
            // Per frame: the energy, then its forces.
            var off = 0
            for (k, fr) in units[u].enumerated() {
                predictions.append(r.energies[flat: k])
                let n = 3 * frames[fr].count
                r.forces.withUnsafeBufferPointer { predictions += $0[off..<(off + n)] }
                off += n
            }
        }
        let sum = train ? comm.orderedSum(terms, count: units.count, length: layout.length) : []
        let allLosses = comm.allgatherConcatenated(losses)
        let allPredictions = comm.allgatherConcatenated(predictions)
        var off = 0
        for fr in units.joined() {
            let n = frames[fr].count
            let f = Tensor(shape: [n, 3], Array(allPredictions[(off + 1)..<(off + 1 + 3 * n)]))
            metrics.add(atoms: n, energy: allPredictions[off], reference: frames[fr].energy, forces: f, referenceForces: frames[fr].forces)
            off += 1 + 3 * n
        }
        return (allLosses, train ? layout.unflatten(sum) : [:])
    }

    /// The units of a mini-batch: consecutive runs of `microBatch` frames (1 by default).
    func units(_ idx: [Int]) -> [[Int]] {
        let m = config.microBatch ?? 1
        return stride(from: 0, to: idx.count, by: m).map { Array(idx[$0..<Swift.min($0 + m, idx.count)]) }
    }

    /// Validation loss and metrics with the current weights (chunks of `batch` frames, shared out over the ranks).
    func validate() -> (Double, ForceFieldMetrics) {
        var acc = ForceFieldMetrics.Accumulator()
        let v = state.valIndices
        let chunks = stride(from: 0, to: v.count, by: config.batch).map { Array(v[$0..<Swift.min($0 + config.batch, v.count)]) }
        let (losses, _) = unitPass(chunks, train: false, norm: { lossNorm(chunks[$0]) }, metrics: &acc)
        var total = 0.0
        for (l, c) in zip(losses, chunks) { total += l * Double(c.count) }
        return (total / Double(Swift.max(v.count, 1)), acc.metrics)
    }

    /// Validation loss and energy/force errors of the current weights.
    public func validationMetrics() -> (loss: Double, metrics: ForceFieldMetrics) { validate() }

    public var trainFrameCount: Int { state.trainIndices.count }
    public var validationFrameCount: Int { state.valIndices.count }
    public var completedEpochs: Int { state.epoch }
    /// Optimizer updates rejected over the whole run (skipped, weights kept).
    public var rejectedSteps: Int { state.rejections?.total ?? 0 }
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
        while state.epoch < config.epochs && !state.stopped {
            if let mx = maxEpochsThisCall, epochsDone >= mx { break }
            let t0 = Date()
            let (trainLoss, trainMetrics) = try trainEpoch(report: report) { b, nb, loss in
                let elapsed = Date().timeIntervalSince(startTime)
                let fracDone = (Double(epochsDone) + Double(b) / Double(nb)) / Double(config.epochs - state.epoch + epochsDone)
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
            if config.patience > 0 && state.epoch - state.bestEpoch >= config.patience { state.stopped = true }
            // Model files and metrics.csv first, the checkpoint (atomic) last: a process killed in between
            // repeats the epoch on resume, which gives the same files again, and drops metric rows past the
            // checkpoint's epoch.
            if communicator.writesFiles {
                try run.saveModel(model, to: "last.safetensors", metadata: provenance(kind: "last"))
                if improved { try run.saveModel(model, to: "best.safetensors", metadata: provenance(kind: "best")) }
                try run.appendMetrics(row.csv, header: PretrainEpochMetrics.header)
            }
            try saveCheckpoint()
            report(.epoch(row, improved: improved))
        }
        return rows
    }

    /// One pass over the shuffled training frames in mini-batches, an Adam step each; returns the mean loss and
    /// the metrics of the accepted batches, with the weights before each update. `batchDone(b, batches, mean loss
    /// so far)`.
    func trainEpoch(report: (PretrainEvent) -> Void = { _ in }, batchDone: (Int, Int, Double) -> Void) throws -> (loss: Double, metrics: ForceFieldMetrics) {
        var order = state.trainIndices
        state.rng.shuffle(&order)
        var acc = ForceFieldMetrics.Accumulator()
        var lossSum = 0.0, accepted = 0
        let nb = (order.count + config.batch - 1) / config.batch
        state.adam.learningRate = state.schedule.rate
        for b in 0..<nb {
            let idx = Array(order[(b * config.batch)..<Swift.min((b + 1) * config.batch, order.count)])
            // A rejected batch stays out of the epoch's loss and metrics (its predictions may be NaN).
            let accBefore = acc
            let norm = lossNorm(idx)
            let (pieces, grads0) = unitPass(units(idx), train: true, norm: { _ in norm }, metrics: &acc)
            let l = pieces.reduce(0, +)
            var grads = grads0
            if config.clipNorm > 0 { _ = clipGradients(&grads, maxNorm: config.clipNorm) }
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
                acc = accBefore
                report(.rejectedStep(epoch: state.epoch + 1, reason: why))
                defer { state.rejections = r }
                try r.reject(why, limit: config.maxRejectedSteps ?? ParameterGuard.defaultMaxRejectedSteps,
                             kept: "\(run.lastModelPath) (epoch \(state.epoch)) and \(run.bestModelPath) (epoch \(state.bestEpoch))")
            } else {
                r.accept()
                state.rejections = r
                state.adam = adam
                for (k, v) in p { model.parameters[k] = v }
                lossSum += l * Double(idx.count)
                accepted += idx.count
            }
            batchDone(b + 1, nb, lossSum / Double(accepted))
        }
        return (lossSum / Double(accepted), acc.metrics)
    }

    /// Weights and state in one atomic file, then the cost so far (collective: every rank calls it).
    func saveCheckpoint() throws {
        let cost = session.map { communicator.jobCost($0) }
        guard communicator.writesFiles else { return }
        try run.writeCheckpoint(model.parameters, state: state, key: Self.checkpointKey)
        if let cost { try run.writeJSON(cost, to: "cost.json", pretty: true) }
    }

    /// The run's cost over all its processes and ranks so far (written to cost.json by rank 0; collective).
    public func cost() throws -> RunDirectory.Cost {
        guard let s = session else { return try run.cost(nil) }
        let c = communicator.jobCost(s)
        if communicator.writesFiles { try run.writeJSON(c, to: "cost.json", pretty: true) }
        return c
    }

    /// The command line, with the run directory by its name only (where it lived is machine-specific).
    var recordedCommand: String { run.recordedCommand(config.command) }

    /// Provenance metadata for model files written by this run.
    func provenance(kind: String) -> [String: String] {
        [
            "training_data": config.dataFiles.map(ModelFile.recordedArgument).joined(separator: ","),
            "training_validation": config.valFiles.isEmpty ? "fraction \(config.valFraction) of the training frames (seed \(config.seed))" : config.valFiles.map(ModelFile.recordedArgument).joined(separator: ","),
            "training_command": recordedCommand,
            "training_epochs": "\(state.epoch)",
            "training_best_epoch": "\(state.bestEpoch)",
            "training_checkpoint": kind,
            "training_frames": "\(state.trainIndices.count) train, \(state.valIndices.count) validation",
            "training_loss": String(format: "energy %.4g, forces %.4g, stress %.4g (normalised weights; total-energy, force and stress MSE)",
                                    lossWeights.e, lossWeights.f, lossWeights.s),
            "training_best_val_loss": "\(state.bestValLoss)",
            "training_init": config.initModel.map { URL(fileURLWithPath: $0).lastPathComponent + (config.refitReferenceEnergies == true ? " (reference energies refitted)" : "") } ?? "",
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
