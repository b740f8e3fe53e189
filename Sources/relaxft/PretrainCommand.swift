import Atoms
import FineTune
import Foundation
import Potentials
import Tape

let pretrainCommand = Command(
    spec: CommandSpec(
        name: "pretrain", summary: "train a neural potential (SO3krates or SchNet) on DFT energies and forces, or fine-tune one (--potential)",
        usage: "--data TRAIN.extxyz [--val VAL.extxyz | --val-fraction F] (--architecture so3krates|schnet | --potential MODEL) -o RUN_DIR [options]\n       relaxft pretrain --resume RUN_DIR [--epochs N]",
        options: [
            Vocabulary.potential.detail("start from this model (so3krates, schnet, chgnet or sevennet): conventional energy/force fine-tuning; the architecture options do not apply")
                .alias("--init"),
            OptionSpec("--architecture", value: "KIND", default: "so3krates", help: "a new model: so3krates or schnet"),
            OptionSpec("--refit-reference-energies", help: "with --potential: first shift the per-element reference energies to fit the training energies (for data from another DFT code); default: keep the model's"),
            Vocabulary.data.detail("training frames with energy and forces"),
            Vocabulary.frames.detail("of --data (--val and --test are read whole)"),
            Vocabulary.skipUnknownElements.detail("with --potential"),
            Vocabulary.val,
            Vocabulary.valFraction.detail("frames").withDefault("0.1", reason: "frames are many (hundreds), structures in finetune few"),
            Vocabulary.test.detail("with the best model"),
            OptionSpec("--features", value: "F", help: "invariant features (so3krates 48, schnet 64)"),
            OptionSpec("--layers", value: "L", help: "layers / interaction blocks (so3krates 2, schnet 3)"),
            OptionSpec("--heads", value: "H", help: "so3krates: invariant attention heads (4)"),
            OptionSpec("--max-degree", value: "L", help: "so3krates: Euclidean variables of degrees 1…L (3)"),
            OptionSpec("--cutoff", value: "Å", default: "5", help: "interaction cutoff"),
            OptionSpec("--radial-basis", value: "K", default: "32", help: "radial basis functions"),
            Vocabulary.energyWeight.detail("of the total-energy MSE (eV²), weights renormalised to sum 1").withDefault("0.01", reason: "energy and forces are the objective here"),
            Vocabulary.forceWeight.detail("of the force MSE ((eV/Å)²)").withDefault("0.99", reason: "energy and forces are the objective here"),
            OptionSpec("--stress-weight", value: "W", default: "0", help: "weight of the stress MSE ((eV/Å³)², frames with stress)"),
            Vocabulary.epochs.withDefault("100", reason: "an epoch of energy/force matching is a pass over frames, much cheaper than one of relaxations"),
            Vocabulary.lr,
            Vocabulary.schedule.detail("plateau halves the rate after --schedule-patience epochs").withDefault("plateau", reason: "long runs on a validation loss that levels off"),
            OptionSpec("--schedule-patience", value: "N", default: "5", help: "epochs without validation improvement before the rate halves"),
            Vocabulary.patience.withDefault("25", reason: "long runs; finetune runs few epochs and never stops early by default"),
            Vocabulary.clip,
            Vocabulary.maxRejectedSteps,
            Vocabulary.batch,
            OptionSpec("--micro-batch", value: "K", default: "1", help: "structures per graph within a batch: the unit whose gradients are summed in order and that MPI ranks share out (results do not depend on the rank count)"),
            Vocabulary.seed.detail("of the initialisation, split and shuffling"),
            Vocabulary.out.detail("the run directory (checkpoints, metrics.csv)"),
            Vocabulary.resume.detail("--epochs sets a new budget; --json and --quiet apply"),
            Vocabulary.json.detail("summary.json at the end"),
            Vocabulary.quiet,
        ],
        details: """
            Reference energies per element are fitted by least squares first; then Adam on mini-batches (several
            structures batched into one graph), loss = w_E·MSE(E) + w_F·MSE(F) [+ w_S·MSE(σ)] with weights renormalised
            to sum 1. RUN_DIR gets config.json, metrics.csv (energy MAE/RMSE in meV/atom, force MAE/RMSE in eV/Å, train
            and validation, per epoch), best.safetensors and last.safetensors (model files with provenance), and
            checkpoint.safetensors (weights, Adam and RNG state) from which --resume continues bit for bit, and at the end
            summary.json (best epoch and its metrics, the initial model's validation errors with --potential, wall and CPU
            seconds and peak resident memory). With --potential the per-element reference energies are not trained (as
            in pretraining, where they are fitted): kept, or shifted once with --refit-reference-energies.
            """),
    run: runPretrain)

