import Atoms
import Cluster
import FineTune
import Foundation
import Potentials
import Relax
import Tape

let finetuneCommand = Command(
    spec: CommandSpec(
        name: "finetune",
        summary: "fine-tune a potential by backpropagation through relaxations (BPTT)",
        usage: "--potential MODEL (--data DATA.xyz | --initial A.xyz --target B.xyz) -o RUN_DIR [options]\n       relaxft finetune --resume RUN_DIR [--epochs N]",
        options: [
            Vocabulary.potential.detail("the starting point"),
            Vocabulary.data.detail("initial structures with the reference-relaxed positions in the per-atom column pos_relaxed"),
            Vocabulary.initial,
            Vocabulary.target,
            Vocabulary.frames.detail("of --data, --initial and --target (--val and --force-data are read whole)"),
            Vocabulary.skipUnknownElements,
            Vocabulary.val,
            Vocabulary.valFraction.detail("structures, so 0.2 keeps a few even in small sets"),
            Vocabulary.relaxer,
            Vocabulary.relaxerParam,
            Vocabulary.steps.detail("relaxer steps unrolled per structure (T)").withDefault("50", reason: "the unrolled length T, whose memory and time grow with it"),
            Vocabulary.fmax.detail("not differentiated").describedDefault("none", reason: "every relaxation runs T steps, so each gradient sees the same unroll")
                .alias("--stop-fmax"),
            OptionSpec("--grad", value: "MODE", default: "checkpoint", help: "full, checkpoint[:K] (K = ⌈√T⌉ by default), truncated:K, implicit, or guided:K[:W] (K recorded steps, then implicit at the minimum; loss W·ΔQ(x_K) + (1 − W)·ΔQ(x*), W = 0.5 by default)"),
            OptionSpec("--train-relaxer", value: "NAMES", help: "relaxer hyperparameters to train, e.g. eta or dt,dtmax"),
            Vocabulary.trainParams.detail("default: all"),
            Vocabulary.energyWeight.detail("W·|E − E_ref|/N (eV/atom) at the relaxed structure, added to ΔQ (needs energy_relaxed)"),
            OptionSpec("--force-data", value: "FILE", help: "frames with DFT forces (e.g. the training relaxations' ionic steps; repeatable) for --force-weight"),
            Vocabulary.forceWeight.detail("W·mean|F − F_ref|² ((eV/Å)²) on --force-frames random --force-data frames, added to every step's loss"),
            OptionSpec("--force-frames", value: "K", default: "8", help: "frames drawn per optimizer step for the force term"),
            Vocabulary.epochs.withDefault("30", reason: "an epoch relaxes every training structure, far more work than an epoch of energy/force matching"),
            Vocabulary.lr,
            OptionSpec("--relaxer-lr", value: "RATE", help: "learning rate of relaxer hyperparameters (default: --lr)"),
            OptionSpec("--relative-lr", help: "learning rate relative to each parameter's initial magnitude (for classical potentials)"),
            Vocabulary.schedule,
            Vocabulary.batch,
            Vocabulary.clip,
            OptionSpec("--weight-decay", value: "W", default: "0", help: "AdamW decoupled weight decay"),
            Vocabulary.patience,
            Vocabulary.maxRejectedSteps,
            Vocabulary.seed.detail("of the split and the batch order"),
            Vocabulary.threads,
            Vocabulary.out.detail("the run directory (created; must be empty)"),
            Vocabulary.resume.detail("--epochs sets a new budget; --threads, --json, --quiet apply; other options are refused"),
            Vocabulary.json.detail("a summary at the end"),
            Vocabulary.quiet,
        ],
        details: """
            The loss is the mass-weighted ΔQ = sqrt(Σ m_j |x_j − x*_j|²) (amu^½·Å, minimum image) between the structure after
            T relaxer steps and the reference relaxed structure, averaged over a batch. RUN_DIR receives best.safetensors
            (lowest validation ΔQ; its relaxer settings in the metadata), last.safetensors, config.json, metrics.csv,
            checkpoint.safetensors (for --resume) and cost.json; at the end summary.json (ΔQ before/after, best epoch,
            training cost: wall and CPU seconds, peak resident memory and processes, summed over resumes). --force-weight mixes force matching on DFT frames into every
            step (a regulariser against forgetting, as StABlE mixes in its QM loss); metrics.csv then has train_force_rmse.
            """),
    run: runFinetune)

