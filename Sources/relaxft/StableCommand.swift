import Atoms
import Dynamics
import FineTune
import Foundation
import Potentials

let stableCommand = Command(
    spec: CommandSpec(
        name: "stable", summary: "StABlE training: MD replicas, instability detection, Boltzmann-estimator gradients of an RDF mixed with energy/force loss",
        usage: "--potential MODEL --reference-observable rdf.csv|REF_TRAJ.extxyz --temperature K -o RUN_DIR [--data TRAIN.extxyz] "
            + "[--replicas R] [--lambda 10] [options]\n       relaxft stable --resume RUN_DIR [--epochs N]",
        options: [
            Vocabulary.potential.detail("the starting point"),
            Vocabulary.data.detail("energy/force training frames; needed unless --lambda 0"),
            Vocabulary.test.detail("energy/force errors of the starting and best models"),
            OptionSpec("--reference-observable", value: "FILE", help: "reference RDF: a CSV table (r, then g_reference, g or the second column) or a trajectory (extended XYZ) whose mean RDF is taken"),
            OptionSpec("--reference-skip", value: "N", default: "0", help: "frames of a reference trajectory left out (equilibration)"),
            OptionSpec("--structure", value: "FILE", help: "starting structure of the replicas (default: the first frame of a reference trajectory, else of --data)"),
            OptionSpec("--structure-frame", value: "K", default: "0", help: "frame of --structure (a Python index; not --frames, which would read as a selection of --data)"),
            Vocabulary.trainParams.detail("default: all but atomic_energies").alias("--train"),
            Vocabulary.temperature.detail("β = 1/(k_B T) of the estimator; required").withDefault(nil),
            Vocabulary.timestep,
            Vocabulary.thermostat.detail("the estimator assumes canonical samples"),
            Vocabulary.friction,
            Vocabulary.tdamp,
            Vocabulary.chain,
            Vocabulary.replicas.withDefault("8", reason: "the fraction of unstable replicas gates learning and the estimator averages over them"),
            Vocabulary.steps.detail("MD steps per replica per epoch").withDefault("1000", reason: "MD steps, 1 ps at the default time step, not relaxer steps"),
            OptionSpec("--sample-interval", value: "K", default: "100", help: "steps between the frames given to the estimator (decorrelation)"),
            OptionSpec("--stable-samples-only", help: "do not sample the frame at which a replica is found unstable (by default it is sampled too)"),
            OptionSpec("--discard", value: "N", default: "0", help: "steps at the start of each epoch's segment that are not sampled"),
            Vocabulary.equilibrate.detail("once, with the starting model, before the first epoch (the stored restart states are taken after them)"),
            OptionSpec("--restart", value: "MODE", default: "initial", help: "initial: each learning epoch restarts all replicas from the stored states (StABlE); continue: replicas continue"),
            Vocabulary.epochs.detail("one MD segment each; a learning epoch also takes one optimizer step").withDefault("50", reason: "an epoch is an MD segment of every replica"),
            Vocabulary.lr,
            OptionSpec("--absolute-steps", help: "do not scale the steps of scalar parameters by their starting magnitude"),
            Vocabulary.clip.withDefault("1", reason: "StABlE's setting: the estimator's gradients are noisy"),
            OptionSpec("--lambda", value: "W", default: "10", help: "weight of the energy/force gradient on --data (0: observable only)"),
            Vocabulary.energyWeight.detail("of the total-energy MSE within the energy/force loss").withDefault("0.01", reason: "as pretrain: the energy/force loss's own weights"),
            Vocabulary.forceWeight.detail("of the force MSE within the energy/force loss").withDefault("0.99", reason: "as pretrain: the energy/force loss's own weights"),
            OptionSpec("--ef-batch", value: "N", default: "0", help: "training frames per energy/force gradient, drawn at random (0: all, as StABlE)"),
            Vocabulary.bondThreshold.withDefault("0.25", reason: "StABlE's training threshold; md uses its evaluation threshold"),
            Vocabulary.bondCutoff,
            Vocabulary.minDistance,
            OptionSpec("--unstable-fraction", value: "F", default: "0.75", help: "a learning phase starts when this fraction of replicas went unstable in an epoch (0: learn every epoch)"),
            OptionSpec("--plateau-factor", value: "F", default: "0.2", help: "learning-rate factor on a plateau"),
            OptionSpec("--plateau-patience", value: "N", default: "10", help: "learning epochs without improvement before the rate is cut"),
            OptionSpec("--max-reductions", value: "N", default: "2", help: "a learning phase ends when the rate would be cut once more than this"),
            OptionSpec("--monitor", value: "WHAT", default: "unstable", help: "plateau monitor: unstable (replicas unstable, StABlE) or loss (observable loss)"),
            Vocabulary.rdfRmax.detail("for a trajectory reference; a CSV reference gives its own radii"),
            Vocabulary.rdfBins,
            Vocabulary.rdfSigma.detail("the reference's"),
            Vocabulary.seed.detail("of the velocities, Langevin noise and batches"),
            Vocabulary.out.detail("the run directory"),
            Vocabulary.resume.detail("--epochs sets a new budget; --json and --quiet apply"),
            Vocabulary.json.detail("a summary at the end"),
            Vocabulary.quiet,
        ],
        details: """
            StABlE training (Raja et al., TMLR 2025). Each epoch runs one MD segment of --steps per replica with the
            current model, checking every 10 steps for instability (bond deviation, --min-distance, non-finite
            forces). In the simulation phase unstable replicas are reset to their state at the start of the epoch;
            once at least --unstable-fraction of them went unstable in one epoch, a learning phase begins: every
            epoch restarts the replicas from the stored states, samples frames every --sample-interval steps while
            they are stable (and the frame where each went unstable), and takes one Adam step on
                ∇θ mean_k(⟨g(r_k)⟩ − g_ref(r_k))²  +  λ ∇θ L_EF(--data),
            the first term by the Boltzmann estimator ∇θ⟨O⟩ = −β Cov(O, ∂U/∂θ) (no differentiation through the
            trajectory; β explicit), clipped to --clip. The rate is cut by --plateau-factor after --plateau-patience
            epochs without fewer unstable replicas; the phase ends when none is unstable or after --max-reductions
            cuts, and simulation resumes.

            RUN_DIR: config.json; metrics.csv (per epoch: phase, learning rate, fraction unstable, mean time to
            instability, observable loss and RDF MAE, gradient norms, energy/force MAE on --data, scalar
            parameters); rdf.csv (r, g_initial, g_model of the last epoch, g_reference); best.safetensors (fewest
            unstable replicas, then lowest observable loss), last.safetensors, end_of_cycleK.safetensors;
            checkpoint.safetensors for --resume; summary.json.
            """),
    run: runStable)

