import Atoms
import Cluster
import FineTune
import Foundation
import Loss
import Potentials
import Relax

let evaluateCommand = Command(
    spec: CommandSpec(
        name: "evaluate",
        summary: "score models on data: relax structures and report the final-structure error (ΔQ), and energy, force and stress errors on labelled frames",
        usage: "--potential MODEL [--potential MODEL2 …] (--data DATA.xyz | --initial A --target B) [options]",
        options: [
            Vocabulary.potential.detail("repeat to compare models (the first is the baseline of the improvement figures)"),
            OptionSpec("--label", value: "NAME", help: "name of the corresponding --potential in the tables, CSV and JSON (repeatable; default: the model spec)"),
            Vocabulary.data.detail("structures with the reference-relaxed positions in pos_relaxed (relaxed and scored by ΔQ), or frames with energy, forces or stress (scored as they are)"),
            Vocabulary.initial,
            Vocabulary.target,
            Vocabulary.frames.detail("of --data, --initial and --target"),
            Vocabulary.skipUnknownElements,
            Vocabulary.relaxer.detail("with --protocol own, for models without a stored protocol"),
            Vocabulary.relaxerParam,
            Vocabulary.steps.detail("at most N relaxer steps per structure"),
            Vocabulary.fmax,
            OptionSpec("--protocol", value: "WHICH", default: "common",
                       help: "common: every model relaxes to --fmax with --relaxer (a fair comparison); own: each model file that stores the relaxation it was fine-tuned with uses that one (T steps, its relaxer settings); a model file: every model uses the protocol stored in it"),
            OptionSpec("--threshold", value: "Q", help: "ΔQ thresholds for the fraction-below rows (default 0.1,0.3)"),
            OptionSpec("--basin-dq", value: "Q", default: "1.0", help: "same basin as the reference: ΔQ below Q (amu^½·Å) and the same bonds"),
            OptionSpec("--bond-scale", value: "S", default: "1.2", help: "bonded when closer than S × (sum of covalent radii)"),
            Vocabulary.threads,
            Vocabulary.out.detail("a CSV file, one row per structure (per frame when only labelled frames are given)").alias("--csv"),
            Vocabulary.json.detail("one object"),
            Vocabulary.quiet.detail("no protocol lines and no progress"),
        ],
        details: """
            Each --data file is read as relaxation data when every frame has pos_relaxed, else as labelled frames.

            Relaxations: every model relaxes every structure under the protocol printed first (by default FIRE to
            fmax 0.01 eV/Å, at most 500 steps, the same for every model). ΔQ = sqrt(Σ m_j |x_j − x*_j|²) in
            amu^½·Å (minimum image). A relaxation counts as converged when its final fmax is below --fmax (or 0.05
            eV/Å when relaxations run a fixed number of steps). Same basin: ΔQ < --basin-dq and the same bond graph
            as the reference (pairs closer than --bond-scale × the sum of Cordero's covalent radii; Si–Si 2.66 Å).
            Energy errors: |E_model(final) − E_ref(relaxed)| per atom, meaningful only when model and data share an
            energy zero, and the relaxation-energy error (E_final − E_initial)_model − (E_relaxed − E_initial)_ref in
            eV, which needs energy_initial and energy_relaxed in the data and is independent of the energy zero. With
            several models, the per-structure relative improvement 1 − ΔQ_k/ΔQ_1 of each model against the first is
            reported.

            Labelled frames (as mace_eval_configs and nequip-evaluate score them): energy MAE and RMSE per atom
            (meV/atom), force MAE and RMSE per component (eV/Å), stress MAE and RMSE per component (meV/Å³, frames
            with a stress), over all frames and per configuration type (info config_type, else defect or kind).
            """),
    run: runEvaluate)

struct GroupReport: Encodable {
    var n: Int
    var dq_mean: Double
    var dq_median: Double
    var same_basin_fraction: Double
}

struct ModelReport: Encodable {
    var label: String
    var model: String
    var n: Int
    var dq_mean: Double
    var dq_median: Double
    var dq_max: Double
    var dq_fraction_below: [String: Double]
    var rmsd_mean: Double
    var converged_fraction: Double
    var same_topology_fraction: Double
    var same_basin_fraction: Double
    var initial_dq_mean: Double
    var energy_error_mean_abs_per_atom: Double?
    var relax_energy_error_mean_abs: Double?
    /// Per-structure relative improvement against the first model (absent for the first).
    var improvement_mean: Double?
    var improvement_median: Double?
    var by_group: [String: GroupReport]
    var relaxation: RelaxationProtocol
    var seconds: Double
    var improvementValues: [Double] = []
    /// Relaxations that failed (non-finite energy, forces or positions): never converged.
    var failed = 0

