import Foundation
import Tape

/// VASP POSCAR/CONTCAR, read as ASE 3.29 reads them and written at full precision.
///
/// Reading: comment line; one scale factor (negative: the cell volume in Å³) or three positive ones (per Cartesian
/// axis); three lattice vectors; the species line (VASP 5; POTCAR labels such as `Na_pv/6a2f` give `Na`) and the
/// counts line (text after `!` ignored); optional `Selective dynamics`; `Direct` or `Cartesian` (`K`); one line
/// per atom, extra words after the coordinates (and flags) ignored, as is anything after the last atom
/// (velocities, predictor-corrector block). Direct coordinates become Cartesian with fused multiply-adds in NumPy's
/// order, so they match ASE's positions bit for bit on FMA hardware (see `cartesian(fractional:cell:)`).
///
/// VASP 4 files have no species line: the species then come from the caller's hint, else from the first line when
/// its first words are element symbols (the VASP 4 convention ASE also uses), else reading fails and says so.
///
/// Selective dynamics: an atom with flags F F F is fixed, T T T is free; mixed flags (fixed along some lattice
/// directions only, ASE's FixScaled) are an error, since relaxft fixes whole atoms and silently freeing or
/// freezing such an atom would change the relaxation.
///
/// Writing: scale 1, cell and Cartesian coordinates (or Direct on request, which is not bit-exact) in Swift's
/// shortest round-trip form; the atom order is kept, so a species that recurs after another gets its own group
/// (`Si C Si`, which VASP accepts); fixed atoms switch on Selective dynamics. POSCAR has no pbc flags: a structure
/// reads back periodic along all three vectors. Info and per-atom arrays are not written.
enum POSCAR {
    static func read(_ src: SourceText, species hint: [String]?) throws -> [ParsedFrame] {
        let r = Reader(src: src)
        let scales = try r.scales()
        var cell = try r.lattice()
        let species = try r.species(hint: hint)
        let (selective, cartesianInput, modeLine) = try r.coordinateMode(after: species.countsLine)
        // Scaling, as ASE applies it: to the cell, and to Cartesian input coordinates.
        var factors = scales.count == 3 ? scales : [scales[0], scales[0], scales[0]]
        if scales.count == 1 && scales[0] < 0 {
            let det = Tensor(shape: [3, 3], cell).determinant3x3
            guard det != 0 else { throw src.error(.singularCell, at: 2, expected: "lattice vectors spanning a volume", found: "volume 0") }
            let f = Foundation.cbrt(-scales[0] / det)
            factors = [f, f, f]
        }
        for i in 0..<9 { cell[i] *= factors[i % 3] }
        let firstAtom = modeLine + 1
        let (positions, fixed) = try r.atoms(species, from: firstAtom, selective: selective, cartesianInput: cartesianInput, factors: factors, cell: cell)
        let numbers = species.numbers
        var s = Structure(numbers: numbers, positions: Tensor(shape: [numbers.count, 3], positions), cell: Tensor(shape: [3, 3], cell),
                          pbc: [true, true, true])
        s.fixed = fixed.contains(true) ? fixed : nil
        return [ParsedFrame(structure: s, atomLines: Array(firstAtom..<firstAtom + numbers.count), cellLine: 2)]
    }

    /// The atoms' species: numbers per atom, the counts and the line they are on.
    struct Species {
        var numbers: [Int]
        var counts: [Int]
        var countsLine: Int
    }

    /// The parts of a POSCAR, read in file order.
    struct Reader {
        let src: SourceText
        var lines: [Substring] { src.lines }

        func line(_ k: Int, _ what: String) throws -> Substring {
            guard k < lines.count else { throw src.error(.truncatedFrame, at: k, expected: what, found: "the end of the file") }
            return lines[k]
        }

        func withoutComment(_ f: [Substring]) -> [Substring] {
            Array(f.prefix { !$0.contains("!") && !$0.hasPrefix("#") })
        }

        /// Scale: the leading numbers among the first three words of line 2, as ASE takes them.
        func scales() throws -> [Double] {
            let scaleLine = try line(1, "the scale factor on line 2")
            var scales: [Double] = []
            for w in scaleLine.fields.prefix(3) {
                guard let v = PyNumber.double(w) else { break }
                scales.append(v)
            }
            guard scales.count == 1 || scales.count == 3 else {
                throw src.error(.badNumber, at: 1, expected: "a scale factor (one number, or three positive numbers)", found: quoted(scaleLine.trimmed))
            }
            guard scales.allSatisfy(\.isFinite) else {
                throw src.error(.nonFinite, at: 1, expected: "a finite scale factor", found: quoted(scaleLine.trimmed))
            }
            guard scales.count == 1 ? scales[0] != 0 : scales.allSatisfy({ $0 > 0 }) else {
                throw src.error(.badValue, at: 1, expected: scales.count == 1 ? "a non-zero scale factor (negative: the cell volume)" : "three positive scale factors",
                                found: quoted(scaleLine.trimmed))
            }
            return scales
        }