/// The configuration of a new pretraining run from the options.
func pretrainConfig(_ args: ParsedArguments) throws -> (PretrainConfig, runDirectory: String) {
    let cmd = "pretrain"
    if let start = args.string("potential"), ["so3krates", "schnet"].contains(start) {
        throw UsageError(command: cmd, message: "--potential (also --init, --model) \(start) names a model to start from; a new \(start) model is --architecture \(start)")
    }
    let data = args.strings("data")
    guard !data.isEmpty else { throw UsageError(command: cmd, message: "--data FILE is required") }
    guard let out = args.string("out") else { throw UsageError(command: cmd, message: "-o/--out RUN_DIR is required") }
    for f in data + args.strings("val") + args.strings("test") where !FileManager.default.fileExists(atPath: f) {
        throw UsageError(command: cmd, message: "file '\(f)' not found")
    }
    var o = PretrainConfig()
    o.model = args.string("architecture")!
    if let start = args.string("potential") {
        if args.given.contains("architecture") { throw UsageError(command: cmd, message: "--architecture makes a new model; --potential starts from one: give one of them") }
        let path = try resolveModelPath(start, command: cmd)
        o.initModel = path
        o.model = try ModelFile.load(path).potential.kind
        o.refitReferenceEnergies = args.has("refit-reference-energies")
    } else if args.has("refit-reference-energies") {
        throw UsageError(command: cmd, message: "--refit-reference-energies needs --potential MODEL")
    } else if args.has("skip-unknown-elements") {
        throw UsageError(command: cmd, message: "--skip-unknown-elements needs --potential MODEL (a new model learns every element of the data)")
    }
    o.features = try args.positiveInt("features")
    o.layers = try args.int("layers")
    o.heads = try args.positiveInt("heads")
    o.maxDegree = try args.positiveInt("max-degree")
    o.cutoff = try args.positiveDouble("cutoff")!
    o.radialBasis = try args.positiveInt("radial-basis")!
    o.energyWeight = try args.double("energy-weight")!
    o.forceWeight = try args.double("force-weight")!
    o.stressWeight = try args.double("stress-weight")!
    o.epochs = try args.positiveInt("epochs")!
    o.learningRate = try args.positiveDouble("lr")!
    o.schedule = args.string("schedule")!
    o.schedulePatience = try args.positiveInt("schedule-patience")!
    guard let patience = try args.int("patience"), patience >= 0 else { throw UsageError(command: cmd, message: "--patience must be 0 or more") }
    o.patience = patience
    o.clipNorm = try args.double("clip")!
    o.maxRejectedSteps = try args.nonNegativeInt("max-rejected-steps")!
    o.batch = try args.positiveInt("batch")!
    o.microBatch = try args.positiveInt("micro-batch")
    o.seed = try seedOption(args)
    o.valFraction = try args.double("val-fraction")!
    o.dataFiles = data
    o.frames = args.string("frames")
    if let f = o.frames, FrameSelection(f) == nil {
        throw UsageError(command: cmd, message: "--frames expects an index or a slice such as 3, -1 or 0:10:2, got '\(f)'")
    }
    o.skipUnknownElements = args.has("skip-unknown-elements") ? true : nil
    o.valFiles = args.strings("val")
    o.testFiles = args.strings("test")
    o.command = "relaxft pretrain " + CommandLine.arguments.dropFirst(2).map(ModelFile.recordedArgument).joined(separator: " ")
    do { try o.validate() } catch let e as PretrainError { throw UsageError(command: cmd, message: e.message) }
    return (o, out)
}

