import Foundation

/// Small self-contained SVG charts for `relaxft report`: line, scatter, histogram and strip plots with
/// linear or logarithmic axes. No scripts, fonts or network: the HTML report opens anywhere.

let palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]

func color(_ i: Int) -> String { palette[i % palette.count] }

func escapeXML(_ s: String) -> String {
    s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
        .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
}

/// Compact number text for tick labels and tables.
func shortNumber(_ v: Double) -> String {
    if v == 0 { return "0" }
    let a = abs(v)
    if a >= 1e5 || a < 1e-3 { return String(format: "%.0e", v).replacingOccurrences(of: "e+0", with: "e").replacingOccurrences(of: "e-0", with: "e-") }
    var s = String(format: a >= 100 ? "%.0f" : a >= 10 ? "%.1f" : a >= 1 ? "%.2f" : "%.3g", v)
    if s.contains("."), !s.contains("e") {
        while s.hasSuffix("0") { s.removeLast() }
        if s.hasSuffix(".") { s.removeLast() }
    }
    return s
}

struct PlotAxis {
    var lower: Double
    var upper: Double
    var log: Bool
    var label: String
    /// Integer data (epochs): no fractional ticks.
    var integer = false

    /// An axis spanning `values` (finite ones; positive ones on a log axis), padded a little. `log: nil`
    /// chooses a log scale when all values are positive and span more than `autoLogRatio`.
    init(values: [Double], label: String, log: Bool? = nil, autoLogRatio: Double = 50, includeZero: Bool = false) {
        self.label = label
        let finite = values.filter(\.isFinite)
        let positive = finite.filter { $0 > 0 }
        let useLog = log ?? (!finite.isEmpty && positive.count == finite.count && (positive.max()! / positive.min()!) > autoLogRatio)
        self.log = useLog
        integer = !finite.isEmpty && finite.allSatisfy { $0 == $0.rounded() }
        if useLog {
            let lo = positive.min() ?? 1, hi = positive.max() ?? 10
            lower = pow(10, floor(log10(lo) * 10) / 10 - 0.05)
            upper = pow(10, ceil(log10(hi) * 10) / 10 + 0.05)
        } else {
            var lo = finite.min() ?? 0, hi = finite.max() ?? 1
            if includeZero { lo = Swift.min(lo, 0); hi = Swift.max(hi, 0) }
            if hi - lo < 1e-12 * Swift.max(abs(hi), 1) { lo -= Swift.max(abs(lo) * 0.1, 0.5); hi += Swift.max(abs(hi) * 0.1, 0.5) }
            let pad = 0.05 * (hi - lo)
            lower = (includeZero && lo == 0) ? 0 : lo - pad
            upper = hi + pad
        }
    }

    /// Position in [0, 1].
    func unit(_ v: Double) -> Double {
        if log { return (log10(Swift.max(v, 1e-300)) - log10(lower)) / (log10(upper) - log10(lower)) }
        return (v - lower) / (upper - lower)
    }

    var ticks: [Double] {
        if log {
            let a = Int(floor(log10(lower))), b = Int(ceil(log10(upper)))
            var t: [Double] = []
            let multipliers: [Double] = (b - a) <= 3 ? [1, 2, 5] : [1]
            let stride = Swift.max(1, (b - a) / 6)
            for e in Swift.stride(from: a, through: b, by: stride) {
                for m in multipliers {
                    let v = m * pow(10, Double(e))
                    if v >= lower && v <= upper { t.append(v) }
                }
            }
            return t
        }
        let raw = (upper - lower) / 5
        let mag = pow(10, floor(log10(raw)))
        var step = [1.0, 2, 2.5, 5, 10].map { $0 * mag }.first { $0 >= raw } ?? 10 * mag
        if integer { step = Swift.max(1, step.rounded(.up)) }
        var t: [Double] = []
        var v = ceil(lower / step) * step
        while v <= upper + 1e-9 * step {
            t.append(abs(v) < 1e-12 * step ? 0 : v)
            v += step
        }
        return t
    }
}

