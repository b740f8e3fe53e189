import Atoms
import Foundation
import Tape

/// Where the radial distribution function is evaluated and how it is smeared.
public struct RDFSettings: Codable, Sendable, Equatable {
    /// Radii r_b (Å) at which g(r) is evaluated, ascending and positive.
    public var radii: [Double]
    /// Width of the Gaussian each pair distance is smeared with, Å.
    public var sigma: Double

    public init(radii: [Double], sigma: Double) {
        precondition(!radii.isEmpty && radii[0] > 0 && zip(radii, radii.dropFirst()).allSatisfy { $0 < $1 }, "RDF radii must be positive and ascending")
        precondition(sigma > 0, "RDF smearing must be positive")
        self.radii = radii
        self.sigma = sigma
    }

    /// `bins` bin centres (k + ½)·r_max/bins.
    public init(rMax: Double = 5, bins: Int = 100, sigma: Double = 0.05) {
        let dr = rMax / Double(bins)
        self.init(radii: (0..<bins).map { (Double($0) + 0.5) * dr }, sigma: sigma)
    }

    public var rMax: Double { radii.last! }
    /// Pairs farther than this contribute less than e^−32 of a Gaussian's peak to any radius.
    var pairCutoff: Double { rMax + 8 * sigma }
}

/// Gaussian-smeared radial distribution function
/// g(r) = V/(4π r² N²) Σ_{i≠j} (2πσ²)^−½ exp(−(r − r_ij)²/(2σ²)), summed over periodic images.
/// It tends to 1 at large r in a homogeneous system; for structures without a cell the density factor V/N is
/// left out (the result is then the smeared pair count per atom over 4πr²). StABlE (Raja et al. 2025,
/// `DifferentiableRDF`) smears the same way but normalises the histogram to sum 1; g(r) is kept here so that
/// reference files from other tools compare directly.
public enum RadialDistribution {
    static func normalisation(_ s: Structure, radii: [Double]) -> [Double] {
        let n = Double(s.count)
        let density = s.hasCell && s.isPeriodic ? s.volume / (n * n) : 1 / n
        return radii.map { density / (4 * Double.pi * $0 * $0) }
    }

    /// g(r) of one structure (values only; pairs beyond 8σ of a radius are skipped, which changes nothing
    /// at double precision).
    public static func values(_ s: Structure, settings: RDFSettings) -> [Double] {
        let nl = NeighborList.build(s, cutoff: settings.pairCutoff)
        let half = nl.halfPairIndices
        let r = settings.radii
        var h = [Double](repeating: 0, count: r.count)
        guard !half.isEmpty else { return h }
        let d = rowNorms(nl.subset(half).pairVectors(positions: s.positions, cell: s.cell))
        let sig = settings.sigma
        let c = 2 / ((2 * Double.pi).squareRoot() * sig)  // 2: each unordered pair counts for i→j and j→i
        let reach = 8 * sig
        for x in d {
            var lo = 0, hi = r.count
            // First radius ≥ x − reach.
            while lo < hi { let mid = (lo + hi) / 2; if r[mid] < x - reach { lo = mid + 1 } else { hi = mid } }
            var b = lo
            while b < r.count && r[b] <= x + reach {
                let u = (r[b] - x) / sig
                h[b] += c * Foundation.exp(-0.5 * u * u)
                b += 1
            }
        }
        let norm = normalisation(s, radii: r)
        return zip(h, norm).map { $0 * $1 }
    }

    /// g(r) as a tape expression of the positions [N, 3] (cell and periodicity from `structure`), every pair
    /// against every radius, so that it can be differentiated with respect to positions (and again).
    public static func differentiable(positions: Variable, structure s: Structure, settings: RDFSettings) -> Variable {
        let nl = NeighborList.build(positions: positions.value, cell: s.cell, pbc: s.pbc, cutoff: settings.pairCutoff)
        let half = nl.halfPairIndices
        guard !half.isEmpty else { return Variable(constant: Tensor.zeros([settings.radii.count])) }
        let sub = nl.subset(half)
        let d = sub.pairVectors(positions: positions, cell: Variable(constant: s.cell)).norm(axis: -1).reshaped([half.count, 1])
        let centres = Variable(constant: Tensor(shape: [1, settings.radii.count], settings.radii))
        let u = (centres - d) * (1 / settings.sigma)
        let gauss = (u.squared() * -0.5).exp()
        let c = 2 / ((2 * Double.pi).squareRoot() * settings.sigma)
        let norm = normalisation(s, radii: settings.radii).map { $0 * c }
        return gauss.sum(axis: 0) * Tensor(norm)
    }

