import Atoms
import Foundation

let reportCommand = Command(
    spec: CommandSpec(
        name: "report",
        summary: "draw training curves, ΔQ before/after, ΔQ distributions and sweep robustness into one HTML file",
        usage: "RUN_DIR|FILE.csv … [-o report.html] [--title TEXT] [--svg-dir DIR] [--json] [--quiet]",
        options: [
            Vocabulary.out.detail("the HTML file").withDefault("report.html", reason: "a report is one file with a usual name"),
            OptionSpec("--title", value: "TEXT", default: "relaxft report", help: "heading of the report"),
            OptionSpec("--svg-dir", value: "DIR", help: "also write every chart as DIR/figNN-<title>.svg (for Markdown documents)"),
            Vocabulary.json.detail("what was written, as one object"),
            Vocabulary.quiet.detail("no lines about what was written"),
        ],
        details: """
            Self-contained HTML with inline SVG (no scripts, no network). Each argument is a run directory, a directory of run
            directories (searched one level down), or a CSV file. Recognised: metrics.csv of finetune, pretrain or any other
            training (every numeric column is drawn against epoch, train_X and val_X in one panel; unknown columns too),
            per-structure CSVs of 'relaxft evaluate --csv' (ΔQ after against ΔQ before per structure, with the diagonal, and
            the ΔQ distributions), sweep.csv of 'scripts/sweep collect' (final ΔQ per setting and seed against the pretrained
            model: the robustness plot), results.csv of scripts/experiments/reproduce.sh (ΔQ per structure per method), rdf.csv
            (r and one column per curve) and summary.json (a table of the runs' results and training cost).
            """),
    run: runReport)

/// A CSV file: header, rows, and `#` comment lines (evaluate writes its model labels in one).
struct CSVTable {
    var header: [String]
    var rows: [[String]]
    var comments: [String]

    static func parseLine(_ line: Substring) -> [String] {
        var out: [String] = [], cur = "", quoted = false
        var it = line.makeIterator()
        while let ch = it.next() {
            if quoted {
                if ch == "\"" {
                    if let n = it.next() {
                        if n == "\"" { cur.append("\"") } else { quoted = false; if n == "," { out.append(cur); cur = "" } else { cur.append(n) } }
                    } else { quoted = false }
                } else { cur.append(ch) }
            } else if ch == "\"" { quoted = true } else if ch == "," { out.append(cur); cur = "" } else { cur.append(ch) }
        }
        out.append(cur)
        return out
    }

    static func read(_ path: String) throws -> CSVTable {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        var header: [String]? = nil, rows: [[String]] = [], comments: [String] = []
        for raw in text.split(whereSeparator: \.isNewline) {
            let line = raw.hasSuffix("\r") ? raw.dropLast() : raw
            if line.hasPrefix("#") { comments.append(String(line.dropFirst()).trimmingCharacters(in: .whitespaces)); continue }
            if line.trimmingCharacters(in: .whitespaces).isEmpty { continue }
            let fields = parseLine(line).map { $0.trimmingCharacters(in: .whitespaces) }
            if header == nil { header = fields } else { rows.append(fields) }
        }
        return CSVTable(header: header ?? [], rows: rows, comments: comments)
    }

    func has(_ c: String) -> Bool { header.contains(c) }
    func strings(_ c: String) -> [String] {
        guard let i = header.firstIndex(of: c) else { return [] }
        return rows.map { i < $0.count ? $0[i] : "" }
    }
    /// Numbers of a column (NaN where empty or not a number; true/false as 1/0).
    func doubles(_ c: String) -> [Double] {
        strings(c).map { s in
            if let v = Double(s) { return v }
            switch s.lowercased() { case "true": return 1; case "false": return 0; default: return .nan }
        }
    }
    func isNumeric(_ c: String) -> Bool {
        let v = strings(c).filter { !$0.isEmpty }
        return !v.isEmpty && v.allSatisfy { Double($0) != nil }
    }
}

enum ReportInput {
    /// Training metrics; runs of one sweep share a group, drawn in charts of their own.
    case metrics(String, CSVTable, group: String)
    case evaluation(String, CSVTable)
    case sweep(String, CSVTable)
    case rdf(String, CSVTable)
    case results(String, CSVTable)
    case summary(String, [String: Any])
}