/// The configuration of a new StABlE run from the options.
func stableConfig(_ args: ParsedArguments) throws -> (StableConfig, runDirectory: String) {
    func usage(_ m: String) -> UsageError { UsageError(command: "stable", message: m) }
    guard let model = args.string("potential") else { throw usage("--potential MODEL is required") }
    guard let ref = args.string("reference-observable") else { throw usage("--reference-observable FILE is required") }
    guard let dir = args.string("out") else { throw usage("-o/--out RUN_DIR is required") }
    guard let t = try args.positiveDouble("temperature") else { throw usage("--temperature K is required") }
    for f in args.strings("data") + args.strings("test") + [ref] + args.strings("structure") where !FileManager.default.fileExists(atPath: f) {
        throw usage("file '\(f)' not found")
    }
    var o = StableConfig()
    o.pretrained = model
    o.reference = ref
    o.temperature = t
    o.dataFiles = args.strings("data")
    o.testFiles = args.strings("test")
    o.referenceSkip = try args.int("reference-skip")!
    o.structureFile = args.string("structure") ?? ""
    guard let sf = try args.int("structure-frame") else { throw usage("--structure-frame expects an integer") }
    o.structureFrame = sf
    o.trainable = parseList(args.string("train-params"))
    o.timestep = try args.positiveDouble("timestep")!
    o.thermostat = try parseThermostat(args, command: "stable", timestep: o.timestep)
    o.replicas = try args.positiveInt("replicas")!
    o.steps = try args.positiveInt("steps")!
    o.sampleInterval = try args.positiveInt("sample-interval")!
    o.discard = try args.int("discard")!
    o.sampleUnstable = !args.has("stable-samples-only")
    o.equilibrate = try args.int("equilibrate")!
    o.restart = args.string("restart")!
    o.epochs = try args.positiveInt("epochs")!
    o.learningRate = try args.positiveDouble("lr")!
    o.relativeSteps = !args.has("absolute-steps")
    o.clipNorm = try args.double("clip")!
    o.lambda = try args.double("lambda")!
    o.energyWeight = try args.double("energy-weight")!
    o.forceWeight = try args.double("force-weight")!
    o.efBatch = try args.int("ef-batch")!
    o.bondThreshold = try args.positiveDouble("bond-threshold")!
    o.bondCutoff = try args.positiveDouble("bond-cutoff")
    o.minDistance = try args.positiveDouble("min-distance")
    o.unstableFraction = try args.double("unstable-fraction")!
    o.plateauFactor = try args.double("plateau-factor")!
    o.plateauPatience = try args.int("plateau-patience")!
    o.maxReductions = try args.int("max-reductions")!
    o.monitor = args.string("monitor")!
    o.rdfMax = try args.positiveDouble("rdf-rmax")!
    o.rdfBins = try args.positiveInt("rdf-bins")!
    o.rdfSigma = try args.positiveDouble("rdf-sigma")!
    o.seed = try seedOption(args)
    o.command = "relaxft stable " + CommandLine.arguments.dropFirst(2).map(ModelFile.recordedArgument).joined(separator: " ")
    do { try o.validate() } catch let e as StableError { throw usage(e.message) }
    return (o, dir)
}

