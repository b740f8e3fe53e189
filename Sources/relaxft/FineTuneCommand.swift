import Atoms
import FineTune
import Foundation
import Potentials
import Relax
import Tape

let finetuneCommand = Command(
    spec: CommandSpec(
        name: "finetune",
        summary: "fine-tune a potential by backpropagation through relaxations (BPTT)",
        usage: "--pretrained MODEL (--data DATA.xyz | --initial A.xyz --target B.xyz) [options]",
        options: [
            OptionSpec("--pretrained", value: "MODEL", help: "starting potential: sw, lj, sw:sigma=…,lambda=…, a .safetensors model file or a pulled model name"),
            OptionSpec("--data", value: "FILE", help: "extended XYZ with initial positions and per-atom pos_relaxed (repeatable)"),
            OptionSpec("--initial", value: "FILE", help: "initial structures (with --target, matched frame by frame)"),
            OptionSpec("--target", value: "FILE", help: "reference relaxed structures"),
            OptionSpec("--relaxer", value: "NAME", default: "frame", help: "frame, fire, fire-jaxmd, bfgs or lbfgs"),
            OptionSpec("--relaxer-param", value: "K=V,…", help: "relaxer hyperparameters, e.g. eta=0.01 or dt=0.05,maxstep=0.1"),
            OptionSpec("--steps", value: "T", default: "50", help: "relaxation steps unrolled per structure"),
            OptionSpec("--stop-fmax", value: "F", help: "stop a relaxation early below this fmax (eV/Å; not differentiated)"),
            OptionSpec("--grad", value: "MODE", default: "checkpoint", help: "full, checkpoint[:K] (K = ⌈√T⌉ by default), truncated:K, implicit, or guided:K[:W] (K recorded steps, then implicit at the minimum; loss W·ΔQ(x_K) + (1 − W)·ΔQ(x*), W = 0.5 by default)"),
            OptionSpec("--train-relaxer", value: "NAMES", help: "relaxer hyperparameters to train, e.g. eta or dt,dtmax"),
            OptionSpec("--train-params", value: "NAMES", help: "potential parameters to train (default: all)"),
            OptionSpec("--energy-weight", value: "W", default: "0", help: "add W·|E − E_ref|/N (eV/atom) at the relaxed structure to the loss (needs energy_relaxed)"),
            OptionSpec("--force-data", value: "FILE", help: "frames with DFT forces (e.g. the training relaxations' ionic steps; repeatable) for --force-weight"),
            OptionSpec("--force-weight", value: "W", default: "0", help: "add W·mean|F − F_ref|² ((eV/Å)²) on --force-frames random --force-data frames to every step's loss"),
            OptionSpec("--force-frames", value: "K", default: "8", help: "frames drawn per optimizer step for the force term"),
            OptionSpec("--epochs", value: "N", default: "30", help: "training epochs"),
            OptionSpec("--lr", value: "RATE", default: "0.001", help: "Adam learning rate"),
            OptionSpec("--relaxer-lr", value: "RATE", help: "learning rate of relaxer hyperparameters (default: --lr)"),
            OptionSpec("--relative-lr", help: "learning rate relative to each parameter's initial magnitude (for classical potentials)"),
            OptionSpec("--schedule", value: "NAME", default: "constant", help: "constant, cosine or plateau"),
            OptionSpec("--batch", value: "N", default: "4", help: "structures per optimizer step"),
            OptionSpec("--clip", value: "NORM", default: "0", help: "clip the gradient's global norm (0: off)"),
            OptionSpec("--weight-decay", value: "W", default: "0", help: "AdamW decoupled weight decay"),
            OptionSpec("--patience", value: "N", default: "0", help: "stop after N epochs without validation improvement (0: never)"),
            OptionSpec("--val", value: "FILE", help: "validation structures (extended XYZ with pos_relaxed; repeatable) instead of --val-fraction"),
            OptionSpec("--val-fraction", value: "F", default: "0.2", help: "fraction of structures held out for validation"),
            OptionSpec("--seed", value: "N", default: "0", help: "seed of the split and the batch order"),
            OptionSpec("--threads", value: "N", help: "structures relaxed in parallel (default: number of cores)"),
            OptionSpec("--out", value: "RUN_DIR", help: "run directory (created; must be empty)"),
            OptionSpec("--resume", value: "RUN_DIR", help: "continue an interrupted run exactly, with its stored options (--epochs sets a new budget; --threads, --json, --quiet apply; other options are refused)"),
            OptionSpec("--json", help: "print a JSON summary on stdout (progress goes to stderr)"),
            OptionSpec("--quiet", help: "no progress lines"),
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

/// Examples from --data files or an --initial/--target pair.
func loadExamples(data: [String], initial: String?, target: String?, command: String) throws -> [RelaxationExample] {
    if let i = initial {
        guard let t = target else { throw UsageError(command: command, message: "--initial needs --target") }
        return try RelaxationDataset.examples(initial: try StructureIO.read(i), target: try StructureIO.read(t), initialSource: i, targetSource: t)
    }
    guard !data.isEmpty else { throw UsageError(command: command, message: "give --data FILE (or --initial and --target)") }
    return try data.flatMap { try RelaxationDataset.examples(from: try StructureIO.read($0), source: $0) }
}

func runFinetune(_ a: ParsedArguments) throws -> Int32 {
    let cmd = "finetune"
    var config: FineTuneConfig
    let runDir: String
    let resuming = a.string("resume") != nil
    if let r = a.string("resume") {
        try a.refuseOnResume(allowed: ["epochs", "threads", "json", "quiet"])
        runDir = r
        config = try RunDirectory.resume(r, as: FineTuneConfig.self, epochs: try a.givenPositiveInt("epochs")).config
        // The thread count changes no result (structures are relaxed independently and reduced in order).
        if let t = try a.positiveInt("threads") { config.threads = t }
    } else {
        guard let pre = a.string("pretrained") else { throw UsageError(command: cmd, message: "--pretrained MODEL is required") }
        guard let out = a.string("out") else { throw UsageError(command: cmd, message: "--out RUN_DIR is required") }
        runDir = out
        config = FineTuneConfig(pretrained: pre)
        config.data = a.strings("data")
        config.initial = a.string("initial")
        config.target = a.string("target")
        config.relaxer = try parseRelaxer(a, command: cmd)
        config.steps = try a.positiveInt("steps")!
        config.stopFmax = try a.positiveDouble("stop-fmax")
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
        config.validationFraction = try a.double("val-fraction")!
        let val = a.strings("val")
        config.validationData = val.isEmpty ? nil : val
        guard (0..<1).contains(config.validationFraction) else { throw UsageError(command: cmd, message: "--val-fraction must be in [0, 1)") }
        config.seed = UInt64(try a.int("seed")!)
        config.threads = try a.positiveInt("threads") ?? defaultThreadCount
        let fm = FileManager.default
        if fm.fileExists(atPath: out), let items = try? fm.contentsOfDirectory(atPath: out), !items.isEmpty {
            throw UsageError(command: cmd, message: "run directory '\(out)' exists and is not empty (use a new --out, or --resume \(out))")
        }
    }
    let potential = try PotentialSpec.parse(config.pretrained)
    let examples = try loadExamples(data: config.data, initial: config.initial, target: config.target, command: cmd)
    try checkElements(potential, spec: config.pretrained, numbers: examples.map(\.initial.numbers), names: examples.map(\.name), command: cmd)
    let validation = try config.validationData.map { try loadExamples(data: $0, initial: nil, target: nil, command: cmd) }
    if let v = validation {
        try checkElements(potential, spec: config.pretrained, numbers: v.map(\.initial.numbers), names: v.map(\.name), command: cmd)
    }
    var forceFrames: [Structure] = []
    for path in config.forceData ?? [] {
        let frames = try StructureIO.read(path)
        if let k = frames.firstIndex(where: { $0.forces == nil }) {
            throw UsageError(command: cmd, message: "\(path): frame \(k + 1) has no forces (--force-data needs per-atom forces)")
        }
        forceFrames += frames
    }
    if !forceFrames.isEmpty {
        try checkElements(potential, spec: config.pretrained, numbers: forceFrames.map(\.numbers), names: forceFrames.indices.map { "force frame \($0 + 1)" }, command: cmd)
    }
    let trainer = try FineTuner(config: config, potential: potential, examples: examples, validationExamples: validation,
                                forceFrames: forceFrames, runDirectory: runDir)
    // A new run's directory is created by the trainer, now that every input has been read, so that bad input
    // leaves nothing behind.
    if resuming { try trainer.resume() }
    let quiet = a.has("quiet")
    let log: (String) -> Void = { emit($0, toStandardError: a.has("json")) }
    if !quiet {
        log("finetune: \(trainer.train.count) training and \(trainer.validation.count) validation structures, \(config.relaxer.name) × \(config.steps) steps, gradient \(config.gradient), \(potential.kind) with \(potential.parameterCount) parameters")
    }
    let progress = ProgressLine(enabled: !quiet)
    let summary = try trainer.run { event in
        switch event {
        case .initialEvaluation(let done, let total, let eta):
            progress.update("relaxing the \(total) training and validation structures with the starting model: \(done)/\(total)  ETA \(formatDuration(eta))",
                            final: done == total)
        case .batch(let epoch, let done, let total, let eta):
            progress.update("epoch \(epoch)/\(trainer.config.epochs)  structures \(done)/\(total)  ETA (epoch) \(formatDuration(eta))")
        case .epoch(let m, let eta):
            progress.clear()
            guard !quiet else { return }
            var line = String(format: "epoch %d/%d  train ΔQ %.4g (median %.4g)", m.epoch, trainer.config.epochs, m.trainDQMean, m.trainDQMedian)
            if let v = m.valDQMean { line += String(format: "  val ΔQ %.4g (median %.4g)", v, m.valDQMedian!) }
            line += String(format: "  |g| %.3g  lr %.3g", m.gradientNorm, m.learningRate)
            for k in config.trainRelaxer { line += String(format: "  %@ %.4g", k, m.relaxer[k] ?? .nan) }
            if let f = m.trainForceRMSE { line += String(format: "  force RMSE %.4g", f) }
            if m.skippedSteps > 0 { line += "  skipped \(m.skippedSteps) (non-finite)" }
            line += String(format: "  %.1fs/epoch  ETA %@", m.seconds, formatDuration(eta))
            log(line)
        }
    }
    if a.has("json") {
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

extension JSONEncoder {
    static var pretty: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        return e
    }
}