/// The configuration of a new fine-tuning run from the options.
func fineTuneConfig(_ a: ParsedArguments) throws -> (config: FineTuneConfig, runDirectory: String) {
    let cmd = "finetune"
    guard let pre = a.string("potential") else { throw UsageError(command: cmd, message: "--potential MODEL is required") }
    guard let out = a.string("out") else { throw UsageError(command: cmd, message: "-o/--out RUN_DIR is required") }
    var config = FineTuneConfig(pretrained: pre)
    config.data = a.strings("data")
    config.frames = a.string("frames")
    config.skipUnknownElements = a.has("skip-unknown-elements")
    config.initial = a.string("initial")
    config.target = a.string("target")
    config.relaxer = try parseRelaxer(a, command: cmd)
    config.steps = try a.positiveInt("steps")!
    config.stopFmax = try a.positiveDouble("fmax")
    do { config.gradient = try GradientMode.parse(a.string("grad")!) } catch let e as GradientMode.ParseError {
        throw UsageError(command: cmd, message: "--grad: \(e.message)")
    }
    config.trainRelaxer = parseList(a.string("train-relaxer"))
    let tp = parseList(a.string("train-params"))
    config.trainParameters = tp.isEmpty ? nil : tp
    config.energyWeight = try a.double("energy-weight")!
    guard config.energyWeight >= 0 else { throw UsageError(command: cmd, message: "--energy-weight must be ≥ 0") }
    if config.energyWeight > 0 && config.gradient.differentiatesMinimum {
        throw UsageError(command: cmd, message: "--energy-weight is not supported with --grad \(config.gradient)")
    }
    let forceData = a.strings("force-data")
    let forceWeight = try a.double("force-weight")!
    guard forceWeight >= 0 else { throw UsageError(command: cmd, message: "--force-weight must be ≥ 0") }
    if forceWeight > 0 && forceData.isEmpty { throw UsageError(command: cmd, message: "--force-weight needs --force-data FILE") }
    if forceWeight > 0 {
        config.forceData = forceData
        config.forceWeight = forceWeight
        config.forceFrames = try a.positiveInt("force-frames")!
    }
    config.epochs = try a.positiveInt("epochs")!
    config.learningRate = try a.positiveDouble("lr")!
    config.relaxerLearningRate = try a.positiveDouble("relaxer-lr")
    config.relativeLearningRate = a.has("relative-lr")
    config.schedule = a.string("schedule")!
    config.batchSize = try a.positiveInt("batch")!
    config.clipNorm = try a.double("clip")!
    config.weightDecay = try a.double("weight-decay")!
    config.patience = try a.int("patience")!
    config.maxRejectedSteps = try a.nonNegativeInt("max-rejected-steps")!
    config.validationFraction = try a.double("val-fraction")!
    let val = a.strings("val")
    config.validationData = val.isEmpty ? nil : val
    guard (0..<1).contains(config.validationFraction) else { throw UsageError(command: cmd, message: "--val-fraction must be in [0, 1)") }
    config.seed = try seedOption(a)
    config.threads = try a.positiveInt("threads") ?? defaultThreadCount
    let fm = FileManager.default
    if fm.fileExists(atPath: out), let items = try? fm.contentsOfDirectory(atPath: out), items.contains(where: { !RunDirectory.isTemporary($0) }) {
        throw UsageError(command: cmd, message: "run directory '\(out)' exists and is not empty (use a new --out, or --resume \(out))")
    }
    return (config, out)
}

/// --seed as a non-negative integer.
func seedOption(_ a: ParsedArguments) throws -> UInt64 {
    guard let text = a.string("seed"), let seed = UInt64(text) else {
        throw UsageError(command: a.command, message: "--seed expects a non-negative integer, got '\(a.string("seed") ?? "")'")
    }
    return seed
}

/// The trainer of a fine-tuning run with its data read (training, validation and force frames).
func fineTuneTrainer(_ config: FineTuneConfig, runDirectory: String, quiet: Bool, communicator: any Communicator = LocalCommunicator()) throws -> FineTuneTrainer {
    let cmd = "finetune"
    let potential = try parsePotential(config.pretrained, command: cmd)
    let reader = try DataReader(command: cmd, frames: config.frames, skipUnknownElements: config.skipUnknownElements,
                                potential: potential, potentialName: config.pretrained)
    let examples = try reader.examples(data: config.data, initial: config.initial, target: config.target)
    let validation = try config.validationData.map { try reader.examples(data: $0, initial: nil, target: nil, option: "--val", select: false) }
    let forceFrames = try reader.labelledFrames(config.forceData ?? [], option: "--force-data", select: false, requireForces: true)
    if communicator.rank == 0 { for note in reader.notes { printError("relaxft finetune: \(note)") } }
    return try FineTuneTrainer(config: config, potential: potential, examples: examples, validationExamples: validation,
                         forceFrames: forceFrames, runDirectory: runDirectory, communicator: communicator)
}

