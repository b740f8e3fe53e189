import Atoms
import FineTune
import Foundation
import Potentials
import Tape

let pretrainCommand = Command(
    spec: CommandSpec(
        name: "pretrain", summary: "train a neural potential (SO3krates or SchNet) on DFT energies and forces, or fine-tune one (--init)",
        usage: "--data TRAIN.extxyz [--val VAL.extxyz | --val-fraction F] (--model so3krates|schnet | --init MODEL) --out RUN_DIR [options]\n       relaxft pretrain --resume RUN_DIR [--epochs N]",
        options: [
            OptionSpec("--init", value: "MODEL", help: "start from this model file or pulled model (so3krates, schnet, chgnet, sevennet): conventional energy/force fine-tuning; the architecture options do not apply"),
            OptionSpec("--refit-reference-energies", help: "with --init: first shift the per-element reference energies to fit the training energies (for data from another DFT code); default: keep the model's"),
            OptionSpec("--data", value: "FILE", help: "training frames, extended XYZ with energy and forces (repeatable)"),
            OptionSpec("--val", value: "FILE", help: "validation frames (repeatable); else a random fraction of --data"),
            OptionSpec("--val-fraction", value: "F", default: "0.1", help: "validation fraction when no --val is given"),
            OptionSpec("--test", value: "FILE", help: "test frames evaluated with the best model at the end (repeatable)"),
            OptionSpec("--model", value: "KIND", default: "so3krates", help: "so3krates or schnet"),
            OptionSpec("--features", value: "F", help: "invariant features (so3krates 48, schnet 64)"),
            OptionSpec("--layers", value: "L", help: "layers / interaction blocks (so3krates 2, schnet 3)"),
            OptionSpec("--heads", value: "H", help: "so3krates: invariant attention heads (4)"),
            OptionSpec("--max-degree", value: "L", help: "so3krates: Euclidean variables of degrees 1…L (3)"),
            OptionSpec("--cutoff", value: "Å", default: "5", help: "interaction cutoff"),
            OptionSpec("--radial-basis", value: "K", default: "32", help: "radial basis functions"),
            OptionSpec("--energy-weight", value: "W", default: "0.01", help: "weight of the total-energy MSE (eV²)"),
            OptionSpec("--force-weight", value: "W", default: "0.99", help: "weight of the force MSE ((eV/Å)²)"),
            OptionSpec("--stress-weight", value: "W", default: "0", help: "weight of the stress MSE ((eV/Å³)², frames with stress)"),
            OptionSpec("--epochs", value: "N", help: "epoch budget (default 100; on --resume a new budget, which re-targets a cosine schedule)"),
            OptionSpec("--lr", value: "RATE", default: "0.001", help: "Adam learning rate"),
            OptionSpec("--schedule", value: "S", default: "plateau", help: "plateau (×0.5 after --schedule-patience epochs), cosine, constant"),
            OptionSpec("--schedule-patience", value: "N", default: "5", help: "epochs without validation improvement before the rate halves"),
            OptionSpec("--patience", value: "N", default: "25", help: "early stopping: epochs without validation improvement"),
            OptionSpec("--clip", value: "NORM", default: "0", help: "global gradient-norm clipping (0: off)"),
            OptionSpec("--max-rejected-steps", value: "N", default: "10", help: "stop (exit 1, keeping the last good model) after N optimizer updates in a row were rejected: non-finite loss or gradient, or parameters out of range (0: never)"),
            OptionSpec("--batch", value: "N", default: "4", help: "structures per mini-batch"),
            OptionSpec("--seed", value: "N", default: "1", help: "seed of the initialisation, split and shuffling"),
            OptionSpec("--out", value: "RUN_DIR", help: "run directory (checkpoints, metrics.csv)"),
            OptionSpec("--resume", value: "RUN_DIR", help: "continue the run in RUN_DIR exactly where it stopped"),
        ],
        details: """
            Reference energies per element are fitted by least squares first; then Adam on mini-batches (several
            structures batched into one graph), loss = w_E·MSE(E) + w_F·MSE(F) [+ w_S·MSE(σ)] with weights renormalised
            to sum 1. RUN_DIR gets config.json, metrics.csv (energy MAE/RMSE in meV/atom, force MAE/RMSE in eV/Å, train
            and validation, per epoch), best.safetensors and last.safetensors (model files with provenance), and
            checkpoint.safetensors (weights, Adam and RNG state) from which --resume continues bit for bit, and at the end
            summary.json (best epoch and its metrics, the initial model's validation errors with --init, wall and CPU
            seconds and peak resident memory). With --init the per-element reference energies are not trained (as in
            pretraining, where they are fitted): kept, or shifted once with --refit-reference-energies.
            """),
    run: runPretrain)