    enum CodingKeys: String, CodingKey {
        case label, model, n, failed, dq_mean, dq_median, dq_max, dq_fraction_below, rmsd_mean, converged_fraction, same_topology_fraction
        case same_basin_fraction, initial_dq_mean, energy_error_mean_abs_per_atom, relax_energy_error_mean_abs, improvement_mean
        case improvement_median, by_group, relaxation, seconds
    }
}


/// The models, protocols and data of an `evaluate` run, read and checked before any relaxation.
struct EvaluateJob {
    var specs: [String]
    var labels: [String]
    var potentials: [any Potential]
    /// The relaxation protocol of each model.
    var protocols: [RelaxationProtocol]
    /// Relaxation data (pos_relaxed) and labelled frames, each with the files they came from.
    var examples: [RelaxationExample] = []
    var relaxationFiles: [String] = []
    var labelled: [Structure] = []
    var labelledFiles: [String] = []
    var thresholds: [Double]
    var basin: BasinCriterion
    var threads: Int
    var notes: [String] = []

    init(_ a: ParsedArguments) throws {
        let cmd = "evaluate"
        specs = a.strings("potential")
        guard !specs.isEmpty else { throw UsageError(command: cmd, message: "--potential MODEL is required") }
        labels = a.strings("label")
        guard labels.count <= specs.count else { throw UsageError(command: cmd, message: "more --label than --potential options") }
        labels += specs.dropFirst(labels.count)
        thresholds = try parseList(a.string("threshold") ?? "0.1,0.3").map { s -> Double in
            guard let v = Double(s), v > 0 else { throw UsageError(command: cmd, message: "--threshold expects positive numbers, got '\(s)'") }
            return v
        }
        basin = BasinCriterion(deltaQ: try a.positiveDouble("basin-dq")!, bondScale: try a.positiveDouble("bond-scale")!)
        threads = try a.positiveInt("threads") ?? defaultThreadCount
        potentials = try specs.map { try parsePotential($0, command: cmd) }
        protocols = try Self.protocols(a, specs: specs)
        for (spec, p) in zip(specs, potentials) { try readData(a, potential: p, name: spec) }
        guard !examples.isEmpty || !labelled.isEmpty else { throw UsageError(command: cmd, message: "give --data FILE (or --initial and --target)") }
    }

    /// Reads the data, once per model so that each model's unknown elements are checked (the data are the
    /// same for every model: the first model's reading is kept, the others must agree).
    mutating func readData(_ a: ParsedArguments, potential: any Potential, name: String) throws {
        let reader = try DataReader(command: "evaluate", frames: a.string("frames"), skipUnknownElements: a.has("skip-unknown-elements"),
                                    potential: potential, potentialName: name)
        var examples: [RelaxationExample] = [], labelled: [Structure] = [], relaxationFiles: [String] = [], labelledFiles: [String] = []
        if let i = a.string("initial") {
            examples = try reader.examples(data: [], initial: i, target: a.string("target"))
            relaxationFiles = [i]
        }
        for path in a.strings("data") {
            let frames = try reader.frames(path, option: "--data")
            if frames.allSatisfy({ $0.arrays["pos_relaxed"] != nil }) {
                examples += try reader.keepKnown(try RelaxationDataset.examples(from: frames, source: path), structure: \.initial, name: \.displayName, file: path)
                relaxationFiles.append(path)
            } else if frames.allSatisfy({ $0.energy != nil || $0.forces != nil || $0.stress != nil }) {
                labelled += try reader.keepKnown(Array(frames.enumerated()), structure: \.element, name: { "\(path): frame \($0.offset + 1)" }, file: path).map(\.element)
                labelledFiles.append(path)
            } else {
                throw UsageError(command: "evaluate", message: "\(path): neither relaxation data (pos_relaxed in every frame) nor labelled frames (energy, forces or stress in every frame)")
            }
        }
        if self.examples.isEmpty && self.labelled.isEmpty {
            (self.examples, self.labelled, self.relaxationFiles, self.labelledFiles) = (examples, labelled, relaxationFiles, labelledFiles)
        } else if examples.count != self.examples.count || labelled.count != self.labelled.count {
            throw UsageError(command: "evaluate", message: "\(name) and \(specs[0]) know different elements, so --skip-unknown-elements would score them on different structures")
        }
        for n in reader.notes where !notes.contains(n) { notes.append(n) }
    }

