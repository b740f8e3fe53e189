import Atoms
import FineTune
import Foundation
import Loss
import Relax
import Tape

// What `relaxft evaluate` prints and writes: the tables, the per-structure (or per-frame) CSV and the JSON.

func tableRow(_ label: String, _ values: [String], width: Int = 34) -> String {
    label.padding(toLength: width, withPad: " ", startingAt: 0) + values.map { $0.padding(toLength: 16, withPad: " ", startingAt: 0) }.joined()
}

func formatted(_ x: Double?, _ fmt: String) -> String { x.map { String(format: fmt, $0) } ?? "–" }

/// Column headings: the labels when they fit, else model 1, model 2, … (the protocol lines name them).
func modelHeadings(_ job: EvaluateJob) -> [String] {
    if job.labels.allSatisfy({ $0.count <= 15 }) { return job.labels }
    return job.specs.indices.map { job.specs.count > 1 ? "model \($0 + 1)" : "model" }
}

func printRelaxationTable(_ job: EvaluateJob, reports: [ModelReport]) {
    let many = job.specs.count > 1
    print("\(job.examples.count) structures (\(job.relaxationFiles.joined(separator: ", "))); ΔQ in amu^½·Å")
    print(tableRow("", modelHeadings(job)))
    print(tableRow("relaxation", reports.map { "\($0.relaxation.relaxer.name)≤\($0.relaxation.steps)" }))
    print(tableRow("ΔQ mean", reports.map { String(format: "%.4f", $0.dq_mean) }))
    print(tableRow("ΔQ median", reports.map { String(format: "%.4f", $0.dq_median) }))
    print(tableRow("ΔQ max", reports.map { String(format: "%.4f", $0.dq_max) }))
    for t in job.thresholds {
        print(tableRow("fraction ΔQ < \(t)", reports.map { String(format: "%.3f", $0.dq_fraction_below["\(t)"] ?? .nan) }))
    }
    print(tableRow("RMSD mean (Å)", reports.map { String(format: "%.4f", $0.rmsd_mean) }))
    print(tableRow("converged fraction", reports.map { String(format: "%.3f", $0.converged_fraction) }))
    print(tableRow("same bonds as reference", reports.map { String(format: "%.3f", $0.same_topology_fraction) }))
    print(tableRow("same basin (ΔQ < \(job.basin.deltaQ), same bonds)", reports.map { String(format: "%.3f", $0.same_basin_fraction) }))
    print(tableRow("initial ΔQ mean (do nothing)", reports.map { String(format: "%.4f", $0.initial_dq_mean) }))
    if reports.contains(where: { $0.energy_error_mean_abs_per_atom != nil }) {
        print(tableRow("|E − E_ref| per atom (eV)", reports.map { formatted($0.energy_error_mean_abs_per_atom, "%.4f") }))
    }
    if reports.contains(where: { $0.relax_energy_error_mean_abs != nil }) {
        print(tableRow("|ΔE_relax − ΔE_relax,ref| (eV)", reports.map { formatted($0.relax_energy_error_mean_abs, "%.4f") }))
    }
    if many {
        print(tableRow("improvement vs \(modelHeadings(job)[0]), mean", reports.map { formatted($0.improvement_mean.map { 100 * $0 }, "%.1f %%") }))
        print(tableRow("improvement vs \(modelHeadings(job)[0]), median", reports.map { formatted($0.improvement_median.map { 100 * $0 }, "%.1f %%") }))
    }
}

func printLabelledTable(_ job: EvaluateJob, _ reports: [LabelledReport]) {
    let atoms = job.labelled.reduce(0) { $0 + $1.count }
    print("\(job.labelled.count) labelled frames, \(atoms) atoms (\(job.labelledFiles.joined(separator: ", ")))")
    print(tableRow("", modelHeadings(job)))
    func rows(_ prefix: String, _ ms: [ForceFieldMetrics]) {
        if ms.contains(where: { $0.energyFrames > 0 }) {
            print(tableRow(prefix + "energy MAE (meV/atom)", ms.map { String(format: "%.3f", $0.energyMAE) }))
            print(tableRow(prefix + "energy RMSE (meV/atom)", ms.map { String(format: "%.3f", $0.energyRMSE) }))
        }
        if ms.contains(where: { $0.forceComponents > 0 }) {
            print(tableRow(prefix + "force MAE (eV/Å)", ms.map { String(format: "%.4f", $0.forceMAE) }))
            print(tableRow(prefix + "force RMSE (eV/Å)", ms.map { String(format: "%.4f", $0.forceRMSE) }))
        }
        if ms.contains(where: { $0.stressComponents > 0 }) {
            print(tableRow(prefix + "stress MAE (meV/Å³)", ms.map { String(format: "%.4f", $0.stressMAE) }))
            print(tableRow(prefix + "stress RMSE (meV/Å³)", ms.map { String(format: "%.4f", $0.stressRMSE) }))
        }
    }
    rows("", reports.map(\.overall))
    for type in reports[0].byConfigType.keys.sorted() {
        let ms = reports.map { $0.byConfigType[type]! }
        print("config type \(type) (\(ms[0].frames) frames):")
        rows("  ", ms)
    }
}

