import Foundation
import Tape

/// The structure file formats relaxft reads and writes.
public enum StructureFormat: String, Sendable, CaseIterable {
    /// Extended XYZ (ASE's `extxyz`); multi-frame. Also plain XYZ.
    case extxyz
    /// VASP POSCAR/CONTCAR; one structure.
    case vasp
    /// CIF; read only.
    case cif

    /// Format by name, as `--from/--to` take it: extxyz (or xyz), vasp (or poscar, contcar), cif.
    public init?(name: String) {
        switch name.lowercased() {
        case "extxyz", "xyz": self = .extxyz
        case "vasp", "poscar", "contcar": self = .vasp
        case "cif": self = .cif
        default: return nil
        }
    }

    /// Format from a file name: `.xyz`/`.extxyz`; `.vasp`/`.poscar` or a name containing POSCAR or CONTCAR
    /// (`POSCAR`, `CONTCAR.relaxed`, `Si.POSCAR`); `.cif`.
    public init?(path: String) {
        let name = URL(fileURLWithPath: path).lastPathComponent
        switch URL(fileURLWithPath: path).pathExtension.lowercased() {
        case "xyz", "extxyz": self = .extxyz
        case "vasp", "poscar": self = .vasp
        case "cif": self = .cif
        default:
            guard name.contains("POSCAR") || name.contains("CONTCAR") else { return nil }
            self = .vasp
        }
    }

    public var canWrite: Bool { self != .cif }
}

public struct ReadOptions: Sendable {
    /// Element symbols of the species groups of a VASP 4 POSCAR, which has no species line.
    public var species: [String]?
    /// Reading fails when two atoms (or an atom and a periodic image) are closer than this (Å); nil: no check.
    public var minimumDistance: Double?

    public init(species: [String]? = nil, minimumDistance: Double? = 0.1) {
        self.species = species
        self.minimumDistance = minimumDistance
    }
}

public struct WriteOptions: Sendable {
    /// POSCAR coordinates as Direct (fractional) rather than Cartesian; Cartesian round-trips bit for bit.
    public var vaspDirect: Bool

    public init(vaspDirect: Bool = false) { self.vaspDirect = vaspDirect }
}

/// Reading and writing structure files. Every reader checks what it read (finite numbers, a regular cell for
/// periodic structures, no atoms closer than `minimumDistance`) and reports problems as `StructureFileError`;
/// writers check the structures first and then replace the file atomically, so a failed write leaves no file
/// or the previous one.
public enum StructureIO {
    public static func read(_ path: String, format: StructureFormat? = nil, options: ReadOptions = ReadOptions()) throws -> [Structure] {
        let format = try format ?? inferredFormat(path)
        return try parse(readText(path), format: format, path: path, options: options)
    }

    /// Reads structures from text; `path` only names the source in error messages.
    public static func parse(_ text: String, format: StructureFormat, path: String = "<text>", options: ReadOptions = ReadOptions()) throws -> [Structure] {
        let src = SourceText(path: path, text: text)
        let frames: [ParsedFrame]
        switch format {
        case .extxyz: frames = try ExtXYZ.read(src)
        case .vasp: frames = try POSCAR.read(src, species: options.species)
        case .cif: frames = try CIF.read(src)
        }
        for (k, f) in frames.enumerated() { try check(f, frame: k, of: frames.count, src, minimumDistance: options.minimumDistance) }
        return frames.map(\.structure)
    }

    public static func write(_ structures: [Structure], _ path: String, format: StructureFormat? = nil, options: WriteOptions = WriteOptions()) throws {
        let format = try format ?? inferredFormat(path)
        try atomicWrite(text(structures, format: format, path: path, options: options), to: path)
    }