struct Series {
    var name: String
    var x: [Double]
    var y: [Double]
    var color: String
    var dashed = false
    var markers = false
}

/// One chart: frame, axes, ticks, labels, legend; `body` adds the marks.
struct Chart {
    var title: String
    var x: PlotAxis
    var y: PlotAxis
    var width = 430.0
    var height = 290.0
    let left = 62.0, right = 14.0, top = 28.0, bottom = 44.0
    var legend: [(String, String, Bool)] = []   // name, color, dashed
    var marks: [String] = []
    var xCategories: [String]? = nil
    var note: String? = nil

    var plotWidth: Double { width - left - right }
    var plotHeight: Double { height - top - bottom }
    func px(_ v: Double) -> Double { left + x.unit(v) * plotWidth }
    func py(_ v: Double) -> Double { top + (1 - y.unit(v)) * plotHeight }
    func f(_ v: Double) -> String { String(format: "%.1f", v) }

    func inside(_ xv: Double, _ yv: Double) -> Bool {
        xv.isFinite && yv.isFinite && (!x.log || xv > 0) && (!y.log || yv > 0)
    }

    mutating func line(_ s: Series) {
        var d = ""
        var pen = false
        for (a, b) in zip(s.x, s.y) {
            guard inside(a, b) else { pen = false; continue }
            d += (pen ? " L" : " M") + "\(f(px(a))),\(f(py(b)))"
            pen = true
        }
        if !d.isEmpty {
            marks.append("<path d=\"\(d)\" fill=\"none\" stroke=\"\(s.color)\" stroke-width=\"1.6\"\(s.dashed ? " stroke-dasharray=\"5,3\"" : "")/>")
        }
        if s.markers || s.x.count == 1 { points(s, radius: 2.6) }
        legend.append((s.name, s.color, s.dashed))
    }

    mutating func points(_ s: Series, radius: Double = 3.2, addLegend: Bool = false, titles: [String]? = nil) {
        for (k, (a, b)) in zip(s.x, s.y).enumerated() where inside(a, b) {
            let tip = titles.map { "<title>\(escapeXML($0[k]))</title>" } ?? ""
            marks.append("<circle cx=\"\(f(px(a)))\" cy=\"\(f(py(b)))\" r=\"\(radius)\" fill=\"\(s.color)\" fill-opacity=\"0.75\" stroke=\"white\" stroke-width=\"0.5\">\(tip)</circle>")
        }
        if addLegend { legend.append((s.name, s.color, false)) }
    }

    mutating func diagonal() {
        let lo = Swift.max(x.lower, y.lower), hi = Swift.min(x.upper, y.upper)
        guard hi > lo else { return }
        marks.append("<line x1=\"\(f(px(lo)))\" y1=\"\(f(py(lo)))\" x2=\"\(f(px(hi)))\" y2=\"\(f(py(hi)))\" stroke=\"#888\" stroke-dasharray=\"4,3\"/>")
    }

    mutating func horizontal(_ v: Double, color c: String, label: String) {
        guard v.isFinite, (!y.log || v > 0) else { return }
        marks.append("<line x1=\"\(f(left))\" y1=\"\(f(py(v)))\" x2=\"\(f(left + plotWidth))\" y2=\"\(f(py(v)))\" stroke=\"\(c)\" stroke-dasharray=\"6,3\" stroke-width=\"1.2\"/>")
        legend.append((label, c, true))
    }