/// What a CSV holds, from its header.
func classify(_ t: CSVTable, path: String) -> ((String, CSVTable) -> ReportInput)? {
    let file = URL(fileURLWithPath: path).lastPathComponent
    if t.has("dq_1") { return { .evaluation($0, $1) } }
    if t.has("setting") && t.has("status") { return { .sweep($0, $1) } }
    if t.has("method") && t.has("dq") && t.has("split") { return { .results($0, $1) } }
    if t.header.first == "r" || (file.hasPrefix("rdf") && t.has("r")) { return { .rdf($0, $1) } }
    if t.has("epoch") { return { .metrics($0, $1, group: "") } }
    return nil
}

/// The inputs found at `path` (a file, a run directory, a sweep directory or a directory of runs).
func gatherReportInputs(_ path: String, name: String, depth: Int = 0) throws -> [ReportInput] {
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
        throw UsageError(command: "report", message: "'\(path)' not found")
    }
    if !isDir.boolValue {
        if path.hasSuffix(".json") {
            guard let obj = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any] else { return [] }
            return [.summary(name, obj)]
        }
        let t = try CSVTable.read(path)
        guard let make = classify(t, path: path) else {
            printError("relaxft report: \(path): not a recognised CSV (header: \(t.header.prefix(6).joined(separator: ",")), …); skipped")
            return []
        }
        return [make(name, t)]
    }
    let fm = FileManager.default
    let files = ((try? fm.contentsOfDirectory(atPath: path)) ?? []).sorted()
    var out: [ReportInput] = []
    for f in files where f.hasSuffix(".csv") {
        let p = path + "/" + f
        guard let t = try? CSVTable.read(p), let make = classify(t, path: p) else { continue }
        let label = f == "metrics.csv" || f == "sweep.csv" || f == "results.csv" ? name : name + "/" + String(f.dropLast(4))
        out.append(make(label, t))
    }
    if files.contains("summary.json"), let obj = try? JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path + "/summary.json"))) as? [String: Any] {
        out.append(.summary(name, obj))
    }
    // A sweep directory: the training curves of its runs too.
    if files.contains("plan.json"), fm.fileExists(atPath: path + "/runs") {
        for r in ((try? fm.contentsOfDirectory(atPath: path + "/runs")) ?? []).sorted() {
            let m = path + "/runs/" + r + "/metrics.csv"
            if let t = try? CSVTable.read(m), t.has("epoch") { out.append(.metrics(r, t, group: name)) }
        }
    } else if out.isEmpty && depth < 2 {
        for sub in files {
            var d: ObjCBool = false
            if fm.fileExists(atPath: path + "/" + sub, isDirectory: &d), d.boolValue {
                out += try gatherReportInputs(path + "/" + sub, name: name + "/" + sub, depth: depth + 1)
            }
        }
    }
    return out
}

/// Columns of metrics tables in a sensible reading order (anything else follows in first-seen order).
let preferredMetricOrder = ["dq_mean", "dq_median", "loss", "force_mae", "force_rmse", "energy_mae_mev_atom", "energy_rmse_mev_atom",
                            "fraction_unstable", "mean_instability_time", "observable_error", "energy_mae", "grad_norm", "lr"]