    /// The file text for structures; `path` only names the destination in error messages.
    public static func text(_ structures: [Structure], format: StructureFormat, path: String = "<text>", options: WriteOptions = WriteOptions()) throws -> String {
        guard !structures.isEmpty else {
            throw StructureFileError(path: path, line: nil, kind: .unwritableStructure, expected: "at least one structure", found: "none")
        }
        for (k, s) in structures.enumerated() {
            let frame = structures.count > 1 ? " (frame \(k + 1))" : ""
            func fail(_ expected: String, _ found: String) -> StructureFileError {
                StructureFileError(path: path, line: nil, kind: .unwritableStructure, expected: expected, found: found + frame)
            }
            let n = s.count
            guard s.positions.shape == [n, 3], s.cell.shape == [3, 3], s.pbc.count == 3 else {
                throw fail("positions [\(n), 3], a 3×3 cell and 3 pbc flags", "positions \(s.positions.shape), cell \(s.cell.shape), \(s.pbc.count) pbc flags")
            }
            guard s.fixed.map({ $0.count == n }) ?? true, s.customMasses.map({ $0.count == n }) ?? true else {
                throw fail("\(n) fixed flags and masses", "\(s.fixed?.count ?? n) fixed flags, \(s.customMasses?.count ?? n) masses")
            }
            for (name, array) in s.arrays {
                let shapeOK: Bool
                switch array {
                case .doubles(let t): shapeOK = (t.rank == 1 || t.rank == 2) && t.shape[0] == n
                case .ints(let v, let w): shapeOK = w >= 1 && v.count == n * w
                case .bools(let v, let w): shapeOK = w >= 1 && v.count == n * w
                case .strings(let v): shapeOK = v.count == n
                }
                guard shapeOK else { throw fail("\(n) rows in per-atom array '\(name)'", "another shape") }
            }
            guard s.positions.isFinite else { throw fail("finite positions", "a NaN or infinite coordinate") }
            guard s.cell.isFinite else { throw fail("a finite cell", "\(s.cell.array)") }
            guard !s.isPeriodic || cellIsRegular(s.cell) else {
                throw fail("three independent lattice vectors for a periodic structure", "cell \(s.cell.array) with pbc \(s.pbc)")
            }
            if let bad = s.numbers.first(where: { !Elements.symbols.indices.contains($0) }) {
                throw fail("atomic numbers from 0 to \(Elements.symbols.count - 1)", "\(bad)")
            }
        }
        switch format {
        case .extxyz: return try ExtXYZ.write(structures, path: path)
        case .vasp: return try POSCAR.write(structures, path: path, direct: options.vaspDirect)
        case .cif:
            throw StructureFileError(path: path, line: nil, kind: .unknownFormat, expected: "a format relaxft writes (extxyz, vasp)", found: "cif (read only)")
        }
    }

    static func inferredFormat(_ path: String) throws -> StructureFormat {
        guard let f = StructureFormat(path: path) else {
            throw StructureFileError(path: path, line: nil, kind: .unknownFormat,
                                     expected: "a name ending in .xyz, .extxyz, .vasp, .poscar or .cif, or containing POSCAR or CONTCAR (else name the format: extxyz, vasp, cif)",
                                     found: quoted(URL(fileURLWithPath: path).lastPathComponent))
        }
        return f
    }