    /// Mean g(r) over frames.
    public static func average(_ frames: [Structure], settings: RDFSettings) -> [Double] {
        var acc = [Double](repeating: 0, count: settings.radii.count)
        for f in frames { for (k, v) in values(f, settings: settings).enumerated() { acc[k] += v } }
        return acc.map { $0 / Double(Swift.max(frames.count, 1)) }
    }

    /// Mean absolute difference over the radii (StABlE reports r_max times this, the integrated error).
    public static func meanAbsoluteError(_ a: [Double], _ b: [Double]) -> Double {
        precondition(a.count == b.count, "RDFs of different lengths")
        return zip(a, b).reduce(0) { $0 + Swift.abs($1.0 - $1.1) } / Double(Swift.max(a.count, 1))
    }
}

/// Bond-angle distribution: angles θ_jik between bonds i–j and i–k shorter than `cutoff`, smeared with a
/// Gaussian of width `sigma` (degrees) and normalised to integrate to 1 over 0…180° (StABlE's ADF uses 180 bins
/// and 1°).
public struct AngleDistribution: Codable, Sendable, Equatable {
    public var cutoff: Double
    public var bins: Int
    public var sigma: Double

    public init(cutoff: Double, bins: Int = 180, sigma: Double = 1) {
        self.cutoff = cutoff
        self.bins = bins
        self.sigma = sigma
    }

    /// Bin centres, degrees.
    public var angles: [Double] { (0..<bins).map { (Double($0) + 0.5) * 180 / Double(bins) } }

    public func values(_ s: Structure) -> [Double] { accumulate([s]) }

    /// Mean distribution over frames (all angles of all frames pooled).
    public func average(_ frames: [Structure]) -> [Double] { accumulate(frames) }

    func accumulate(_ frames: [Structure]) -> [Double] {
        var h = [Double](repeating: 0, count: bins)
        var count = 0
        let width = 180 / Double(bins)
        for s in frames {
            let nl = NeighborList.build(s, cutoff: cutoff)
            let d = nl.pairVectors(positions: s.positions, cell: s.cell).array
            for i in 0..<s.count {
                let lo = nl.offsets[i], hi = nl.offsets[i + 1]
                guard hi - lo >= 2 else { continue }
                for p in lo..<(hi - 1) {
                    for q in (p + 1)..<hi {
                        let a = (d[3 * p], d[3 * p + 1], d[3 * p + 2]), b = (d[3 * q], d[3 * q + 1], d[3 * q + 2])
                        let na = (a.0 * a.0 + a.1 * a.1 + a.2 * a.2).squareRoot(), nb = (b.0 * b.0 + b.1 * b.1 + b.2 * b.2).squareRoot()
                        let c = Swift.max(-1, Swift.min(1, (a.0 * b.0 + a.1 * b.1 + a.2 * b.2) / (na * nb)))
                        let theta = Foundation.acos(c) * 180 / Double.pi
                        count += 1
                        for k in 0..<bins {
                            let u = ((Double(k) + 0.5) * width - theta) / sigma
                            if Swift.abs(u) < 8 { h[k] += Foundation.exp(-0.5 * u * u) }
                        }
                    }
                }
            }
        }
        let c = 1 / ((2 * Double.pi).squareRoot() * sigma * Double(Swift.max(count, 1)))
        return h.map { $0 * c }
    }
}

/// Bonds of a reference structure and their reference lengths, for the bond-length-deviation observable and
/// StABlE's instability criterion (`BondLengthDeviation`: max over bonds of |d_bond − mean reference length|).
public struct BondSet: Codable, Sendable, Equatable {
    public var first: [Int]
    public var second: [Int]
    /// Mean length of each bond in the reference (Å).
    public var referenceLengths: [Double]

    public var count: Int { first.count }

    /// Bonds i < j of `s` (`BondGraph` of Atoms: shorter than `cutoff`, or than `factor` × the sum of covalent
    /// radii: Si–Si 1.2 × 2.22 = 2.66 Å, between the first and second neighbour shells of the crystal), each
    /// once, by its first image in the neighbour list. Each bond is then measured by its minimum image, so the
    /// cell must be larger than twice the bond length.
    public static func detect(_ s: Structure, cutoff: Double? = nil, factor: Double = BondGraph.defaultScale) -> BondSet {
        var seen = Set<Int>()
        var f: [Int] = [], g: [Int] = [], len: [Double] = []
        for b in BondGraph.bonds(s, positions: s.positions, scale: factor, cutoff: cutoff) where b.i < b.j && seen.insert(b.i * s.count + b.j).inserted {
            f.append(b.i); g.append(b.j); len.append(b.length)
        }
        return BondSet(first: f, second: g, referenceLengths: len)
    }