func runStable(_ args: ParsedArguments) throws -> Int32 {
    func usage(_ m: String) -> UsageError { UsageError(command: "stable", message: m) }
    let trainer: StableTrainer
    let json = args.has("json"), quiet = args.has("quiet")
    let out = FileHandle.standardOutput, err = FileHandle.standardError
    func log(_ s: String) { if !quiet { (json ? err : out).write(Data((s + "\n").utf8)) } }
    if let dir = args.string("resume") {
        try args.refuseOnResume(allowed: ["epochs", "json", "quiet"])
        do { trainer = try StableTrainer.resume(runDirectory: dir, epochs: try args.givenPositiveInt("epochs")) } catch let e as StableError { throw usage(e.message) }
        log("resuming \(dir) after epoch \(trainer.completedEpochs)")
    } else {
        let (o, dir) = try stableConfig(args)
        do { trainer = try StableTrainer(config: o, runDirectory: dir) } catch let e as StableError { throw usage(e.message) }
        log("relaxft stable: \(o.pretrained), training \(trainer.trainableNames.count <= 8 ? trainer.trainableNames.joined(separator: ", ") : "\(trainer.trainableNames.count) tensors") "
            + "(\(trainer.trainableCount) of \(trainer.model.parameterCount) parameters); \(o.replicas) replicas × \(o.steps) steps of \(o.timestep) fs at \(o.temperature) K per epoch; run directory \(dir)")
    }
    let rows = try trainer.run { event in log(stableLine(event, epochs: trainer.config.epochs, replicas: trainer.config.replicas)) }
    let tests = try trainer.testMetrics()
    for (file, before, after) in tests {
        log(String(format: "test %@: energy MAE %.2f → %.2f meV/atom, force MAE %.4f → %.4f eV/Å (%d frames)", file, before.energyMAE, after.energyMAE, before.forceMAE, after.forceMAE, after.frames))
    }
    let summary = try stableSummary(trainer, rows: rows, tests: tests)
    try AtomicFile.write(summary + "\n", to: trainer.run.summaryPath)
    if json { print(summary) }
    log("best model: \(trainer.runDirectory)/best.safetensors (epoch \(trainer.bestEpoch)); metrics \(trainer.runDirectory)/metrics.csv, rdf.csv, summary.json")
    return 0
}