    static func readText(_ path: String) throws -> String {
        var isDirectory: ObjCBool = false
        let exists = FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory)
        guard exists, !isDirectory.boolValue, let data = FileManager.default.contents(atPath: path) else {
            throw StructureFileError(path: path, line: nil, kind: .unreadable, expected: "a readable file",
                                     found: !exists ? "no such file" : isDirectory.boolValue ? "a directory" : "a file that cannot be opened")
        }
        return decodeText(data)
    }

    /// Writes to a new temporary file in the destination's directory, then renames it over the destination.
    static func atomicWrite(_ text: String, to path: String) throws {
        try AtomicFile.write(Data(text.utf8), to: path)
    }

    // MARK: Checks after reading

    static func check(_ f: ParsedFrame, frame k: Int, of count: Int, _ src: SourceText, minimumDistance: Double?) throws {
        let s = f.structure
        let which = count > 1 ? " in frame \(k + 1)" : ""
        if s.isPeriodic && !cellIsRegular(s.cell) {
            let pbc = s.pbc.map { $0 ? "T" : "F" }.joined(separator: " ")
            throw src.error(.singularCell, at: f.cellLine,
                            expected: "three independent lattice vectors for a periodic structure (pbc \(pbc))",
                            found: "cell rows \(s.cell.array.map { "\($0)" }.joined(separator: " ")) with volume \(s.volume)\(which)")
        }
        if let d = minimumDistance, let pair = closePair(s, below: d) {
            let (i, j) = (pair.i, pair.j)
            let atoms = i == j ? "atom \(i + 1) and its own periodic image" : "atoms \(i + 1) and \(j + 1) (lines \(f.atomLines[i] + 1) and \(f.atomLines[j] + 1))"
            throw src.error(.atomsTooClose, at: f.atomLines[j], expected: "atoms at least \(d) Å apart",
                            found: "\(atoms) \(String(format: "%.4g", pair.distance)) Å apart\(which)")
        }
    }
}

/// Whether the cell's vectors span a volume: |det| above 1e-9 of the product of their lengths (a relative test,
/// so it does not depend on units or cell size).
func cellIsRegular(_ cell: Tensor) -> Bool {
    let c = cell.array
    let lengths = (0..<3).map { (k: Int) -> Double in
        let (x, y, z) = (c[3 * k], c[3 * k + 1], c[3 * k + 2])
        return (x * x + y * y + z * z).squareRoot()
    }
    let det = cell.determinant3x3
    return det.isFinite && lengths.allSatisfy { $0 > 0 && $0.isFinite } && Swift.abs(det) > 1e-9 * lengths[0] * lengths[1] * lengths[2]
}

/// Two atoms of a structure without a cell (a molecule) closer than `d`: a sweep along x over positions [N·3].
func closePairWithoutCell(_ x: [Double], below d: Double) -> (i: Int, j: Int, distance: Double)? {
    let n = x.count / 3
    let order = (0..<n).sorted { x[3 * $0] < x[3 * $1] }
    for p in 0..<n {
        let i = order[p]
        for q in (p + 1)..<n {
            let j = order[q]
            guard x[3 * j] - x[3 * i] < d else { break }
            let (dx, dy, dz) = (x[3 * j] - x[3 * i], x[3 * j + 1] - x[3 * i + 1], x[3 * j + 2] - x[3 * i + 2])
            let r = (dx * dx + dy * dy + dz * dz).squareRoot()
            if r < d { return (min(i, j), max(i, j), r) }
        }
    }
    return nil
}