func metricPanels(_ tables: [(String, CSVTable)]) -> (svgs: [String], constant: [String]) {
    // Panel key: the column without a train_/val_ prefix; x: epoch (or the row number).
    var keys: [String] = []
    var constant: [String] = []
    for (_, t) in tables {
        for c in t.header where c != "epoch" && t.isNumeric(c) {
            let base = c.hasPrefix("train_") ? String(c.dropFirst(6)) : c.hasPrefix("val_") ? String(c.dropFirst(4)) : c
            if !keys.contains(base) { keys.append(base) }
        }
    }
    keys.sort { a, b in
        let ia = preferredMetricOrder.firstIndex(of: a) ?? (a == "seconds" ? 1000 : a == "skipped_steps" ? 999 : 500)
        let ib = preferredMetricOrder.firstIndex(of: b) ?? (b == "seconds" ? 1000 : b == "skipped_steps" ? 999 : 500)
        return ia < ib
    }
    var svgs: [String] = []
    for key in keys {
        var series: [Series] = []
        for (k, (name, t)) in tables.enumerated() {
            let x = t.has("epoch") ? t.doubles("epoch") : t.rows.indices.map { Double($0 + 1) }
            for (col, suffix, dashed) in [("train_" + key, " train", false), (key, "", false), ("val_" + key, " val", true)] where t.has(col) && t.isNumeric(col) {
                let y = t.doubles(col)
                guard y.contains(where: \.isFinite) else { continue }
                series.append(Series(name: (tables.count > 1 ? name : "") + suffix, x: x, y: y, color: color(k), dashed: dashed, markers: x.count < 12))
            }
        }
        let values = series.flatMap(\.y).filter(\.isFinite)
        guard !values.isEmpty else { continue }
        if values.allSatisfy({ $0 == values[0] }) {
            constant.append("\(key) = \(shortNumber(values[0]))")
            continue
        }
        for i in series.indices where series[i].name.isEmpty { series[i].name = key }
        svgs.append(Charts.lines(key, series, xLabel: tables.allSatisfy { $0.1.has("epoch") } ? "epoch" : "row", yLabel: key))
    }
    return (svgs, constant)
}

/// Model labels of an evaluate CSV, from its "# models: 1=… 2=…" line (else "model k").
func evaluationLabels(_ t: CSVTable) -> [Int: String] {
    var out: [Int: String] = [:]
    for c in t.comments where c.hasPrefix("models:") {
        for part in c.dropFirst(7).split(separator: " ") {
            let kv = part.split(separator: "=", maxSplits: 1)
            if kv.count == 2, let k = Int(kv[0]) {
                let v = String(kv[1])
                // A model file by its directory and stem (run directories are usually named after the run).
                out[k] = v.hasSuffix(".safetensors") ? URL(fileURLWithPath: v).deletingLastPathComponent().lastPathComponent + "/" + URL(fileURLWithPath: v).deletingPathExtension().lastPathComponent : v
            }
        }
    }
    return out
}

func htmlTable(_ header: [String], _ rows: [[String]]) -> String {
    var s = "<table><tr>" + header.map { "<th>\(escapeXML($0))</th>" }.joined() + "</tr>"
    for r in rows { s += "<tr>" + r.map { "<td>\(escapeXML($0))</td>" }.joined() + "</tr>" }
    return s + "</table>"
}

func fmt(_ v: Double) -> String { v.isFinite ? shortNumber(v) : "–" }

func evaluationSection(_ name: String, _ t: CSVTable) -> String {
    let labels = evaluationLabels(t)
    var k = 1
    while t.has("dq_\(k + 1)") { k += 1 }
    func label(_ i: Int) -> String { labels[i] ?? "model \(i)" }
    let names = t.strings("structure")
    let initial = t.doubles("initial_dq")
    var svgs: [String] = []
    var series: [Series] = [], titles: [[String]] = []
    let (xs, xLabel): ([Double], String) = k >= 2 ? (t.doubles("dq_1"), "ΔQ \(label(1))") : (initial, "ΔQ initial (do nothing)")
    for i in (k >= 2 ? 2 : 1)...k {
        series.append(Series(name: label(i), x: xs, y: t.doubles("dq_\(i)"), color: color(i - 1)))
        titles.append(names)
    }
    svgs.append(Charts.scatter("ΔQ per structure (amu^½·Å)", series, xLabel: xLabel, yLabel: k >= 2 ? "ΔQ after" : "ΔQ \(label(1))", titles: titles))
    var groups: [(String, [Double], String)] = [("initial (do nothing)", initial, "#999999")]
    for i in 1...k { groups.append((label(i), t.doubles("dq_\(i)"), color(i - 1))) }
    svgs.append(Charts.histogram("ΔQ distribution", groups, xLabel: "ΔQ (amu^½·Å)"))
    var rows: [[String]] = []
    for i in 0...k {
        let v = i == 0 ? initial : t.doubles("dq_\(i)")
        let f = v.filter(\.isFinite)
        guard !f.isEmpty else { continue }
        let sorted = f.sorted()
        let median = sorted.count % 2 == 1 ? sorted[sorted.count / 2] : 0.5 * (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2])
        let basin = i == 0 ? [] : t.doubles("same_basin_\(i)").filter(\.isFinite)
        let imp = i >= 2 ? t.doubles("improvement_\(i)").filter(\.isFinite) : []
        rows.append([i == 0 ? "initial (do nothing)" : label(i), "\(f.count)", fmt(f.reduce(0, +) / Double(f.count)), fmt(median),
                     fmt(Double(f.filter { $0 < 0.1 }.count) / Double(f.count)), fmt(Double(f.filter { $0 < 0.3 }.count) / Double(f.count)),
                     basin.isEmpty ? "–" : fmt(basin.reduce(0, +) / Double(basin.count)),
                     imp.isEmpty ? "–" : String(format: "%.1f %%", 100 * imp.reduce(0, +) / Double(imp.count))])
    }
    let table = htmlTable(["model", "n", "ΔQ mean", "ΔQ median", "< 0.1", "< 0.3", "same basin", "improvement vs model 1 (mean)"], rows)
    return "<h3>\(escapeXML(name))</h3><div class=\"grid\">\(svgs.joined())</div>\(table)"
}