/// One row per structure: per model k ΔQ, RMSD, convergence, energy errors, topology, basin, and (k ≥ 2) the
/// relative improvement against model 1; empty cells where a quantity is unknown.
func relaxationCSV(_ job: EvaluateJob, reports: [ModelReport], perStructure: [[ExampleEvaluation]]) -> String {
    func f(_ x: Double?) -> String { x.map { "\($0)" } ?? "" }
    var header = "structure,group,atoms,initial_dq"
    for k in job.specs.indices {
        let i = k + 1
        header += ",dq_\(i),rmsd_\(i),converged_\(i),fmax_\(i),steps_\(i),energy_error_per_atom_\(i),relax_energy_error_\(i),differing_bonds_\(i),same_basin_\(i)"
        if k > 0 { header += ",improvement_\(i)" }
    }
    var lines = ["# models: " + job.labels.enumerated().map { "\($0.offset + 1)=\($0.element)" }.joined(separator: " "), header]
    for (i, ex) in job.examples.enumerated() {
        var row = "\(csvField(ex.name)),\(csvField(ex.group ?? "")),\(ex.initial.count),\(perStructure[0][i].initialDeltaQ)"
        for (k, p) in perStructure.enumerated() {
            let e = p[i]
            row += ",\(e.deltaQ),\(e.rmsd),\(e.converged),\(e.fmax),\(e.steps),\(f(e.energyErrorPerAtom)),\(f(e.relaxationEnergyError)),\(e.differingBonds),\(e.sameBasin)"
            if k > 0 { row += ",\(reports[k].improvementValues[i])" }
        }
        lines.append(row)
    }
    return lines.joined(separator: "\n") + "\n"
}

/// One row per labelled frame: the reference energy and per model k its energy and force RMSE.
func labelledCSV(_ job: EvaluateJob, _ reports: [LabelledReport]) -> String {
    func f(_ x: Double?) -> String { x.map { "\($0)" } ?? "" }
    var header = "frame,config_type,atoms,energy_ref"
    for k in job.specs.indices { header += ",energy_\(k + 1),force_rmse_\(k + 1)" }
    var lines = ["# models: " + job.labels.enumerated().map { "\($0.offset + 1)=\($0.element)" }.joined(separator: " "), header]
    for (i, s) in job.labelled.enumerated() {
        var row = "\(i),\(csvField(ForceFieldMetrics.configType(s) ?? "")),\(s.count),\(f(s.energy))"
        for r in reports {
            let p = r.predictions[i]
            var rmse: Double? = nil
            if let ref = s.forces { rmse = ((p.forces - ref).dot(p.forces - ref) / Double(max(ref.count, 1))).squareRoot() }
            row += ",\(p.energy),\(f(rmse))"
        }
        lines.append(row)
    }
    return lines.joined(separator: "\n") + "\n"
}

func csvField(_ s: String) -> String { s.contains(",") || s.contains("\"") ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s }

/// The JSON of `evaluate --json`: the relaxation summaries (the last model's at the top level, as before) and
/// the labelled-frame errors per model.
func evaluationJSON(_ job: EvaluateJob, reports: [ModelReport], labelled: [LabelledReport]) throws -> String {
    var obj: [String: Any] = [:]
    if let r = reports.last {
        obj["n"] = r.n
        obj["dq_mean"] = r.dq_mean
        obj["dq_median"] = r.dq_median
        obj["converged_fraction"] = r.converged_fraction
        obj["same_basin_fraction"] = r.same_basin_fraction
        obj["basin_criterion"] = ["dq_below": job.basin.deltaQ, "bond_scale": job.basin.bondScale]
        obj["models"] = try reports.map { try JSONSerialization.jsonObject(with: JSONEncoder.pretty.encode($0)) }
        if let m = r.improvement_mean, let md = r.improvement_median {
            obj["relative_improvement_mean"] = m
            obj["relative_improvement_median"] = md
        }
    }
    if !labelled.isEmpty {
        func errors(_ m: ForceFieldMetrics) -> [String: Any] {
            var e: [String: Any] = ["frames": m.frames, "atoms": m.atoms]
            if m.energyFrames > 0 { e["energy_mae_mev_atom"] = m.energyMAE; e["energy_rmse_mev_atom"] = m.energyRMSE }
            if m.forceComponents > 0 { e["force_mae"] = m.forceMAE; e["force_rmse"] = m.forceRMSE }
            if m.stressComponents > 0 { e["stress_mae_mev_a3"] = m.stressMAE; e["stress_rmse_mev_a3"] = m.stressRMSE }
            return e
        }
        obj["labelled"] = ["frames": job.labelled.count, "files": job.labelledFiles,
                           "models": labelled.enumerated().map { k, r -> [String: Any] in
                               var e = errors(r.overall)
                               e["label"] = job.labels[k]
                               e["model"] = job.specs[k]
                               e["by_config_type"] = r.byConfigType.mapValues(errors)
                               return e
                           }]
    }
    let data = try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys, .prettyPrinted])
    return String(decoding: data, as: UTF8.self)
}
