import Atoms
import Foundation
import Tape

/// What happened to the replicas during a run of steps.
public struct SegmentResult: Sendable {
    /// Frames taken every `sampleInterval` steps, per replica, while the replica was stable, plus (with
    /// `sampleUnstable`) the frame at which it was found unstable.
    public var samples: [[Structure]]
    /// Per replica, the step (counted from the start of the segment, 1-based) at which it was first found
    /// unstable, or nil.
    public var unstableStep: [Int?]
    /// Per replica, whether it stopped on a non-finite energy, force, position or velocity, or exploded (see
    /// `MolecularDynamics.explosionTemperature`); `failure` says which.
    public var nonFinite: [Bool]
    /// Per replica, the atoms whose neighbourhood broke the bond criterion when it was found unstable.
    public var unstableAtoms: [[Int]]
    /// Per replica, the largest bond deviation seen (Å).
    public var maxBondDeviation: [Double]
    /// Steps actually taken per replica.
    public var stepsTaken: [Int]
    /// Per replica, why it stopped when `nonFinite` (e.g. "exploded: kinetic temperature 1.2e+21 K, above 1e+05 K").
    public var failure: [String?] = []
}

extension MolecularDynamics {
    /// Advances the replicas `indices` by `steps` steps. Every `checkInterval` steps (and at every sample)
    /// each replica is checked with `monitor`; a replica found unstable, or with non-finite values, is not
    /// advanced further when `stopUnstable` (non-finite ones never are, and are never sampled). `onStep` is called after every step
    /// with the step number (1-based) and the replicas still running.
    public func runSegment(_ indices: [Int], steps: Int, sampleInterval: Int = 0, monitor: StabilityMonitor? = nil,
                           checkInterval: Int = 10, stopUnstable: Bool = true, sampleUnstable: Bool = false,
                           onStep: ((Int, [Int]) -> Void)? = nil) -> SegmentResult {
        let r = replicaCount
        var result = SegmentResult(samples: Array(repeating: [], count: r), unstableStep: Array(repeating: nil, count: r),
                                   nonFinite: Array(repeating: false, count: r), unstableAtoms: Array(repeating: [], count: r),
                                   maxBondDeviation: Array(repeating: 0, count: r), stepsTaken: Array(repeating: 0, count: r),
                                   failure: Array(repeating: nil, count: r))
        var active = indices
        var k = 0
        while k < steps && !active.isEmpty {
            k += 1
            let failed = Set(step(active))
            for q in active { result.stepsTaken[q] += 1 }
            var stop = Set<Int>()
            for q in failed {
                result.nonFinite[q] = true
                result.failure[q] = failures[q]
                if result.unstableStep[q] == nil { result.unstableStep[q] = k; result.unstableAtoms[q] = Array(0..<atomCount) }
                result.maxBondDeviation[q] = .infinity
                stop.insert(q)
            }
            let sampling = sampleInterval > 0 && k % sampleInterval == 0
            if let m = monitor, k % Swift.max(checkInterval, 1) == 0 || sampling || k == steps {
                for q in active where !failed.contains(q) {
                    let rep = m.check(positions(q))
                    result.maxBondDeviation[q] = Swift.max(result.maxBondDeviation[q], rep.maxBondDeviation)
                    if rep.unstable && result.unstableStep[q] == nil {
                        result.unstableStep[q] = k
                        result.unstableAtoms[q] = rep.unstableAtoms
                        if sampleUnstable && sampleInterval > 0 { result.samples[q].append(frame(q)) }
                    }
                    if rep.unstable && stopUnstable { stop.insert(q) }
                }
            }
            if sampling {
                for q in active where !stop.contains(q) && result.unstableStep[q] == nil { result.samples[q].append(frame(q)) }
            }
            if !stop.isEmpty { active.removeAll { stop.contains($0) } }
            onStep?(k, active)
        }
        return result
    }
}

/// Reading and writing RDF tables: CSV with a header, the first column the radius r (Å).
public enum RDFTable {
    public struct Error: Swift.Error, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }

    /// Reads radii and one g(r) column: `column` by name, else `g_reference`, `g` or the second column.
    public static func read(_ path: String, column: String? = nil) throws -> (radii: [Double], values: [Double]) {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw Error(message: "cannot read \(path)") }
        var lines = text.split(whereSeparator: \.isNewline).map(String.init).filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty && !$0.hasPrefix("#") }
        guard !lines.isEmpty else { throw Error(message: "\(path): empty file") }
        let header = lines.removeFirst().split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard header.count >= 2, Double(header[0]) == nil else {
            throw Error(message: "\(path):1: expected a header such as 'r,g' (radius in Å, then g(r)), found '\(header.joined(separator: ","))'")
        }
        let col: Int
        if let c = column {
            guard let i = header.firstIndex(of: c) else { throw Error(message: "\(path): no column '\(c)' (columns: \(header.joined(separator: ", ")))") }
            col = i
        } else {
            col = header.firstIndex(of: "g_reference") ?? header.firstIndex(of: "g") ?? 1
        }
        var r: [Double] = [], g: [Double] = []
        for (k, line) in lines.enumerated() {
            let f = line.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            guard f.count == header.count, let x = Double(f[0]), let y = Double(f[col]), x.isFinite, y.isFinite else {
                throw Error(message: "\(path):\(k + 2): expected \(header.count) numbers, found '\(line)'")
            }
            r.append(x)
            g.append(y)
        }
        guard !r.isEmpty, r[0] > 0, zip(r, r.dropFirst()).allSatisfy({ $0 < $1 }) else {
            throw Error(message: "\(path): radii must be positive and ascending")
        }
        return (r, g)
    }

    /// CSV text with the header `r,<names…>` and one row per radius; numbers in their shortest exact form, so
    /// that reading the table back gives the same doubles.
    public static func text(radii: [Double], columns: [(String, [Double])]) -> String {
        var s = (["r"] + columns.map(\.0)).joined(separator: ",") + "\n"
        for (k, r) in radii.enumerated() {
            s += (["\(r)"] + columns.map { "\($0.1[k])" }).joined(separator: ",") + "\n"
        }
        return s
    }
}