        /// The three lattice vectors (lines 3–5), unscaled.
        func lattice() throws -> [Double] {
            var cell: [Double] = []
            for k in 0..<3 {
                let f = try line(2 + k, "lattice vector \(k + 1) on line \(3 + k)").fields
                let v = f.prefix(3).compactMap { PyNumber.double($0) }
                guard v.count == 3 else {
                    throw src.error(.badLattice, at: 2 + k, expected: "3 numbers (lattice vector \(k + 1))", found: quoted(lines[2 + k].trimmed))
                }
                guard v.allSatisfy(\.isFinite) else {
                    throw src.error(.nonFinite, at: 2 + k, expected: "a finite lattice vector", found: quoted(lines[2 + k].trimmed))
                }
                cell += v
            }
            return cell
        }

        /// The species line (VASP 5) or, for VASP 4, the species from the hint or the first line; the counts.
        func species(hint: [String]?) throws -> Species {
            var k = 5
            var names = withoutComment(try line(k, "element symbols or atom counts on line 6").fields)
            guard let first = names.first else {
                throw src.error(.syntax, at: k, expected: "element symbols or atom counts", found: "an empty line")
            }
            let vasp5 = PyNumber.int(first) == nil
            if vasp5 { k += 1 } else { names = [] }
            let counts = try self.counts(on: k)
            if vasp5 {
                guard names.count == counts.count else {
                    throw src.error(.countMismatch, at: k, expected: "one count per element symbol (\(names.count) symbols on line \(k))",
                                    found: "\(counts.count) count(s)")
                }
            } else {
                names = try vasp4Names(counts: counts, countsLine: k, hint: hint)
            }
            var groupNumbers: [Int] = []
            for name in names {
                let label = name.split(separator: "/", maxSplits: 1).first.map { $0.split(separator: "_", maxSplits: 1).first ?? $0 } ?? name
                guard let z = Elements.number(forSymbol: label) else {
                    throw src.error(.unknownElement, at: vasp5 ? k - 1 : k, expected: "a chemical symbol (H to Og)", found: quoted(name))
                }
                groupNumbers.append(z)
            }
            let numbers = zip(groupNumbers, counts).flatMap { Array(repeating: $0, count: $1) }
            guard !numbers.isEmpty else { throw src.error(.countMismatch, at: k, expected: "at least one atom", found: "counts adding up to 0") }
            return Species(numbers: numbers, counts: counts, countsLine: k)
        }

        /// The atom counts on line k; absurd counts fail here, before anything is allocated for them.
        func counts(on k: Int) throws -> [Int] {
            let countWords = withoutComment(try line(k, "atom counts on line \(k + 1)").fields)
            var counts: [Int] = []
            for w in countWords {
                guard let c = PyNumber.int(w), c >= 0 else {
                    throw src.error(.badNumber, at: k, expected: "atom counts (non-negative integers)", found: quoted(w))
                }
                counts.append(c)
            }
            guard !counts.isEmpty else { throw src.error(.syntax, at: k, expected: "atom counts", found: quoted(lines[k].trimmed)) }
            // Each atom needs a line.
            let total = counts.reduce(0) { $0 > lines.count ? $0 : $0 + min($1, lines.count + 1) }
            guard total <= lines.count else {
                throw src.error(.truncatedFrame, at: k, expected: "one line per atom (counts \(counts.map(String.init).joined(separator: " ")))",
                                found: "\(lines.count) lines in the whole file")
            }
            return counts
        }

        /// A VASP 4 file's species: the hint, else the first words of line 1 when they are element symbols.
        func vasp4Names(counts: [Int], countsLine k: Int, hint: [String]?) throws -> [Substring] {
            if let hint {
                guard hint.count == counts.count else {
                    throw src.error(.countMismatch, at: k, expected: "\(counts.count) species names in the species hint, one per count",
                                    found: "\(hint.count): \(hint.joined(separator: " "))")
                }
                return hint.map { $0[...] }
            }
            let words = lines[0].fields
            guard words.count >= counts.count, words.prefix(counts.count).allSatisfy({ Elements.number(forSymbol: $0) != nil }) else {
                throw src.error(.missingSpecies, at: k,
                                expected: "element symbols: a species line above the counts (VASP 5), the symbols as the first words of line 1, or a species hint (relaxft convert --species)",
                                found: "only counts (a VASP 4 file) and first line \(quoted(lines[0].trimmed))")
            }
            return Array(words.prefix(counts.count))
        }

        /// Optional `Selective dynamics`, then `Direct` or `Cartesian`: (selective, Cartesian input, line of the mode).
        func coordinateMode(after countsLine: Int) throws -> (selective: Bool, cartesian: Bool, line: Int) {
            var k = countsLine + 1
            var mode = try line(k, "Direct or Cartesian on line \(k + 1)").trimmed
            let selective = mode.first == "s" || mode.first == "S"
            if selective {
                k += 1
                mode = try line(k, "Direct or Cartesian on line \(k + 1)").trimmed
            }
            switch mode.first {
            case "c", "C", "k", "K": return (selective, true, k)
            case "d", "D": return (selective, false, k)
            default: throw src.error(.syntax, at: k, expected: "Direct or Cartesian\(selective ? "" : " (or Selective dynamics)")", found: quoted(mode))
            }
        }