func sweepSection(_ name: String, _ t: CSVTable) -> String {
    let metric = ["eval_dq_mean", "val_dq_mean_after", "train_dq_mean_after"].first { t.has($0) && t.doubles($0).contains(where: \.isFinite) }
    guard let m = metric else { return "<h3>\(escapeXML(name))</h3><p>no finished runs with a ΔQ yet</p>" }
    let baselineColumn = m == "eval_dq_mean" ? "eval_baseline_dq_mean" : m == "val_dq_mean_after" ? "val_dq_mean_before" : "train_dq_mean_before"
    let settings = t.strings("setting")
    var cats: [String] = []
    for s in settings where !cats.contains(s) { cats.append(s) }
    let y = t.doubles(m)
    var pts: [(Int, Double)] = []
    for (s, v) in zip(settings, y) where v.isFinite { pts.append((cats.firstIndex(of: s)!, v)) }
    var refs: [(String, Double, String)] = []
    let base = t.doubles(baselineColumn).filter(\.isFinite)
    if !base.isEmpty { refs.append(("pretrained (\(baselineColumn))", base.reduce(0, +) / Double(base.count), "#555555")) }
    var series: [(String, [(Int, Double)], String)] = [("fine-tuned, one dot per run (\(m))", pts, color(0))]
    if m == "eval_dq_mean" && t.has("eval_dq_median") {
        var med: [(Int, Double)] = []
        for (s, v) in zip(settings, t.doubles("eval_dq_median")) where v.isFinite { med.append((cats.firstIndex(of: s)!, v)) }
        series.append(("median over structures", med, color(1)))
    }
    // Spread over settings: mean over seeds per setting, then min/median/max.
    var perSetting: [Double] = []
    for (i, _) in cats.enumerated() {
        let v = pts.filter { $0.0 == i }.map(\.1)
        if !v.isEmpty { perSetting.append(v.reduce(0, +) / Double(v.count)) }
    }
    let sorted = perSetting.sorted()
    var note = ""
    if !sorted.isEmpty {
        let med = sorted.count % 2 == 1 ? sorted[sorted.count / 2] : 0.5 * (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2])
        note = "\(cats.count) settings, \(pts.count) runs; \(m) per setting: min \(fmt(sorted.first!)), median \(fmt(med)), max \(fmt(sorted.last!))"
        if let b = refs.first?.1, b > 0 { note += String(format: "; cut vs pretrained %.0f–%.0f %%", 100 * (1 - sorted.last! / b), 100 * (1 - sorted.first! / b)) }
    }
    let svg = Charts.strip("Robustness: final ΔQ per setting", categories: cats, series: series, yLabel: "ΔQ (amu^½·Å)", references: refs)
    return "<h3>\(escapeXML(name))</h3><p>\(escapeXML(note))</p><div class=\"grid\">\(svg)</div>"
}