/// summary.json of a StABlE run: epochs, the first and last epochs' RDF error and instability, scalar
/// parameters (initial, best, last), test errors before and after, and the cost over every process.
func stableSummary(_ trainer: StableTrainer, rows: [StableEpochMetrics],
                   tests: [(String, before: ForceFieldMetrics, after: ForceFieldMetrics)]) throws -> String {
    let o = trainer.config
    let best = try ModelFile.load(trainer.runDirectory + "/best.safetensors").potential
    var fields: [(String, String)] = [
        ("epochs", "\(trainer.completedEpochs)"), ("best_epoch", "\(trainer.bestEpoch)"), ("replicas", "\(o.replicas)"),
        ("temperature", jsonNumber(o.temperature)), ("rdf_points", "\(trainer.reference.radii.count)"),
    ]
    // First epoch of the whole run (kept in the checkpoint), last epoch of this call.
    let f = trainer.firstEpochMetrics
    fields += [("first_rdf_mae", f.rdfMAE.map(jsonNumber) ?? "null"), ("first_fraction_unstable", f.fractionUnstable.map(jsonNumber) ?? "null")]
    if let l = rows.last {
        fields += [("last_rdf_mae", l.rdfMAE.map(jsonNumber) ?? "null"), ("last_fraction_unstable", jsonNumber(l.fractionUnstable))]
    }
    let scalars = trainer.scalarNames
    if !scalars.isEmpty {
        func values(_ p: any Potential) -> String { "{" + scalars.map { "\(jsonString($0)): \(jsonNumber(p.parameters[$0]!.scalar))" }.joined(separator: ", ") + "}" }
        fields += [("initial_parameters", values(trainer.initialModel)), ("best_parameters", values(best)), ("last_parameters", values(trainer.model))]
    }
    fields.append(("test", "[" + tests.map { t in
        jsonObject([("file", jsonString(t.0)), ("energy_mae_before", jsonNumber(t.before.energyMAE)), ("energy_mae_after", jsonNumber(t.after.energyMAE)),
                    ("force_mae_before", jsonNumber(t.before.forceMAE)), ("force_mae_after", jsonNumber(t.after.forceMAE)), ("frames", "\(t.after.frames)")])
    }.joined(separator: ", ") + "]"))
    let cost = try trainer.cost()
    fields += [("wall_seconds", jsonNumber(cost.wallSeconds)), ("cpu_seconds", jsonNumber(cost.cpuSeconds)), ("peak_rss_mb", jsonNumber(cost.peakRSSMB)),
               ("sessions", "\(cost.sessions)")]
    return jsonObject(fields)
}

/// The log line of a StABlE event.
func stableLine(_ event: StableEvent, epochs: Int, replicas: Int) -> String {
    switch event {
    case .skippedStep(let epoch):
        return "epoch \(epoch): non-finite parameters after the step; step skipped"
    case .epoch(let row, let unstable, let improved, let change):
        let learning = row.phase == "learn"
        var line = String(format: "epoch %d/%d %@ unstable %d/%d", row.epoch, epochs, learning ? "learn   " : "simulate", unstable, replicas)
        if let t = row.meanTimeToInstability { line += String(format: " (at %.3g ps)", t / 1000) }
        if let l = row.observableLoss, let a = row.rdfMAE { line += String(format: "  RDF MSE %.4g MAE %.4g (%d samples)", l, a, row.samples) }
        if learning { line += String(format: "  lr %.3g", row.learningRate) }
        if let g = row.observableGradientNorm { line += String(format: "  |g_obs| %.3g", g) }
        if let g = row.energyForceGradientNorm { line += String(format: "  |g_EF| %.3g", g) }
        if let e = row.energyMAE, let f = row.forceMAE { line += String(format: "  E %.2f meV/atom F %.4f eV/Å", e, f) }
        if !row.scalars.isEmpty { line += "  " + row.scalars.map { String(format: "%@ %.5g", $0.0, $0.1) }.joined(separator: " ") }
        line += String(format: "  %.0f s", row.seconds) + (improved ? "  *best" : "")
        if let r = change.rateReducedTo { line += String(format: "  lr → %.3g", r) }
        switch change.toSimulate {
        case .calm?: line += "  → simulate (no replica unstable)"
        case .rateReduced(let n)?: line += "  → simulate (learning rate reduced \(n) times)"
        case nil: break
        }
        if let f = change.toLearn { line += String(format: "  → learn (%.0f%% unstable)", 100 * f) }
        return line
    }
}