        /// One line per atom from `firstAtom`: Cartesian positions, and which atoms selective dynamics fixes.
        func atoms(_ species: Species, from firstAtom: Int, selective: Bool, cartesianInput: Bool, factors: [Double],
                   cell: [Double]) throws -> (positions: [Double], fixed: [Bool]) {
            let n = species.numbers.count
            var positions: [Double] = []
            positions.reserveCapacity(3 * n)
            var fixed = [Bool](repeating: false, count: n)
            for a in 0..<n {
                let li = firstAtom + a
                guard li < lines.count else {
                    throw src.error(.truncatedFrame, at: species.countsLine,
                                    expected: "\(n) atom lines (counts \(species.counts.map(String.init).joined(separator: " ")))",
                                    found: "\(a) before the end of the file")
                }
                let f = lines[li].fields
                guard f.count >= (selective ? 6 : 3) else {
                    throw src.error(.wrongColumnCount, at: li, expected: selective ? "3 coordinates and 3 selective-dynamics flags" : "3 coordinates",
                                    found: "\(f.count) columns")
                }
                var x = [Double]()
                for j in 0..<3 {
                    guard let v = PyNumber.double(f[j]) else { throw src.error(.badNumber, at: li, expected: "a coordinate in column \(j + 1)", found: quoted(f[j])) }
                    guard v.isFinite else { throw src.error(.nonFinite, at: li, expected: "a finite coordinate in column \(j + 1)", found: quoted(f[j])) }
                    x.append(v)
                }
                positions += cartesianInput ? (0..<3).map { x[$0] * factors[$0] } : cartesian(fractional: x, cell: cell)
                if selective { fixed[a] = try isFixed(f, line: li) }
            }
            return (positions, fixed)
        }

        /// Selective-dynamics flags of one atom: F F F fixes it, T T T frees it; mixed flags are refused.
        func isFixed(_ f: [Substring], line li: Int) throws -> Bool {
            let logicals: [String: Bool] = ["T": true, "F": false, ".TRUE.": true, ".FALSE.": false]
            let flags = try (3..<6).map { j -> Bool in
                guard let b = logicals[f[j].uppercased()] else {
                    throw src.error(.badValue, at: li, expected: "T or F in column \(j + 1) (selective dynamics)", found: quoted(f[j]))
                }
                return b
            }
            guard flags.allSatisfy({ $0 == flags[0] }) else {
                throw src.error(.unsupported, at: li, expected: "selective-dynamics flags all T or all F (relaxft fixes whole atoms only)",
                                found: quoted(f[3...5].joined(separator: " ")))
            }
            return !flags[0]
        }
    }

    static func write(_ frames: [Structure], path: String, direct: Bool) throws -> String {
        func fail(_ expected: String, _ found: String) -> StructureFileError {
            StructureFileError(path: path, line: nil, kind: .unwritableStructure, expected: expected, found: found)
        }
        guard frames.count == 1, let s = frames.first else {
            throw fail("one structure (a POSCAR file holds one; select a frame with --frames)", "\(frames.count) structures")
        }
        guard s.count > 0 else { throw fail("at least one atom", "none") }
        guard let inverse = s.cell.inverse3x3(), cellIsRegular(s.cell) else {
            throw fail("a cell with three independent lattice vectors (POSCAR files are periodic)", "cell \(s.cell.array)")
        }
        var groups: [(z: Int, count: Int)] = []
        for z in s.numbers {
            if let last = groups.last, last.z == z { groups[groups.count - 1].count += 1 } else { groups.append((z, 1)) }
        }
        let symbols = groups.map { Elements.symbols[$0.z] }
        func row(_ v: ArraySlice<Double>) -> String { v.map { ExtXYZ.leftPadded("\($0)", 22) }.joined(separator: " ") }

        var out = symbols.joined(separator: " ") + "\n1.0\n"
        let cell = s.cell.array
        for k in 0..<3 { out += " " + row(cell[3 * k..<3 * k + 3]) + "\n" }
        out += " " + symbols.map { $0.padding(toLength: max(4, $0.count), withPad: " ", startingAt: 0) }.joined(separator: " ") + "\n"
        out += " " + groups.map { ExtXYZ.leftPadded("\($0.count)", 4) }.joined(separator: " ") + "\n"
        let fixed = s.fixed.flatMap { $0.contains(true) ? $0 : nil }
        if fixed != nil { out += "Selective dynamics\n" }
        out += direct ? "Direct\n" : "Cartesian\n"
        let coordinates = (direct ? Tensor.matmul(s.positions, inverse) : s.positions).array
        for a in 0..<s.count {
            out += " " + row(coordinates[3 * a..<3 * a + 3])
            if let fixed { out += fixed[a] ? "   F   F   F" : "   T   T   T" }
            out += "\n"
        }
        return out
    }
}