    var svg: String {
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height + legendHeight))\" viewBox=\"0 0 \(Int(width)) \(Int(height + legendHeight))\" font-family=\"Helvetica, Arial, sans-serif\" font-size=\"11\">"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>"
        s += "<text x=\"\(f(width / 2))\" y=\"16\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"bold\">\(escapeXML(title))</text>"
        s += "<rect x=\"\(f(left))\" y=\"\(f(top))\" width=\"\(f(plotWidth))\" height=\"\(f(plotHeight))\" fill=\"none\" stroke=\"#444\"/>"
        if let cats = xCategories {
            for (i, c) in cats.enumerated() {
                let xp = px(Double(i))
                s += "<line x1=\"\(f(xp))\" y1=\"\(f(top + plotHeight))\" x2=\"\(f(xp))\" y2=\"\(f(top + plotHeight + 4))\" stroke=\"#444\"/>"
                let label = c.count > 22 ? String(c.prefix(21)) + "…" : c
                s += "<text transform=\"translate(\(f(xp + 3)),\(f(top + plotHeight + 8))) rotate(35)\" font-size=\"9\">\(escapeXML(label))<title>\(escapeXML(c))</title></text>"
            }
        } else {
            for t in x.ticks {
                let xp = px(t)
                s += "<line x1=\"\(f(xp))\" y1=\"\(f(top))\" x2=\"\(f(xp))\" y2=\"\(f(top + plotHeight))\" stroke=\"#eee\"/>"
                s += "<text x=\"\(f(xp))\" y=\"\(f(top + plotHeight + 14))\" text-anchor=\"middle\">\(shortNumber(t))</text>"
            }
            s += "<text x=\"\(f(left + plotWidth / 2))\" y=\"\(f(top + plotHeight + 32))\" text-anchor=\"middle\">\(escapeXML(x.label + (x.log ? " (log)" : "")))</text>"
        }
        for t in y.ticks {
            let yp = py(t)
            s += "<line x1=\"\(f(left))\" y1=\"\(f(yp))\" x2=\"\(f(left + plotWidth))\" y2=\"\(f(yp))\" stroke=\"#eee\"/>"
            s += "<text x=\"\(f(left - 4))\" y=\"\(f(yp + 3.5))\" text-anchor=\"end\">\(shortNumber(t))</text>"
        }
        s += "<text transform=\"translate(14,\(f(top + plotHeight / 2))) rotate(-90)\" text-anchor=\"middle\">\(escapeXML(y.label + (y.log ? " (log)" : "")))</text>"
        s += marks.joined()
        // Legend below the plot, wrapped in rows.
        var lx = left, ly = height + 4 + (xCategories != nil ? 60 : 0)
        for (name, c, dashed) in legend {
            let w = 30 + 6.2 * Double(min(name.count, 40))
            if lx + w > width - right && lx > left { lx = left; ly += 15 }
            s += "<line x1=\"\(f(lx))\" y1=\"\(f(ly))\" x2=\"\(f(lx + 18))\" y2=\"\(f(ly))\" stroke=\"\(c)\" stroke-width=\"2.5\"\(dashed ? " stroke-dasharray=\"4,2\"" : "")/>"
            s += "<text x=\"\(f(lx + 22))\" y=\"\(f(ly + 3.5))\">\(escapeXML(String(name.prefix(40))))</text>"
            lx += w
        }
        if let n = note { s += "<text x=\"\(f(left + plotWidth - 4))\" y=\"\(f(top + plotHeight - 5))\" text-anchor=\"end\" font-size=\"9\" fill=\"#555\">\(escapeXML(n))</text>" }
        return s + "</svg>"
    }

    var legendHeight: Double {
        var lx = left, rows = legend.isEmpty ? 0.0 : 1.0
        for (name, _, _) in legend {
            let w = 30 + 6.2 * Double(min(name.count, 40))
            if lx + w > width - right && lx > left { lx = left; rows += 1 }
            lx += w
        }
        return rows * 15 + (rows > 0 ? 6 : 0) + (xCategories != nil ? 60 : 0)
    }
}

enum Charts {
    static func lines(_ title: String, _ series: [Series], xLabel: String, yLabel: String, logY: Bool? = nil) -> String {
        var c = Chart(title: title, x: PlotAxis(values: series.flatMap(\.x), label: xLabel, log: false),
                      y: PlotAxis(values: series.flatMap(\.y), label: yLabel, log: logY))
        for s in series { c.line(s) }
        return c.svg
    }