func resultsSection(_ name: String, _ t: CSVTable) -> String {
    let out = "<h3>\(escapeXML(name))</h3>"
    let splits = t.strings("split")
    var order: [String] = []
    for s in splits where !order.contains(s) { order.append(s) }
    let model = t.strings("model"), method = t.strings("method"), dq = t.doubles("dq"), proto = t.has("protocol") ? t.strings("protocol") : Array(repeating: "", count: t.rows.count)
    var svgs: [String] = []
    for sp in order {
        var cats: [String] = []
        var pts: [(Int, Double)] = [], means: [(Int, Double)] = []
        // One protocol for every model (the fair comparison); own-protocol rows are in the tables.
        for i in t.rows.indices where splits[i] == sp && (proto[i].isEmpty || proto[i] == "common") {
            let c = model[i] + " · " + method[i]
            if !cats.contains(c) { cats.append(c) }
            if dq[i].isFinite { pts.append((cats.firstIndex(of: c)!, dq[i])) }
        }
        for (k, _) in cats.enumerated() {
            let v = pts.filter { $0.0 == k }.map(\.1)
            if !v.isEmpty { means.append((k, v.reduce(0, +) / Double(v.count))) }
        }
        let initial = t.doubles("initial_dq").enumerated().filter { splits[$0.offset] == sp && $0.element.isFinite && method[$0.offset] == "pretrained" && (proto[$0.offset].isEmpty || proto[$0.offset] == "common") }.map(\.element)
        var refs: [(String, Double, String)] = []
        if !initial.isEmpty { refs.append(("initial (do nothing), mean", initial.reduce(0, +) / Double(initial.count), "#999999")) }
        svgs.append(Charts.strip("ΔQ per structure, split \(sp)", categories: cats,
                                 series: [("per structure", pts, color(0)), ("mean", means, color(1))], yLabel: "ΔQ (amu^½·Å)", references: refs))
    }
    return out + "<div class=\"grid\">\(svgs.joined())</div>"
}

func summaryTable(_ items: [(String, [String: Any])]) -> String {
    func flatten(_ d: [String: Any], _ prefix: String = "") -> [(String, String)] {
        var out: [(String, String)] = []
        for k in d.keys.sorted() {
            let v = d[k]!
            if let sub = v as? [String: Any] {
                if k == "parameters" || k == "relaxer_hyperparameters" { continue }
                out += flatten(sub, prefix + k + ".")
            } else if let b = v as? Bool, type(of: v) == Bool.self {
                out.append((prefix + k, b ? "true" : "false"))
            } else if let n = v as? NSNumber {
                out.append((prefix + k, fmt(n.doubleValue)))
            } else if let s = v as? String {
                out.append((prefix + k, s))
            }
        }
        return out
    }
    let flat = items.map { ($0.0, Dictionary(flatten($0.1), uniquingKeysWith: { a, _ in a })) }
    var keys: [String] = []
    let first = ["wall_seconds", "cpu_seconds", "peak_rss_mb", "epochs", "best_epoch", "train_dq_mean_before", "train_dq_mean_after",
                 "val_dq_mean_before", "val_dq_mean_after"]
    for k in first where flat.contains(where: { $0.1[k] != nil }) { keys.append(k) }
    for (_, d) in flat { for k in d.keys.sorted() where !keys.contains(k) { keys.append(k) } }
    keys = Array(keys.prefix(16))
    return htmlTable(["run"] + keys, flat.map { n, d in [n] + keys.map { d[$0] ?? "" } })
}

func runReport(_ a: ParsedArguments) throws -> Int32 {
    guard !a.positionals.isEmpty else { throw UsageError(command: "report", message: "give at least one run directory or CSV file") }
    var inputs: [ReportInput] = []
    for p in a.positionals {
        let trimmed = p.hasSuffix("/") && p.count > 1 ? String(p.dropLast()) : p
        let found = try gatherReportInputs(trimmed, name: trimmed)
        if found.isEmpty { printError("relaxft report: nothing to draw found in \(p)") }
        inputs += found
    }
    guard !inputs.isEmpty else { throw UsageError(command: "report", message: "no metrics.csv, evaluate CSV, sweep.csv, results.csv, rdf.csv or summary.json found") }
    let body = reportSections(inputs).joined(separator: "\n")
    let title = a.string("title")!
    let out = a.string("out")!
    try AtomicFile.write(reportPage(title: title, body: body, inputs: a.positionals), to: out)
    let svgs = try a.string("svg-dir").map { try writeSVGFiles(body, to: $0) }
    if a.has("json") {
        print(jsonObject([("output", jsonString(out)), ("inputs", "\(inputs.count)"), ("svg_files", svgs.map { "\($0)" } ?? "0")]))
    } else if !a.has("quiet") {
        if let k = svgs { print("relaxft report: wrote \(k) SVG file(s) to \(a.string("svg-dir")!)") }
        print("relaxft report: wrote \(out) (\(inputs.count) input(s))")
    }
    return 0
}