/// A pair of atoms closer than `d` (minimum image along periodic axes), or an atom closer than `d` to its own
/// image (i == j); nil when there is none. A sorted sweep along the first lattice direction finds the candidates,
/// then only the images that can lie within d are measured: O(N log N) for ordinary structures, exact for any cell.
func closePair(_ s: Structure, below d: Double) -> (i: Int, j: Int, distance: Double)? {
    let n = s.count
    let x = s.positions.array
    func length(_ v: [Double]) -> Double { (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).squareRoot() }
    guard cellIsRegular(s.cell), let inverse = s.cell.inverse3x3() else { return closePairWithoutCell(x, below: d) }
    let c = s.cell.array
    let f = Tensor.matmul(s.positions, inverse).array
    // A vector shorter than d has |fractional component k| < d / (cell height along k) = window[k].
    func crossLength(_ a: Int, _ b: Int) -> Double {
        let (u, v) = (3 * a, 3 * b)
        return length([c[u + 1] * c[v + 2] - c[u + 2] * c[v + 1], c[u + 2] * c[v] - c[u] * c[v + 2], c[u] * c[v + 1] - c[u + 1] * c[v]])
    }
    let window = [crossLength(1, 2), crossLength(2, 0), crossLength(0, 1)].map { d * $0 / s.volume * (1 + 1e-12) }
    if let k = (0..<3).first(where: { s.pbc[$0] && window[$0] > 50 }) {
        return (0, 0, d / window[k])  // a cell thinner than d/50: every atom is that close to its own image
    }
    /// Shortest image of fractional difference df below d (the zero shift excluded for an atom's own images).
    func nearest(_ df: [Double], selfImage: Bool) -> Double? {
        var ranges: [ClosedRange<Int>] = [], g = df
        for k in 0..<3 {
            if s.pbc[k] {
                g[k] -= g[k].rounded(.toNearestOrEven)
                let lo = Int((-window[k] - g[k]).rounded(.up)), hi = Int((window[k] - g[k]).rounded(.down))
                guard lo <= hi else { return nil }
                ranges.append(lo...hi)
            } else {
                guard Swift.abs(g[k]) < window[k] else { return nil }
                ranges.append(0...0)
            }
        }
        var best: Double?
        for a in ranges[0] { for b in ranges[1] { for e in ranges[2] where !(selfImage && a == 0 && b == 0 && e == 0) {
            let h = [g[0] + Double(a), g[1] + Double(b), g[2] + Double(e)]
            let r = length((0..<3).map { j in h[0] * c[j] + h[1] * c[3 + j] + h[2] * c[6 + j] })
            if r < d, r < (best ?? .infinity) { best = r }
        } } }
        return best
    }
    if n > 0, (0..<3).contains(where: { s.pbc[$0] && window[$0] >= 1 }), let r = nearest([0, 0, 0], selfImage: true) {
        return (0, 0, r)
    }
    // Windows under half a cell: only the nearest image along each axis can be within d, so a pair is rejected
    // or measured with a few scalar operations (a perfect crystal puts many atoms in each sweep window).
    let nearestImageOnly = window.allSatisfy { $0 < 0.5 }
    func pairDistance(_ i: Int, _ j: Int) -> Double? {
        guard nearestImageOnly else { return nearest((0..<3).map { f[3 * j + $0] - f[3 * i + $0] }, selfImage: false) }
        var g0 = f[3 * j] - f[3 * i], g1 = f[3 * j + 1] - f[3 * i + 1], g2 = f[3 * j + 2] - f[3 * i + 2]
        if s.pbc[0] { g0 -= g0.rounded(.toNearestOrEven) }
        if s.pbc[1] { g1 -= g1.rounded(.toNearestOrEven) }
        if s.pbc[2] { g2 -= g2.rounded(.toNearestOrEven) }
        guard Swift.abs(g0) < window[0], Swift.abs(g1) < window[1], Swift.abs(g2) < window[2] else { return nil }
        let vx = g0 * c[0] + g1 * c[3] + g2 * c[6], vy = g0 * c[1] + g1 * c[4] + g2 * c[7], vz = g0 * c[2] + g1 * c[5] + g2 * c[8]
        let r = (vx * vx + vy * vy + vz * vz).squareRoot()
        return r < d ? r : nil
    }
    let key = (0..<n).map { s.pbc[0] ? f[3 * $0] - f[3 * $0].rounded(.down) : f[3 * $0] }
    let order = (0..<n).sorted { key[$0] < key[$1] }
    let sweep = window[0] < 0.5  // else every pair is a candidate
    for p in 0..<n {
        let i = order[p]
        for q in (p + 1)..<(p + n) {
            // Periodic sweep: cyclic in the wrapped coordinate; each pair is met once, from the atom before it.
            guard q < n || (sweep && s.pbc[0]) else { break }
            let j = order[q % n]
            if sweep {
                let gap = key[j] - key[i] + (q >= n ? 1 : 0)
                guard gap < window[0] else { break }
            }
            if let r = pairDistance(i, j) { return (min(i, j), max(i, j), r) }
        }
    }
    return nil
}