    /// Minimum-image lengths of the bonds at `positions` [N, 3].
    public func lengths(_ positions: Tensor, cell: Tensor, pbc: [Bool]) -> [Double] {
        guard count > 0 else { return [] }
        let d = Structure.minimumImage(positions.gatherRows(second) - positions.gatherRows(first), cell: cell, pbc: pbc)
        return rowNorms(d)
    }

    /// Reference lengths replaced by the mean minimum-image length of each bond over `frames` (e.g. a
    /// reference trajectory of the same atoms).
    public mutating func setReferenceLengths(from frames: [Structure]) {
        guard !frames.isEmpty else { return }
        var acc = [Double](repeating: 0, count: count)
        for f in frames { for (k, l) in lengths(f.positions, cell: f.cell, pbc: f.pbc).enumerated() { acc[k] += l } }
        referenceLengths = acc.map { $0 / Double(frames.count) }
    }

    /// |d_bond − reference| per bond.
    public func deviations(_ positions: Tensor, cell: Tensor, pbc: [Bool]) -> [Double] {
        zip(lengths(positions, cell: cell, pbc: pbc), referenceLengths).map { Swift.abs($0 - $1) }
    }

    /// Per atom, the largest deviation of its bonds (0 for atoms without bonds): the local, per-neighbourhood
    /// version of the criterion, which says where a structure breaks.
    public func atomDeviations(_ positions: Tensor, cell: Tensor, pbc: [Bool], atomCount: Int) -> [Double] {
        var out = [Double](repeating: 0, count: atomCount)
        for (k, dev) in deviations(positions, cell: cell, pbc: pbc).enumerated() {
            out[first[k]] = Swift.max(out[first[k]], dev.isNaN ? .infinity : dev)
            out[second[k]] = Swift.max(out[second[k]], dev.isNaN ? .infinity : dev)
        }
        return out
    }
}

/// Smallest interatomic distance (minimum image, all images), or `cutoff` when no pair is closer than it.
public func minimumDistance(_ s: Structure, cutoff: Double = 3) -> Double {
    guard s.positions.isFinite else { return .nan }
    let nl = NeighborList.build(s, cutoff: cutoff)
    guard nl.pairCount > 0 else { return cutoff }
    return rowNorms(nl.pairVectors(positions: s.positions, cell: s.cell)).min() ?? cutoff
}

/// Normalised velocity autocorrelation C(τ) = ⟨v(t)·v(t+τ)⟩ / ⟨v(t)·v(t)⟩ over atoms and time origins, for
/// lags 0…window−1 frames (StABlE's VACF uses a 100-step window). `velocities[t]` holds frame t's N·3
/// velocities; frames must be equally spaced and contiguous.
public func velocityAutocorrelation(_ velocities: [[Double]], window: Int) -> [Double] {
    let t = velocities.count
    let w = Swift.min(window, t)
    guard w > 0 else { return [] }
    var c = [Double](repeating: 0, count: w), n = [Double](repeating: 0, count: w)
    for t0 in 0..<t {
        let a = velocities[t0]
        for lag in 0..<Swift.min(w, t - t0) {
            let b = velocities[t0 + lag]
            var s = 0.0
            for i in 0..<a.count { s += a[i] * b[i] }
            c[lag] += s
            n[lag] += 1
        }
    }
    let c0 = c[0] / n[0]
    return (0..<w).map { c0 == 0 ? 0 : (c[$0] / n[$0]) / c0 }
}

/// Velocities per frame [N·3] (Å per ASE time unit) from frames with `momenta` (as `relaxft md` writes and
/// ASE stores them), or nil when a frame has none.
public func frameVelocities(_ frames: [Structure]) -> [[Double]]? {
    var out: [[Double]] = []
    for f in frames {
        guard case .doubles(let p)? = f.arrays["momenta"] else { return nil }
        let m = f.masses
        var v = p.array
        for a in 0..<f.count { for k in 0..<3 { v[3 * a + k] /= m[a] } }
        out.append(v)
    }
    return out
}

/// Euclidean norms of the rows of an [M, 3] tensor.
func rowNorms(_ t: Tensor) -> [Double] {
    let m = t.count / 3
    var out = [Double](repeating: 0, count: m)
    t.withUnsafeBufferPointer { p in
        for q in 0..<m {
            let x = p[3 * q], y = p[3 * q + 1], z = p[3 * q + 2]
            out[q] = (x * x + y * y + z * z).squareRoot()
        }
    }
    return out
}