/// The report's sections (HTML), in a fixed order: results, evaluations, sweeps, training curves, RDFs, summaries.
func reportSections(_ inputs: [ReportInput]) -> [String] {
    var metrics: [(String, CSVTable, String)] = [], sections: [String] = [], sweeps: [String] = [], evals: [String] = [], rdfs: [String] = []
    var results: [String] = [], summaries: [(String, [String: Any])] = []
    for i in inputs {
        switch i {
        case .metrics(let n, let t, let g): metrics.append((n, t, g))
        case .evaluation(let n, let t): evals.append(evaluationSection(n, t))
        case .sweep(let n, let t): sweeps.append(sweepSection(n, t))
        case .results(let n, let t): results.append(resultsSection(n, t))
        case .rdf(let n, let t):
            let r = t.doubles("r")
            let cols = t.header.filter { $0 != "r" && t.isNumeric($0) }
            let series = cols.enumerated().map { Series(name: $0.element, x: r, y: t.doubles($0.element), color: color($0.offset), dashed: $0.element == "reference") }
            rdfs.append(Charts.lines("g(r): \(n)", series, xLabel: "r (Å)", yLabel: "g(r)", logY: false))
        case .summary(let n, let d): summaries.append((n, d))
        }
    }
    if !results.isEmpty { sections.append("<h2>Results per structure</h2>" + results.joined()) }
    if !evals.isEmpty { sections.append("<h2>Final-structure error: before and after</h2>" + evals.joined()) }
    if !sweeps.isEmpty { sections.append("<h2>Sweep robustness</h2>" + sweeps.joined()) }
    if !metrics.isEmpty { sections.append(trainingCurvesSection(metrics)) }
    if !rdfs.isEmpty { sections.append("<h2>Radial distribution functions</h2><div class=\"grid\">\(rdfs.joined())</div>") }
    if !summaries.isEmpty { sections.append("<h2>Run summaries (results and training cost)</h2>" + summaryTable(summaries)) }
    return sections
}

/// Training curves, grouped by directory: sweeps can hold dozens of runs, and one chart should not carry 50 lines.
func trainingCurvesSection(_ metrics: [(String, CSVTable, String)]) -> String {
    var groups: [(String, [(String, CSVTable)])] = []
    for (n, t, parent) in metrics {
        if let i = groups.firstIndex(where: { $0.0 == parent }) { groups[i].1.append((n, t)) } else { groups.append((parent, [(n, t)])) }
    }
    var s = "<h2>Training curves</h2><p class=\"meta\">train solid, validation dashed</p>"
    for (parent, tables) in groups {
        let (svgs, constant) = metricPanels(tables)
        if !parent.isEmpty { s += "<h3>\(escapeXML(parent)) (\(tables.count) runs)</h3>" }
        else if tables.count == 1 { s += "<h3>\(escapeXML(tables[0].0))</h3>" }
        s += "<div class=\"grid\">\(svgs.joined())</div>"
        if !constant.isEmpty { s += "<p class=\"meta\">constant: \(escapeXML(constant.joined(separator: ", ")))</p>" }
    }
    return s
}

