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
        usage: "--model MODEL [--model MODEL2 …] (--data DATA.xyz | --initial A --target B) [options]",
        options: [
            OptionSpec("--model", value: "MODEL", help: "potential (as --pretrained of finetune); repeat to compare models (the first is the baseline of the improvement figures)"),
            OptionSpec("--label", value: "NAME", help: "name of the corresponding --model in the CSV and JSON (repeatable; default: the model spec)"),
            OptionSpec("--data", value: "FILE", help: "extended XYZ with initial positions and pos_relaxed (repeatable)"),
            OptionSpec("--initial", value: "FILE", help: "initial structures (with --target)"),
            OptionSpec("--target", value: "FILE", help: "reference relaxed structures"),
            OptionSpec("--relaxer", value: "NAME", help: "relaxer (default: the model's training settings, else fire)"),
            OptionSpec("--relaxer-param", value: "K=V,…", help: "relaxer hyperparameters"),
            OptionSpec("--steps", value: "N", help: "maximum relaxation steps (default: the model's, else 1000)"),
            OptionSpec("--fmax", value: "F", help: "stop below this fmax, eV/Å (default: the model's, else 0.01)"),
            OptionSpec("--threshold", value: "Q", help: "ΔQ thresholds for the fraction-below rows (default 0.1,0.3)"),
            OptionSpec("--basin-dq", value: "Q", default: "1.0", help: "same basin as the reference: ΔQ below Q (amu^½·Å) and the same bonds"),
            OptionSpec("--bond-scale", value: "S", default: "1.2", help: "bonded when closer than S × (sum of covalent radii)"),
            OptionSpec("--threads", value: "N", help: "structures relaxed in parallel (default: number of cores)"),
            OptionSpec("--csv", value: "FILE", help: "write per-structure results as CSV"),
            OptionSpec("--json", help: "print one JSON object on stdout"),
        ],
        details: """
            ΔQ = sqrt(Σ m_j |x_j − x*_j|²) in amu^½·Å (minimum image). A relaxation counts as converged when its final fmax is
            below --fmax (or 0.05 eV/Å when relaxations run a fixed number of steps). Same basin: ΔQ < --basin-dq and the
            same bond graph as the reference (pairs closer than --bond-scale × the sum of Cordero's covalent radii; Si–Si
            2.66 Å). Energy errors: |E_model(final) − E_ref(relaxed)| per atom, meaningful only when model and data share an
            energy zero, and the relaxation-energy error (E_final − E_initial)_model − (E_relaxed − E_initial)_ref in eV,
            which needs energy_initial and energy_relaxed in the data and is independent of the energy zero. With several
            models, the per-structure relative improvement 1 − ΔQ_k/ΔQ_1 of each model against the first is reported.
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

/// A usage error instead of a crash when the data holds elements a model does not cover.
func checkElements(_ potential: any Potential, spec: String, numbers: [[Int]], names: [String], command: String) throws {
    for (z, name) in zip(numbers, names) {
        let missing = potential.uncoveredElements(z)
        if !missing.isEmpty {
            let m = missing.map { Elements.symbols[$0] }.joined(separator: ", ")
            let known = (potential.coveredElements ?? []).sorted()
            let k = known.count > 20 ? "Z = \(known.first!)…\(known.last!)" : known.map { Elements.symbols[$0] }.joined(separator: ", ")
            throw UsageError(command: command, message: "\(name) contains \(m), which \(spec) does not know (its elements: \(k)); leave such structures out of the data")
        }
    }
}

/// Element coverage, then positions and neighbour-list size (`Potential.checkInput`) for every structure.
func checkInputs(_ potential: any Potential, spec: String, structures: [Structure], names: [String], command: String) throws {
    try checkElements(potential, spec: spec, numbers: structures.map(\.numbers), names: names, command: command)
    for (s, name) in zip(structures, names) {
        do { try potential.checkInput(s, name: name, potentialName: spec, skin: RelaxationSettings().skin) }
        catch let e as PotentialInputError { throw UsageError(command: command, message: e.message) }
    }
}

func runEvaluate(_ a: ParsedArguments) throws -> Int32 {
    let cmd = "evaluate"
    let models = a.strings("model")
    guard !models.isEmpty else { throw UsageError(command: cmd, message: "--model MODEL is required") }
    var labels = a.strings("label")
    guard labels.count <= models.count else { throw UsageError(command: cmd, message: "more --label than --model options") }
    labels += models.dropFirst(labels.count)
    let examples = try loadExamples(data: a.strings("data"), initial: a.string("initial"), target: a.string("target"), command: cmd)
    let thresholds = try parseList(a.string("threshold") ?? "0.1,0.3").map { s -> Double in
        guard let v = Double(s), v > 0 else { throw UsageError(command: cmd, message: "--threshold expects positive numbers, got '\(s)'") }
        return v
    }
    let basin = BasinCriterion(deltaQ: try a.positiveDouble("basin-dq")!, bondScale: try a.positiveDouble("bond-scale")!)
    let threads = try a.positiveInt("threads") ?? defaultThreadCount
    // One relaxation protocol for every model, so that a comparison is fair: the last model file's training
    // settings when it has them (the fine-tuned model in a before/after comparison), else FIRE to fmax 0.01;
    // options override.
    let potentials = try models.map { try PotentialSpec.parse($0) }
    for (spec, p) in zip(models, potentials) {
        try checkInputs(p, spec: spec, structures: examples.map(\.initial), names: examples.map(\.displayName), command: cmd)
    }
    var proto = RelaxationProtocol(relaxer: FIRE(), steps: 1000, stopFmax: 0.01)
    for spec in models where spec.hasSuffix(".safetensors") {
        if let p = RelaxationProtocol.fromMetadata(try ModelFile.load(spec).metadata) { proto = p }
    }
    if a.has("relaxer") {
        proto.relaxer = try parseRelaxer(a, command: cmd)
    } else if a.has("relaxer-param") {
        do { try proto.relaxer.set(try relaxerOverrides(a.strings("relaxer-param"), command: cmd)) } catch let e as RelaxerError {
            throw UsageError(command: cmd, message: "--relaxer-param: \(e.message)")
        }
    }
    if let s = try a.positiveInt("steps") { proto.steps = s }
    if let f = try a.positiveDouble("fmax") { proto.stopFmax = f }
    proto.convergedFmax = proto.stopFmax ?? 0.05
    var reports: [ModelReport] = []
    var perStructure: [[ExampleEvaluation]] = []
    for (k, (spec, potential)) in zip(models, potentials).enumerated() {
        let t0 = Date()
        let evals = evaluateRelaxations(examples, potential: potential, protocol: proto, threads: threads, basin: basin)
        for e in evals { if let f = e.failure { printError("relaxft evaluate: \(labels[k]): \(e.name): the relaxation failed at \(f); counted as not converged") } }
        let dq = ErrorSummary(evals.map(\.deltaQ), thresholds: thresholds)
        let n = Double(max(evals.count, 1))
        func meanAbs(_ xs: [Double]) -> Double? { xs.isEmpty ? nil : xs.map { abs($0) }.reduce(0, +) / Double(xs.count) }
        var groups: [String: GroupReport] = [:]
        for g in Set(evals.compactMap(\.group)) {
            let e = evals.filter { $0.group == g }
            let s = ErrorSummary(e.map(\.deltaQ))
            groups[g] = GroupReport(n: e.count, dq_mean: s.mean, dq_median: s.median,
                                    same_basin_fraction: Double(e.filter(\.sameBasin).count) / Double(e.count))
        }
        var imp: (values: [Double], mean: Double, median: Double)? = nil
        if k > 0 { imp = ErrorSummary.relativeImprovement(before: perStructure[0].map(\.deltaQ), after: evals.map(\.deltaQ)) }
        reports.append(ModelReport(label: labels[k], model: spec, n: dq.n, dq_mean: dq.mean, dq_median: dq.median, dq_max: dq.max,
                                   dq_fraction_below: dq.fractionBelow, rmsd_mean: ErrorSummary(evals.map(\.rmsd)).mean,
                                   converged_fraction: Double(evals.filter(\.converged).count) / n,
                                   same_topology_fraction: Double(evals.filter { $0.differingBonds == 0 }.count) / n,
                                   same_basin_fraction: Double(evals.filter(\.sameBasin).count) / n,
                                   initial_dq_mean: ErrorSummary(evals.map(\.initialDeltaQ)).mean,
                                   energy_error_mean_abs_per_atom: meanAbs(evals.compactMap(\.energyErrorPerAtom)),
                                   relax_energy_error_mean_abs: meanAbs(evals.compactMap(\.relaxationEnergyError)),
                                   improvement_mean: imp?.mean, improvement_median: imp?.median, by_group: groups,
                                   relaxation: proto, seconds: Date().timeIntervalSince(t0), improvementValues: imp?.values ?? [],
                                   failed: evals.filter { $0.failure != nil }.count))
        perStructure.append(evals)
    }
    if let csv = a.string("csv") {
        // Per model k: ΔQ, RMSD, convergence, energy errors, topology, basin, and (k ≥ 2) the relative improvement
        // against model 1. Empty cells where a quantity is unknown.
        func f(_ x: Double?) -> String { x.map { "\($0)" } ?? "" }
        func field(_ s: String) -> String { s.contains(",") || s.contains("\"") ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s }
        var header = "structure,group,atoms,initial_dq"
        for k in models.indices {
            let i = k + 1
            header += ",dq_\(i),rmsd_\(i),converged_\(i),fmax_\(i),steps_\(i),energy_error_per_atom_\(i),relax_energy_error_\(i),differing_bonds_\(i),same_basin_\(i)"
            if k > 0 { header += ",improvement_\(i)" }
        }
        var lines = ["# models: " + zip(models.indices, labels).map { "\($0 + 1)=\($1)" }.joined(separator: " "), header]
        for (i, ex) in examples.enumerated() {
            var row = "\(field(ex.name)),\(field(ex.group ?? "")),\(ex.initial.count),\(perStructure[0][i].initialDeltaQ)"
            for (k, p) in perStructure.enumerated() {
                let e = p[i]
                row += ",\(e.deltaQ),\(e.rmsd),\(e.converged),\(e.fmax),\(e.steps),\(f(e.energyErrorPerAtom)),\(f(e.relaxationEnergyError)),\(e.differingBonds),\(e.sameBasin)"
                if k > 0 { row += ",\(reports[k].improvementValues[i])" }
            }
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
        obj["same_basin_fraction"] = r.same_basin_fraction
        obj["basin_criterion"] = ["dq_below": basin.deltaQ, "bond_scale": basin.bondScale]
        obj["models"] = try reports.map { try JSONSerialization.jsonObject(with: JSONEncoder.pretty.encode($0)) }
        if let m = r.improvement_mean, let md = r.improvement_median {
            obj["relative_improvement_mean"] = m
            obj["relative_improvement_median"] = md
        }
        let data = try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys, .prettyPrinted])
        print(String(decoding: data, as: UTF8.self))
        return 0
    }
    func row(_ label: String, _ values: [String]) -> String {
        label.padding(toLength: 34, withPad: " ", startingAt: 0) + values.map { $0.padding(toLength: 16, withPad: " ", startingAt: 0) }.joined()
    }
    func opt(_ x: Double?, _ fmt: String) -> String { x.map { String(format: fmt, $0) } ?? "–" }
    print("\(examples.count) structures; ΔQ in amu^½·Å")
    if models.count > 1 { for (k, l) in labels.enumerated() { print("model \(k + 1): \(l)") } }
    print(row("", reports.indices.map { models.count > 1 ? "model \($0 + 1)" : "model" }))
    print(row("relaxation", reports.map { "\($0.relaxation.relaxer.name)≤\($0.relaxation.steps)" }))
    print(row("ΔQ mean", reports.map { String(format: "%.4f", $0.dq_mean) }))
    print(row("ΔQ median", reports.map { String(format: "%.4f", $0.dq_median) }))
    print(row("ΔQ max", reports.map { String(format: "%.4f", $0.dq_max) }))
    for t in thresholds {
        print(row("fraction ΔQ < \(t)", reports.map { String(format: "%.3f", $0.dq_fraction_below["\(t)"] ?? .nan) }))
    }
    print(row("RMSD mean (Å)", reports.map { String(format: "%.4f", $0.rmsd_mean) }))
    print(row("converged fraction", reports.map { String(format: "%.3f", $0.converged_fraction) }))
    if reports.contains(where: { $0.failed > 0 }) { print(row("failed (non-finite)", reports.map { "\($0.failed)" })) }
    print(row("same bonds as reference", reports.map { String(format: "%.3f", $0.same_topology_fraction) }))
    print(row("same basin (ΔQ < \(basin.deltaQ), same bonds)", reports.map { String(format: "%.3f", $0.same_basin_fraction) }))
    print(row("initial ΔQ mean (do nothing)", reports.map { String(format: "%.4f", $0.initial_dq_mean) }))
    if reports.contains(where: { $0.energy_error_mean_abs_per_atom != nil }) {
        print(row("|E − E_ref| per atom (eV)", reports.map { opt($0.energy_error_mean_abs_per_atom, "%.4f") }))
    }
    if reports.contains(where: { $0.relax_energy_error_mean_abs != nil }) {
        print(row("|ΔE_relax − ΔE_relax,ref| (eV)", reports.map { opt($0.relax_energy_error_mean_abs, "%.4f") }))
    }
    if models.count > 1 {
        print(row("improvement vs model 1, mean", reports.map { opt($0.improvement_mean.map { 100 * $0 }, "%.1f %%") }))
        print(row("improvement vs model 1, median", reports.map { opt($0.improvement_median.map { 100 * $0 }, "%.1f %%") }))
    }
    return 0
}
