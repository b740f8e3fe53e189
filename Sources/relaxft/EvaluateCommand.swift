import Atoms
import FineTune
import Foundation
import Loss
import Potentials
import Relax

let evaluateCommand = Command(
    spec: CommandSpec(
        name: "evaluate",
        summary: "relax reference structures with a model and report the final-structure error (ΔQ)",
        usage: "--model MODEL [--model MODEL2] (--data DATA.xyz | --initial A --target B) [options]",
        options: [
            OptionSpec("--model", value: "MODEL", help: "potential (as --pretrained of finetune); give twice to compare before/after"),
            OptionSpec("--data", value: "FILE", help: "extended XYZ with initial positions and pos_relaxed (repeatable)"),
            OptionSpec("--initial", value: "FILE", help: "initial structures (with --target)"),
            OptionSpec("--target", value: "FILE", help: "reference relaxed structures"),
            OptionSpec("--relaxer", value: "NAME", help: "relaxer (default: the model's training settings, else fire)"),
            OptionSpec("--relaxer-param", value: "K=V,…", help: "relaxer hyperparameters"),
            OptionSpec("--steps", value: "N", help: "maximum relaxation steps (default: the model's, else 1000)"),
            OptionSpec("--fmax", value: "F", help: "stop below this fmax, eV/Å (default: the model's, else 0.01)"),
            OptionSpec("--threshold", value: "Q", help: "ΔQ thresholds for the fraction-below rows (default 0.1,0.3)"),
            OptionSpec("--threads", value: "N", help: "structures relaxed in parallel (default: number of cores)"),
            OptionSpec("--csv", value: "FILE", help: "write per-structure results as CSV"),
            OptionSpec("--json", help: "print one JSON object on stdout"),
        ],
        details: """
            ΔQ = sqrt(Σ m_j |x_j − x*_j|²) in amu^½·Å (minimum image). A relaxation counts as converged when its final fmax is
            below --fmax (or 0.05 eV/Å when relaxations run a fixed number of steps). With two models, the table shows both
            and the per-structure relative improvement 1 − ΔQ₂/ΔQ₁.
            """),
    run: runEvaluate)

struct ModelReport: Encodable {
    var model: String
    var n: Int
    var dq_mean: Double
    var dq_median: Double
    var dq_max: Double
    var dq_fraction_below: [String: Double]
    var rmsd_mean: Double
    var converged_fraction: Double
    var initial_dq_mean: Double
    var energy_error_mean_abs_per_atom: Double?
    var relaxation: RelaxationProtocol
    var seconds: Double
}