    /// The relaxation protocol of each model: the common one (--relaxer, --fmax, --steps), or with
    /// --protocol own the one a model file stores from its fine-tuning.
    static func protocols(_ a: ParsedArguments, specs: [String]) throws -> [RelaxationProtocol] {
        var common = RelaxationProtocol(relaxer: try parseRelaxer(a, command: "evaluate"), steps: try a.positiveInt("steps")!,
                                        stopFmax: try a.positiveDouble("fmax")!)
        common.convergedFmax = common.stopFmax!
        switch a.string("protocol")! {
        case "common": return specs.map { _ in common }
        case "own":
            return try specs.map { spec in
                guard let path = try? resolveModelPath(spec, command: "evaluate"), var own = RelaxationProtocol.fromMetadata(try ModelFile.load(path).metadata) else {
                    return common
                }
                own.convergedFmax = own.stopFmax ?? 0.05
                return own
            }
        case let model:
            // A model file's stored protocol for every model (a fine-tuned model's T-step relaxation, also for
            // the model it started from).
            guard let path = try? resolveModelPath(model, command: "evaluate") else {
                throw UsageError(command: "evaluate", message: "--protocol expects common, own or a fine-tuned model file (or name), got '\(model)'")
            }
            guard var p = RelaxationProtocol.fromMetadata(try ModelFile.load(path).metadata) else {
                throw UsageError(command: "evaluate", message: "--protocol \(model): the model file stores no relaxation protocol (expected common, own or a fine-tuned model file)")
            }
            p.convergedFmax = p.stopFmax ?? 0.05
            return specs.map { _ in p }
        }
    }
}

func runEvaluate(_ a: ParsedArguments) throws -> Int32 {
    let job = try EvaluateJob(a)
    let comm = world()
    // Every rank relaxes its share of the structures; rank 0 alone reports and writes.
    let json = a.has("json") && comm.rank == 0, quiet = a.has("quiet") || comm.rank != 0
    let terminal = Terminal(handle: json ? FileHandle.standardError : FileHandle.standardOutput)
    if comm.rank == 0 { for n in job.notes { printError("relaxft evaluate: \(n)") } }
    if !quiet {
        for k in job.specs.indices {
            terminal.line("model \(k + 1) (\(job.labels[k])): \(job.specs[k])" + (job.examples.isEmpty ? "" : "; relaxations: \(job.protocols[k])"))
        }
    }
    let progress = ProgressLine(enabled: !quiet)
    var reports: [ModelReport] = [], perStructure: [[ExampleEvaluation]] = []
    if !job.examples.isEmpty {
        (reports, perStructure) = try relaxationReports(job, progress: progress, communicator: comm)
    }
    var labelled: [LabelledReport] = []
    if !job.labelled.isEmpty {
        labelled = try labelledReports(job, progress: progress, communicator: comm)
    }
    guard comm.rank == 0 else { return 0 }
    if let path = a.string("out") {
        let text = job.examples.isEmpty ? labelledCSV(job, labelled) : relaxationCSV(job, reports: reports, perStructure: perStructure)
        try AtomicFile.write(text, to: path)
    }
    if json {
        print(try evaluationJSON(job, reports: reports, labelled: labelled))
        return 0
    }
    if !reports.isEmpty { printRelaxationTable(job, reports: reports) }
    if !labelled.isEmpty {
        if !reports.isEmpty { print("") }
        printLabelledTable(job, labelled)
    }
    return 0
}