func runPretrain(_ args: ParsedArguments) throws -> Int32 {
    let command = "relaxft pretrain " + CommandLine.arguments.dropFirst(2).map(ModelFile.recordedArgument).joined(separator: " ")
    let trainer: Pretrainer
    do {
        if let dir = args.string("resume") {
            try args.refuseOnResume(allowed: ["epochs"])
            trainer = try Pretrainer.resume(runDirectory: dir, epochs: try args.givenPositiveInt("epochs"))
            emit("resuming \(dir) after epoch \(trainer.completedEpochs)")
        } else {
            let data = args.strings("data")
            guard !data.isEmpty else { throw UsageError(command: "pretrain", message: "--data FILE is required") }
            guard let out = args.string("out") else { throw UsageError(command: "pretrain", message: "--out RUN_DIR is required") }
            for f in data + args.strings("val") + args.strings("test") where !FileManager.default.fileExists(atPath: f) {
                throw UsageError(command: "pretrain", message: "file '\(f)' not found")
            }
            var o = PretrainOptions()
            o.model = args.string("model")!
            if let initModel = args.string("init") {
                let path = try resolveModelPath(initModel, command: "pretrain")
                o.initModel = path
                o.model = try ModelFile.load(path).potential.kind
                o.refitReferenceEnergies = args.has("refit-reference-energies")
            } else if args.has("refit-reference-energies") {
                throw UsageError(command: "pretrain", message: "--refit-reference-energies needs --init MODEL")
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
            o.epochs = try args.positiveInt("epochs") ?? 100
            o.learningRate = try args.positiveDouble("lr")!
            o.schedule = args.string("schedule")!
            o.schedulePatience = try args.positiveInt("schedule-patience")!
            o.patience = try args.positiveInt("patience")!
            o.clipNorm = try args.double("clip")!
            o.maxRejectedSteps = try args.nonNegativeInt("max-rejected-steps")!
            o.batch = try args.positiveInt("batch")!
            guard let seed = UInt64(args.string("seed")!) else { throw UsageError(command: "pretrain", message: "--seed expects a non-negative integer") }
            o.seed = seed
            o.valFraction = try args.double("val-fraction")!
            o.dataFiles = data
            o.valFiles = args.strings("val")
            o.testFiles = args.strings("test")
            o.command = command
            do { try o.validate() } catch let e as PretrainError { throw UsageError(command: "pretrain", message: e.message) }
            trainer = try Pretrainer(options: o, runDirectory: out)
            emit("\(o.model): \(trainer.model.parameterCount) parameters; run directory \(out)")
        }
    }
    // The starting point of a warm start, for the summary (before → after).
    var initial: (loss: Double, metrics: ForceFieldMetrics)? = nil
    if trainer.options.initModel != nil && trainer.completedEpochs == 0 {
        initial = trainer.validationMetrics()
        emit("initial model on the validation frames: \(initial!.metrics)")
        }
    let progress = ProgressLine()
    try trainer.run { event in
        switch event {
        case .batch(let epoch, let b, let nb, let loss, let lr, let eta):
            progress.update(String(format: "epoch %d/%d  batch %d/%d  loss %.4g  lr %.2g  ETA %@", epoch, trainer.options.epochs, b, nb, loss, lr, formatDuration(eta)))
        case .rejectedStep(let epoch, let reason):
            progress.clear()
            printError("relaxft pretrain: epoch \(epoch): optimizer step not taken: \(reason)")
        case .epoch(let row, let improved):
            progress.clear()
            emit(String(format: "epoch %d/%d  lr %.2g  train: loss %.4g  E %.2f meV/atom  F %.4f eV/Å | val: loss %.4g  E %.2f meV/atom  F %.4f eV/Å (RMSE %.4f)%@  %.0f s",
                         row.epoch, trainer.options.epochs, row.learningRate, row.trainLoss, row.train.energyMAE, row.train.forceMAE,
                         row.valLoss, row.val.energyMAE, row.val.forceMAE, row.val.forceRMSE, improved ? "  *best" : "", row.seconds))
        }
    }
    if trainer.stoppedEarly { emit("early stop: no validation improvement for \(trainer.options.patience) epochs (best epoch \(trainer.bestEpoch))") }
    for (file, m) in try trainer.evaluateBest() { emit("test \(file): \(m)") }
    emit("best model: \(trainer.runDirectory)/best.safetensors (epoch \(trainer.bestEpoch))")
    try writePretrainSummary(trainer, initial: initial)
    return 0
}

/// A model file path for a model spec that names a file or a pulled model (chgnet-0.3.0).
func resolveModelPath(_ spec: String, command: String) throws -> String {
    if FileManager.default.fileExists(atPath: spec) { return spec }
    if ModelStore.isModelName(spec) {
        let p = ModelStore.path(of: spec)
        if FileManager.default.fileExists(atPath: p) { return p }
        throw UsageError(command: command, message: "model '\(spec)' is not pulled yet (relaxft models pull \(spec))")
    }
    throw UsageError(command: command, message: "model file '\(spec)' not found")
}

/// RUN_DIR/summary.json: the best epoch's row of metrics.csv, the initial model's validation errors (warm
/// start), and the training cost of this process (wall and CPU seconds, peak resident memory).
func writePretrainSummary(_ trainer: Pretrainer, initial: (loss: Double, metrics: ForceFieldMetrics)?) throws {
    let cost = try trainer.cost()
    var obj: [String: Any] = [
        "epochs": trainer.completedEpochs, "best_epoch": trainer.bestEpoch, "stopped_early": trainer.stoppedEarly,
        "train_frames": trainer.trainFrameCount, "val_frames": trainer.validationFrameCount,
        "wall_seconds": cost.wallSeconds, "cpu_seconds": cost.cpuSeconds, "peak_rss_mb": cost.peakRSSMB, "sessions": cost.sessions,
        "model": trainer.options.model,
    ]
    if let i = trainer.options.initModel { obj["init_model"] = URL(fileURLWithPath: i).lastPathComponent }
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
    let data = try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys, .prettyPrinted])
    try AtomicFile.write(data, to: trainer.run.summaryPath)
}