    /// Per-structure scatter of `after` against `before` with the diagonal (points below it improved).
    static func scatter(_ title: String, _ series: [Series], xLabel: String, yLabel: String, titles: [[String]]? = nil) -> String {
        let all = series.flatMap { $0.x + $0.y }
        let positive = all.filter(\.isFinite).allSatisfy { $0 > 0 }
        let ax = PlotAxis(values: all, label: xLabel, log: positive ? nil : false)
        var c = Chart(title: title, x: ax, y: PlotAxis(values: all, label: yLabel, log: ax.log), width: 380, height: 340)
        c.y.lower = c.x.lower
        c.y.upper = c.x.upper
        c.diagonal()
        for (k, s) in series.enumerated() { c.points(s, addLegend: true, titles: titles?[k]) }
        c.note = "below the diagonal: smaller error"
        return c.svg
    }

    /// Overlaid histograms (outlines) on common bins; logarithmic bins when the values span > 2 decades.
    static func histogram(_ title: String, _ groups: [(String, [Double], String)], xLabel: String, bins: Int = 16) -> String {
        let all = groups.flatMap(\.1).filter(\.isFinite)
        let ax = PlotAxis(values: all, label: xLabel, autoLogRatio: 100)
        let edges: [Double] = (0...bins).map { k in
            let t = Double(k) / Double(bins)
            return ax.log ? pow(10, log10(ax.lower) + t * (log10(ax.upper) - log10(ax.lower))) : ax.lower + t * (ax.upper - ax.lower)
        }
        var counts: [[Double]] = []
        for (_, v, _) in groups {
            var h = [Double](repeating: 0, count: bins)
            for x in v where x.isFinite {
                var b = Int(ax.unit(x) * Double(bins))
                b = Swift.min(Swift.max(b, 0), bins - 1)
                h[b] += 1
            }
            counts.append(h)
        }
        var c = Chart(title: title, x: ax, y: PlotAxis(values: counts.flatMap { $0 } + [0], label: "structures", log: false, includeZero: true))
        for (k, (name, _, col)) in groups.enumerated() {
            var d = "M\(c.f(c.px(edges[0]))),\(c.f(c.py(0)))"
            for b in 0..<bins {
                d += " L\(c.f(c.px(edges[b]))),\(c.f(c.py(counts[k][b]))) L\(c.f(c.px(edges[b + 1]))),\(c.f(c.py(counts[k][b])))"
            }
            d += " L\(c.f(c.px(edges[bins]))),\(c.f(c.py(0)))"
            c.marks.append("<path d=\"\(d)\" fill=\"\(col)\" fill-opacity=\"0.12\" stroke=\"\(col)\" stroke-width=\"1.6\"/>")
            c.legend.append((name, col, false))
        }
        return c.svg
    }

    /// Values per category (one column of dots per category, jittered per series), optional reference lines.
    static func strip(_ title: String, categories: [String], series: [(String, [(Int, Double)], String)], yLabel: String,
                      references: [(String, Double, String)] = [], logY: Bool? = nil, note: String? = nil) -> String {
        let ys = series.flatMap { $0.1.map(\.1) } + references.map(\.1)
        var c = Chart(title: title, x: PlotAxis(values: [-0.5, Double(Swift.max(categories.count, 1)) - 0.5], label: "", log: false),
                      y: PlotAxis(values: ys, label: yLabel, log: logY))
        c.x.lower = -0.6
        c.x.upper = Double(Swift.max(categories.count, 1)) - 0.4
        c.width = Swift.max(430, Swift.min(1340, 90 + 34 * Double(categories.count)))
        c.xCategories = categories
        c.note = note
        for (name, v, col) in references { c.horizontal(v, color: col, label: name) }
        let n = Double(series.count)
        for (k, (name, pts, col)) in series.enumerated() {
            let off = n > 1 ? (Double(k) - (n - 1) / 2) * Swift.min(0.6 / n, 0.2) : 0
            c.points(Series(name: name, x: pts.map { Double($0.0) + off }, y: pts.map(\.1), color: col), addLegend: true)
        }
        return c.svg
    }
}