/// Relaxes every structure with every model; the summaries and the per-structure results, model by model.
func relaxationReports(_ job: EvaluateJob, progress: ProgressLine, communicator: any Communicator) throws -> ([ModelReport], [[ExampleEvaluation]]) {
    var reports: [ModelReport] = [], perStructure: [[ExampleEvaluation]] = []
    for (k, potential) in job.potentials.enumerated() {
        let t0 = Date()
        let n = job.examples.count
        let evals = try evaluateRelaxations(job.examples, potential: potential, protocol: job.protocols[k], threads: job.threads, basin: job.basin,
                                            communicator: communicator) { done in
            let eta = Date().timeIntervalSince(t0) / Double(done) * Double(n - done)
            progress.update("model \(k + 1)/\(job.specs.count): relaxed \(done)/\(n) structures  ETA \(formatDuration(eta))", final: done == n)
        }
        progress.clear()
        for e in evals where e.failure != nil {
            printError("relaxft evaluate: \(job.labels[k]): \(e.name): the relaxation failed at \(e.failure!); counted as not converged")
        }
        let first = perStructure.first.map { $0.map(\.deltaQ) }
        reports.append(ModelReport(label: job.labels[k], spec: job.specs[k], evals: evals, thresholds: job.thresholds, firstModel: first,
                                   relaxation: job.protocols[k], seconds: Date().timeIntervalSince(t0)))
        perStructure.append(evals)
    }
    return (reports, perStructure)
}

extension ModelReport {
    /// The summary of one model's relaxations (`firstModel`: the first model's ΔQ per structure, for the improvement).
    init(label: String, spec: String, evals: [ExampleEvaluation], thresholds: [Double], firstModel: [Double]?, relaxation: RelaxationProtocol, seconds: Double) {
        let dq = ErrorSummary(evals.map(\.deltaQ), thresholds: thresholds)
        let n = Double(max(evals.count, 1))
        func meanAbs(_ xs: [Double]) -> Double? { xs.isEmpty ? nil : xs.map { abs($0) }.reduce(0, +) / Double(xs.count) }
        var groups: [String: GroupReport] = [:]
        for g in Set(evals.compactMap(\.group)) {
            let e = evals.filter { $0.group == g }
            let s = ErrorSummary(e.map(\.deltaQ))
            groups[g] = GroupReport(n: e.count, dq_mean: s.mean, dq_median: s.median, same_basin_fraction: Double(e.filter(\.sameBasin).count) / Double(e.count))
        }
        let imp = firstModel.map { ErrorSummary.relativeImprovement(before: $0, after: evals.map(\.deltaQ)) }
        self.init(label: label, model: spec, n: dq.n, dq_mean: dq.mean, dq_median: dq.median, dq_max: dq.max,
                  dq_fraction_below: dq.fractionBelow, rmsd_mean: ErrorSummary(evals.map(\.rmsd)).mean,
                  converged_fraction: Double(evals.filter(\.converged).count) / n,
                  same_topology_fraction: Double(evals.filter { $0.differingBonds == 0 }.count) / n,
                  same_basin_fraction: Double(evals.filter(\.sameBasin).count) / n,
                  initial_dq_mean: ErrorSummary(evals.map(\.initialDeltaQ)).mean,
                  energy_error_mean_abs_per_atom: meanAbs(evals.compactMap(\.energyErrorPerAtom)),
                  relax_energy_error_mean_abs: meanAbs(evals.compactMap(\.relaxationEnergyError)),
                  improvement_mean: imp?.mean, improvement_median: imp?.median, by_group: groups,
                  relaxation: relaxation, seconds: seconds, improvementValues: imp?.values ?? [], failed: evals.filter { $0.failure != nil }.count)
    }
}

/// One model's errors on the labelled frames, with its predictions (frame i → prediction i).
struct LabelledReport {
    var overall: ForceFieldMetrics
    var byConfigType: [String: ForceFieldMetrics]
    var predictions: [FramePrediction]
}

func labelledReports(_ job: EvaluateJob, progress: ProgressLine, communicator: any Communicator) throws -> [LabelledReport] {
    try job.potentials.enumerated().map { k, potential in
        let t0 = Date()
        let n = job.labelled.count
        let predictions = try predictFrames(job.labelled, potential: potential, threads: job.threads, stress: true, communicator: communicator) { done in
            let eta = Date().timeIntervalSince(t0) / Double(done) * Double(n - done)
            progress.update("model \(k + 1)/\(job.specs.count): \(done)/\(n) labelled frames  ETA \(formatDuration(eta))", final: done == n)
        }
        let (overall, byType) = ForceFieldMetrics.score(job.labelled, predictions: predictions)
        return LabelledReport(overall: overall, byConfigType: byType, predictions: predictions)
    }
}