/// The self-contained HTML page around `body`.
func reportPage(title: String, body: String, inputs: [String]) -> String {
    """
    <!DOCTYPE html>
    <html lang="en"><head><meta charset="utf-8"><title>\(escapeXML(title))</title>
    <meta name="relaxft-page-height" content="\(estimatedPageHeight(body, width: 1400))">
    <style>
    body { font-family: Helvetica, Arial, sans-serif; margin: 24px; color: #222; max-width: 1500px; }
    h1 { font-size: 22px; } h2 { font-size: 18px; border-bottom: 1px solid #ccc; padding-bottom: 3px; margin-top: 28px; }
    h3 { font-size: 14px; margin: 14px 0 6px; }
    .grid { display: flex; flex-wrap: wrap; gap: 10px; } .grid svg { border: 1px solid #eee; }
    .meta { color: #666; font-size: 12px; }
    table { border-collapse: collapse; font-size: 12px; margin: 8px 0; }
    th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; } th { background: #f4f4f4; }
    td:first-child, th:first-child { text-align: left; }
    </style></head><body>
    <h1>\(escapeXML(title))</h1>
    <p class="meta">inputs: \(escapeXML(inputs.joined(separator: ", "))) · relaxft \(relaxftVersion) · ΔQ = sqrt(Σ m_j |x_j − x*_j|²) in amu^½·Å</p>
    \(body)
    </body></html>

    """
}

/// Every chart of `body` as DIR/figNN-<title>.svg; returns how many.
func writeSVGFiles(_ body: String, to dir: String) throws -> Int {
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    var rest = Substring(body), k = 0
    while let r = rest.range(of: "<svg "), let e = rest[r.lowerBound...].range(of: "</svg>") {
        let svg = rest[r.lowerBound..<e.upperBound]
        var title = "chart"
        if let t = svg.range(of: "font-weight=\"bold\">"), let te = svg[t.upperBound...].range(of: "</text>") {
            title = String(svg[t.upperBound..<te.lowerBound])
        }
        let slug = String(title.lowercased().map { $0.isASCII && ($0.isLetter || $0.isNumber) ? $0 : "-" }).split(separator: "-").joined(separator: "-")
        k += 1
        try AtomicFile.write("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n" + svg + "\n", to: dir + String(format: "/fig%02d-", k) + String(slug.prefix(48)) + ".svg")
        rest = rest[e.upperBound...]
    }
    return k
}

/// Rough height in pixels of the report body laid out in a window `width` wide (flex rows of charts, headings,
/// paragraphs, tables), plus a margin: scripts/render_report sizes its headless-browser window with it, since a
/// command-line screenshot shows the window only.
func estimatedPageHeight(_ body: String, width: Double) -> Int {
    let container = Swift.min(1500, width - 48)
    var h = 120.0
    var rest = Substring(body)
    func attribute(_ name: String, in tag: Substring) -> Double? {
        guard let r = tag.range(of: name + "=\"") else { return nil }
        return Double(tag[r.upperBound...].prefix { $0 != "\"" })
    }
    while let lt = rest.firstIndex(of: "<") {
        rest = rest[lt...]
        if rest.hasPrefix("<h2") { h += 58 } else if rest.hasPrefix("<h3") { h += 36 } else if rest.hasPrefix("<p") { h += 30 }
        else if rest.hasPrefix("<table") {
            let end = rest.range(of: "</table>")?.upperBound ?? rest.endIndex
            h += 16 + 24 * Double(rest[..<end].components(separatedBy: "<tr>").count - 1)
            rest = rest[end...]
            continue
        } else if rest.hasPrefix("<div class=\"grid\">") {
            var rowWidth = 0.0, rowHeight = 0.0
            let end = rest.range(of: "</div>")?.upperBound ?? rest.endIndex
            var grid = rest[..<end]
            while let r = grid.range(of: "<svg ") {
                let tagEnd = grid[r.lowerBound...].firstIndex(of: ">") ?? grid.endIndex
                let tag = grid[r.lowerBound..<tagEnd]
                let w = (attribute("width", in: tag) ?? 460) + 12, ht = (attribute("height", in: tag) ?? 300) + 12
                if rowWidth + w > container && rowWidth > 0 { h += rowHeight; rowWidth = 0; rowHeight = 0 }
                rowWidth += w
                rowHeight = Swift.max(rowHeight, ht)
                grid = grid[(grid.range(of: "</svg>")?.upperBound ?? grid.endIndex)...]
            }
            h += rowHeight + 8
            rest = rest[end...]
            continue
        }
        rest = rest.dropFirst()
    }
    return Int(h * 1.05) + 80
}