func runFinetune(_ a: ParsedArguments) throws -> Int32 {
    let comm = world()
    var config: FineTuneConfig
    let runDir: String
    if let r = a.string("resume") {
        try a.refuseOnResume(allowed: ["epochs", "threads", "json", "quiet"])
        runDir = r
        config = try RunDirectory.resume(r, as: FineTuneConfig.self, epochs: try a.givenPositiveInt("epochs")).config
        // The thread count changes no result (structures are relaxed independently and reduced in order).
        if let t = try a.positiveInt("threads") { config.threads = t }
    } else {
        (config, runDir) = try fineTuneConfig(a)
    }
    // Rank 0 alone reports; the other ranks' output would repeat it.
    let quiet = a.has("quiet") || comm.rank != 0, json = a.has("json") && comm.rank == 0
    let trainer = try fineTuneTrainer(config, runDirectory: runDir, quiet: quiet, communicator: comm)
    // A new run's directory is created by the trainer, now that every input has been read, so that bad input
    // leaves nothing behind.
    if a.has("resume") { try trainer.resume() }
    let log: (String) -> Void = { emit($0, toStandardError: json) }
    if !quiet {
        log("finetune: \(trainer.train.count) training and \(trainer.validation.count) validation structures, \(config.relaxer.name) × \(config.steps) steps, "
            + "gradient \(config.gradient), \(trainer.potential.kind) with \(trainer.potential.parameterCount) parameters"
            + (comm.size > 1 ? "; \(comm.size) ranks (\(comm.backend)) × \(config.threads) threads" : ""))
    }
    let progress = ProgressLine(enabled: !quiet)
    let summary = try trainer.run { event in
        if case .epoch = event { progress.clear() }
        switch fineTuneEventLine(event, config: trainer.config) {
        case .progress(let text, let final)?: progress.update(text, final: final)
        case .log(let text)? where !quiet: log(text)
        case .warning(let text)?:
            progress.clear()
            printError("relaxft finetune: " + text)
        default: break
        }
    }
    if json {
        print(String(decoding: try JSONEncoder.pretty.encode(summary), as: UTF8.self))
    } else if !quiet {
        var s = String(format: "done: train ΔQ %.4g → %.4g", summary.train_dq_mean_before, summary.train_dq_mean_after)
        if let b = summary.val_dq_mean_before, let c = summary.val_dq_mean_after { s += String(format: ", validation ΔQ %.4g → %.4g", b, c) }
        s += " (best epoch \(summary.best_epoch ?? 0)); model: \(runDir)/best.safetensors"
        log(s)
        if let p = summary.parameters, let names = config.trainParameters {
            log("trained parameters: " + names.map { "\($0) = \(p[$0].map { $0.map { String(format: "%.6g", $0) }.joined(separator: " ") } ?? "?")" }.joined(separator: ", "))
        }
    }
    return 0
}

/// A line for the progress display or the log.
enum EventLine {
    case progress(String, final: Bool)
    case log(String)
    /// Shown even with --quiet, on standard error.
    case warning(String)
}

/// How `finetune` shows a trainer event.
func fineTuneEventLine(_ event: FineTuneEvent, config: FineTuneConfig) -> EventLine? {
    switch event {
    case .initialEvaluation(let done, let total, let eta):
        return .progress("relaxing the \(total) training and validation structures with the starting model: \(done)/\(total)  ETA \(formatDuration(eta))",
                         final: done == total)
    case .batch(let epoch, let done, let total, let eta):
        return .progress("epoch \(epoch)/\(config.epochs)  structures \(done)/\(total)  ETA (epoch) \(formatDuration(eta))", final: false)
    case .failedExample(let epoch, let name, let failure):
        return .warning("epoch \(epoch): \(name): the relaxation failed at \(failure); left out of the step")
    case .rejectedStep(let epoch, let reason):
        return .warning("epoch \(epoch): optimizer step not taken: \(reason)")
    case .epoch(let m, let eta):
        var line = String(format: "epoch %d/%d  train ΔQ %.4g (median %.4g)", m.epoch, config.epochs, m.trainDQMean, m.trainDQMedian)
        if let v = m.valDQMean { line += String(format: "  val ΔQ %.4g (median %.4g)", v, m.valDQMedian!) }
        line += String(format: "  |g| %.3g  lr %.3g", m.gradientNorm, m.learningRate)
        for k in config.trainRelaxer { line += String(format: "  %@ %.4g", k, m.relaxer[k] ?? .nan) }
        if let f = m.trainForceRMSE { line += String(format: "  force RMSE %.4g", f) }
        if m.skippedSteps > 0 { line += "  skipped \(m.skippedSteps) steps" }
        if let f = m.failedExamples, f > 0 { line += "  \(f) failed" }
        if let n = m.fixedPointFailures, n > 0 { line += "  no minimum for \(n) (implicit term left out)" }
        line += String(format: "  %.1fs/epoch  ETA %@", m.seconds, formatDuration(eta))
        return .log(line)
    }
}

extension JSONEncoder {
    static var pretty: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        // A NaN in a summary is a result to show, not a reason to lose the output.
        e.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return e
    }
}