func runEvaluate(_ a: ParsedArguments) throws -> Int32 {
    let cmd = "evaluate"
    let models = a.strings("model")
    guard !models.isEmpty else { throw UsageError(command: cmd, message: "--model MODEL is required") }
    guard models.count <= 2 else { throw UsageError(command: cmd, message: "give --model at most twice") }
    let examples = try loadExamples(data: a.strings("data"), initial: a.string("initial"), target: a.string("target"), command: cmd)
    let thresholds = try parseList(a.string("threshold") ?? "0.1,0.3").map { s -> Double in
        guard let v = Double(s), v > 0 else { throw UsageError(command: cmd, message: "--threshold expects positive numbers, got '\(s)'") }
        return v
    }
    let threads = try a.positiveInt("threads") ?? defaultThreadCount
    let overrides = try parseAssignments(a.string("relaxer-param"), command: cmd, option: "relaxer-param")
    // One relaxation protocol for every model, so that a comparison is fair: the last model file's training
    // settings when it has them (the fine-tuned model in a before/after comparison), else FIRE to fmax 0.01;
    // options override.
    let potentials = try models.map { try PotentialSpec.parse($0) }
    var proto = RelaxationProtocol(relaxer: "fire", hyperparameters: [:], steps: 1000, stopFmax: 0.01)
    for spec in models where spec.hasSuffix(".safetensors") {
        if let p = RelaxationProtocol.fromMetadata(try ModelFile.load(spec).metadata) { proto = p }
    }
    if let r = a.string("relaxer") { proto.relaxer = r; proto.hyperparameters = [:] }
    for (k, v) in overrides { proto.hyperparameters[k] = v }
    if let s = try a.positiveInt("steps") { proto.steps = s }
    if let f = try a.positiveDouble("fmax") { proto.stopFmax = f }
    proto.convergedFmax = proto.stopFmax ?? 0.05
    _ = try proto.makeRelaxer()
    var reports: [ModelReport] = []
    var perStructure: [[ExampleEvaluation]] = []
    for (spec, potential) in zip(models, potentials) {
        let t0 = Date()
        let evals = try evaluateRelaxations(examples, potential: potential, protocol: proto, threads: threads)
        let dq = ErrorSummary(evals.map(\.deltaQ), thresholds: thresholds)
        let eErr = evals.compactMap(\.energyErrorPerAtom)
        reports.append(ModelReport(model: spec, n: dq.n, dq_mean: dq.mean, dq_median: dq.median, dq_max: dq.max,
                                   dq_fraction_below: dq.fractionBelow, rmsd_mean: ErrorSummary(evals.map(\.rmsd)).mean,
                                   converged_fraction: Double(evals.filter(\.converged).count) / Double(max(evals.count, 1)),
                                   initial_dq_mean: ErrorSummary(evals.map(\.initialDeltaQ)).mean,
                                   energy_error_mean_abs_per_atom: eErr.isEmpty ? nil : eErr.map { abs($0) }.reduce(0, +) / Double(eErr.count),
                                   relaxation: proto, seconds: Date().timeIntervalSince(t0)))
        perStructure.append(evals)
    }
    var improvement: (values: [Double], mean: Double, median: Double)? = nil
    if perStructure.count == 2 {
        improvement = ErrorSummary.relativeImprovement(before: perStructure[0].map(\.deltaQ), after: perStructure[1].map(\.deltaQ))
    }
    if let csv = a.string("csv") {
        var lines = ["structure,atoms,initial_dq," + models.indices.map { "dq_\($0 + 1),rmsd_\($0 + 1),converged_\($0 + 1),fmax_\($0 + 1),steps_\($0 + 1)" }.joined(separator: ",")
                     + (improvement != nil ? ",relative_improvement" : "")]
        for (i, ex) in examples.enumerated() {
            var row = "\(ex.name),\(ex.initial.count),\(perStructure[0][i].initialDeltaQ)"
            for p in perStructure { row += ",\(p[i].deltaQ),\(p[i].rmsd),\(p[i].converged),\(p[i].fmax),\(p[i].steps)" }
            if let imp = improvement { row += ",\(imp.values[i])" }
            lines.append(row)
        }
        try AtomicFile.write(lines.joined(separator: "\n") + "\n", to: csv)
    }
    if a.has("json") {
        var obj: [String: Any] = [:]
        let r = reports.last!
        obj["n"] = r.n
        obj["dq_mean"] = r.dq_mean
        obj["dq_median"] = r.dq_median
        obj["converged_fraction"] = r.converged_fraction
        obj["models"] = try reports.map { try JSONSerialization.jsonObject(with: JSONEncoder.pretty.encode($0)) }
        if let imp = improvement {
            obj["relative_improvement_mean"] = imp.mean
            obj["relative_improvement_median"] = imp.median
        }
        let data = try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys, .prettyPrinted])
        print(String(decoding: data, as: UTF8.self))
        return 0
    }
    func row(_ label: String, _ values: [String]) -> String {
        label.padding(toLength: 34, withPad: " ", startingAt: 0) + values.map { $0.padding(toLength: 16, withPad: " ", startingAt: 0) }.joined()
    }
    print("\(examples.count) structures; ΔQ in amu^½·Å")
    print(row("", reports.indices.map { models.count == 2 ? ($0 == 0 ? "model 1" : "model 2") : "model" }))
    print(row("relaxation", reports.map { "\($0.relaxation.relaxer)≤\($0.relaxation.steps)" }))
    print(row("ΔQ mean", reports.map { String(format: "%.4f", $0.dq_mean) }))
    print(row("ΔQ median", reports.map { String(format: "%.4f", $0.dq_median) }))
    print(row("ΔQ max", reports.map { String(format: "%.4f", $0.dq_max) }))
    for t in thresholds {
        print(row("fraction ΔQ < \(t)", reports.map { String(format: "%.3f", $0.dq_fraction_below["\(t)"] ?? .nan) }))
    }
    print(row("RMSD mean (Å)", reports.map { String(format: "%.4f", $0.rmsd_mean) }))
    print(row("converged fraction", reports.map { String(format: "%.3f", $0.converged_fraction) }))
    print(row("initial ΔQ mean (do nothing)", reports.map { String(format: "%.4f", $0.initial_dq_mean) }))
    if reports.contains(where: { $0.energy_error_mean_abs_per_atom != nil }) {
        print(row("|E − E_ref| per atom (eV)", reports.map { $0.energy_error_mean_abs_per_atom.map { String(format: "%.4f", $0) } ?? "–" }))
    }
    if let imp = improvement {
        print(String(format: "per-structure relative improvement: mean %.1f %%, median %.1f %%", 100 * imp.mean, 100 * imp.median))
    }
    return 0
}