func runPretrain(_ args: ParsedArguments) throws -> Int32 {
    let comm = world()
    // Rank 0 alone reports; the other ranks' output would repeat it.
    let json = args.has("json") && comm.rank == 0, quiet = args.has("quiet") || comm.rank != 0
    let log: (String) -> Void = quiet ? { _ in } : { emit($0, toStandardError: json) }
    let trainer: PretrainTrainer
    let ranks = comm.size > 1 ? "; \(comm.size) ranks (\(comm.backend))" : ""
    if let dir = args.string("resume") {
        try args.refuseOnResume(allowed: ["epochs", "json", "quiet"])
        trainer = try PretrainTrainer.resume(runDirectory: dir, epochs: try args.givenPositiveInt("epochs"), communicator: comm)
        log("resuming \(dir) after epoch \(trainer.completedEpochs)" + ranks)
    } else {
        let (o, out) = try pretrainConfig(args)
        trainer = try PretrainTrainer(config: o, runDirectory: out, communicator: comm)
        log("\(o.model): \(trainer.model.parameterCount) parameters; run directory \(out)" + ranks)
    }
    if comm.rank == 0 { for note in trainer.dataNotes { printError("relaxft pretrain: \(note)") } }
    // The starting point of a warm start, for the summary (before → after).
    var initial: (loss: Double, metrics: ForceFieldMetrics)? = nil
    if trainer.config.initModel != nil && trainer.completedEpochs == 0 {
        initial = trainer.validationMetrics()
        log("initial model on the validation frames: \(initial!.metrics)")
    }
    let progress = ProgressLine(enabled: !quiet)
    try trainer.run { event in
        switch event {
        case .batch(let epoch, let b, let nb, let loss, let lr, let eta):
            progress.update(String(format: "epoch %d/%d  batch %d/%d  loss %.4g  lr %.2g  ETA %@", epoch, trainer.config.epochs, b, nb, loss, lr, formatDuration(eta)))
        case .rejectedStep(let epoch, let reason):
            progress.clear()
            printError("relaxft pretrain: epoch \(epoch): optimizer step not taken: \(reason)")
        case .epoch(let row, let improved):
            progress.clear()
            log(String(format: "epoch %d/%d  lr %.2g  train: loss %.4g  E %.2f meV/atom  F %.4f eV/Å | val: loss %.4g  E %.2f meV/atom  F %.4f eV/Å (RMSE %.4f)%@  %.0f s",
                       row.epoch, trainer.config.epochs, row.learningRate, row.trainLoss, row.train.energyMAE, row.train.forceMAE,
                       row.valLoss, row.val.energyMAE, row.val.forceMAE, row.val.forceRMSE, improved ? "  *best" : "", row.seconds))
        }
    }
    if trainer.stoppedEarly { log("early stop: no validation improvement for \(trainer.config.patience) epochs (best epoch \(trainer.bestEpoch))") }
    let cost = try trainer.cost()
    // The test files and the summary: rank 0 alone (it wrote best.safetensors).
    guard comm.rank == 0 else { return 0 }
    for (file, m) in try trainer.evaluateBest() { log("test \(file): \(m)") }
    log("best model: \(trainer.runDirectory)/best.safetensors (epoch \(trainer.bestEpoch))")
    let summary = try writePretrainSummary(trainer, initial: initial, cost: cost)
    if json { print(summary) }
    return 0
}

/// A model file path for a model spec that names a file or a pulled model (chgnet-0.3.0).
func resolveModelPath(_ spec: String, command: String) throws -> String {
    if FileManager.default.fileExists(atPath: spec) { return spec }
    if ModelStore.isModelName(spec) {
        if let p = ModelStore.locate(spec) { return p }
        throw UsageError(command: command, message: "model '\(spec)' is not in \(ModelStore.searchPath.joined(separator: ", "))"
                         + (ModelStore.source(spec) != nil ? " (relaxft models pull \(spec))" : " (relaxft models list shows the models at hand)"))
    }
    throw UsageError(command: command, message: "model file '\(spec)' not found")
}

/// RUN_DIR/summary.json: the best epoch's row of metrics.csv, the initial model's validation errors (warm
/// start), and the training cost of this process (wall and CPU seconds, peak resident memory).
@discardableResult
func writePretrainSummary(_ trainer: PretrainTrainer, initial: (loss: Double, metrics: ForceFieldMetrics)?, cost: RunDirectory.Cost) throws -> String {
    var obj: [String: Any] = [
        "epochs": trainer.completedEpochs, "best_epoch": trainer.bestEpoch, "stopped_early": trainer.stoppedEarly,
        "train_frames": trainer.trainFrameCount, "val_frames": trainer.validationFrameCount, "rejected_steps": trainer.rejectedSteps,
        "wall_seconds": cost.wallSeconds, "cpu_seconds": cost.cpuSeconds, "peak_rss_mb": cost.peakRSSMB, "sessions": cost.sessions,
        "model": trainer.config.model,
    ]
    if let i = trainer.config.initModel { obj["init_model"] = URL(fileURLWithPath: i).lastPathComponent }
    if let i = initial {
        obj["initial_val_loss"] = i.loss
        obj["initial_val_energy_mae_mev_atom"] = i.metrics.energyMAE
        obj["initial_val_force_mae"] = i.metrics.forceMAE
        obj["initial_val_force_rmse"] = i.metrics.forceRMSE
    }
    let text = (try? String(contentsOfFile: trainer.runDirectory + "/metrics.csv", encoding: .utf8)) ?? ""
    let lines = text.split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
    if let header = lines.first, let row = lines.dropFirst().first(where: { Int($0.first ?? "") == trainer.bestEpoch }) {
        var best: [String: Double] = [:]
        for (k, v) in zip(header, row) { if let x = Double(v) { best[k] = x } }
        obj["best"] = best
    }
    let summary = try jsonText(obj)
    try AtomicFile.write(Data(summary.utf8), to: trainer.run.summaryPath)
    return summary
}
