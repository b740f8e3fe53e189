import Tape

/// A structure as read, with the 0-based line of each atom, so checks after reading can name lines.
struct ParsedFrame {
    var structure: Structure
    var atomLines: [Int]
    /// The line that defines the cell (0-based), if any.
    var cellLine: Int?
}

/// Extended XYZ as ASE 3.29's `extxyz` reads and writes it.
///
/// Reading follows ASE's grammar: the comment line is parsed character by character (quotes '…' "…" {…} […],
/// backslash escapes, bare keys meaning True, values typed as integers, then reals, then booleans T/F/True/False,
/// then `_JSON …`, else strings); `Lattice` holds the three lattice vectors, `Properties` the columns
/// (`name:R|I|S|L:width`), `pbc` defaults to T T T with a Lattice and F F F without; `stress` and `virial` are 3×3
/// matrices in column-major order; columns `pos`, `species`, `Z`, `masses` and `move_mask` (ASE's FixAtoms) fill the
/// structure, every other column and key goes to `arrays` and `info`, under ASE's names (`charge` → `charges`).
/// A comment line that is not key=value text becomes bare keys (as in ASE); with cell vectors given as `VEC1…3`
/// pseudo-atoms, it is kept whole as `comment`.
///
/// Stricter than ASE, on purpose: extra columns, unknown logical values, blank lines between frames, partially
/// fixed atoms (`move_mask` with mixed flags) and string columns wider than 1 are errors. `stress` may also have
/// the 6 Voigt values (ASE rejects them).
///
/// Writing matches ASE's layout (`Lattice`, `Properties`, info, `pbc`) with every real written in Swift's shortest
/// round-trip form, so relaxft and ASE read back the same bits (ASE itself writes columns with 8 decimals).
enum ExtXYZ {
    static let matrixKeys: Set<String> = ["Lattice", "virial", "stress"]
    static let infoBools: [String: Bool] = ["T": true, "F": false, "true": true, "false": false, "True": true,
                                            "False": false, "TRUE": true, "FALSE": false]
    static let columnBools: [String: Bool] = ["T": true, "F": false, "True": true, "False": false]
    /// ASE's PROPERTY_NAME_MAP: file name → ASE name.
    static let aseName = ["pos": "positions", "Z": "numbers", "charge": "charges", "species": "symbols"]
    static let fileName = Dictionary(uniqueKeysWithValues: aseName.map { ($1, $0) })
    /// Names the structure itself holds; not allowed as `arrays` keys when writing.
    static let structuralColumns: Set<String> = ["positions", "numbers", "symbols", "masses", "move_mask", "pos", "Z", "species", "charge"]

    // MARK: Comment line

    /// ASE's key_val_str_to_dict splitting: (key, raw value) pairs; nil when an '=' has no key before it.
    static func keyValuePairs(_ line: Substring) -> [(key: String, value: String)]? {
        let closing: [Character: Character] = ["'": "'", "\"": "\"", "{": "}", "[": "]"]
        var pairs: [[String]] = [[""]]  // each: key, then value parts split at '='
        var delimiter: Character? = nil
        var escaped = false
        for ch in line.trimmed {
            if escaped {
                pairs[pairs.count - 1][pairs[pairs.count - 1].count - 1].append(ch)
                escaped = false
            } else if ch == "\\" {
                escaped = true
            } else if let d = delimiter {
                if ch == d { delimiter = nil } else { pairs[pairs.count - 1][pairs[pairs.count - 1].count - 1].append(ch) }
            } else if let d = closing[ch] {
                delimiter = d
            } else if ch.isWhitespace {
                // A new pair starts only after a non-empty key or value (ASE: so `a="" b=1` gives a = "b=1").
                if pairs[pairs.count - 1][pairs[pairs.count - 1].count - 1].isEmpty { continue }
                pairs.append([""])
            } else if ch == "=" {
                if pairs[pairs.count - 1] == [""] { pairs.removeLast() }
                guard !pairs.isEmpty else { return nil }
                pairs[pairs.count - 1].append("")
            } else {
                pairs[pairs.count - 1][pairs[pairs.count - 1].count - 1].append(ch)
            }
        }
        return pairs.map { p in (p[0], p.count == 1 ? "T" : p.dropFirst().joined(separator: "=")) }
    }

    /// ASE's typing of a raw value; nil when a `_JSON ` value is not valid JSON.
    static func typedValue(key: String, raw: String) -> InfoValue? {
        if key.lowercased() == "uid" { return .string(raw) }  // ASE's UNPROCESSED_KEYS
        let parts = raw.split(whereSeparator: { $0 == "," || $0.isWhitespace })
        if parts.isEmpty { return .ints([]) }
        let ints = parts.compactMap { PyNumber.int($0) }
        if ints.count == parts.count { return ints.count == 1 ? .int(ints[0]) : .ints(ints) }
        let reals = parts.compactMap { PyNumber.double($0) }
        if reals.count == parts.count { return reals.count == 1 ? .double(reals[0]) : .doubles(reals) }
        let bools = parts.compactMap { infoBools[String($0)] }
        if bools.count == parts.count { return bools.count == 1 ? .bool(bools[0]) : .bools(bools) }
        if raw.hasPrefix("_JSON ") { return jsonValue(raw) }
        return .string(raw)
    }

    /// `_JSON …` as ASE reads it: scalars and flat arrays of numbers, booleans or strings become values; anything
    /// else (objects, nested arrays) stays the raw string, which writes back unchanged.
    static func jsonValue(_ raw: String) -> InfoValue? {
        guard let j = JSONValue.parse(String(raw.dropFirst(6))) else { return nil }
        switch j {
        case .string(let s): return .string(s)
        case .bool(let b): return .bool(b)
        case .number: return j.intValue.map { .int($0) } ?? j.doubleValue.map { .double($0) }
        case .array(let items):
            if items.isEmpty { return .doubles([]) }
            var bools: [Bool] = [], strings: [String] = [], numbers: [JSONValue] = []
            for item in items {
                switch item {
                case .bool(let b): bools.append(b)
                case .string(let s): strings.append(s)
                case .number: numbers.append(item)
                default: return .string(raw)
                }
            }
            if bools.count == items.count { return .bools(bools) }
            if strings.count == items.count { return .strings(strings) }
            guard numbers.count == items.count else { return .string(raw) }
            let ints = numbers.compactMap(\.intValue)
            return ints.count == items.count ? .ints(ints) : .doubles(numbers.compactMap(\.doubleValue))
        default: return .string(raw)
        }
    }

    // MARK: Reading

    static func read(_ src: SourceText) throws -> [ParsedFrame] {
        let lines = src.lines
        var frames: [ParsedFrame] = []
        var i = 0
        while i < lines.count {
            let header = lines[i].trimmed
            if header.isEmpty {
                // ASE stops silently at the first blank line; only trailing blank lines are accepted here.
                if let k = lines[i...].firstIndex(where: { !$0.isBlank }) {
                    throw src.error(.badHeader, at: k, expected: "the end of the file after a blank line (line \(i + 1))",
                                    found: quoted(lines[k].trimmed))
                }
                break
            }
            guard let n = PyNumber.int(header), n >= 0 else {
                throw src.error(.badHeader, at: i, expected: "the number of atoms of frame \(frames.count + 1)", found: quoted(header))
            }
            guard n <= lines.count - i - 2 else {
                throw src.error(.truncatedFrame, at: i, expected: "a comment line and \(n) atom lines in frame \(frames.count + 1)",
                                found: "\(lines.count - i - 1) lines before the end of the file")
            }
            var end = i + 2 + n
            var vectors = 0
            while end < lines.count, lines[end].trimmed.hasPrefix("VEC") {
                vectors += 1
                guard vectors <= 3 else {
                    throw src.error(.badLattice, at: end, expected: "at most 3 cell vectors VEC1…VEC3", found: quoted(lines[end].trimmed))
                }
                end += 1
            }
            frames.append(try frame(src, header: i, atoms: n, vectors: vectors))
            i = end
        }
        guard !frames.isEmpty else {
            throw src.error(.badHeader, at: nil, expected: "at least one frame (a line with the number of atoms)", found: "an empty file")
        }
        return frames
    }

    struct Column {
        var fileName: String
        var name: String
        var type: Character
        var width: Int
        var offset: Int
    }

    static func columns(_ spec: String, _ src: SourceText, line: Int) throws -> [Column] {
        let fields = spec.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        guard fields.count % 3 == 0, !spec.isEmpty else {
            throw src.error(.badProperties, at: line, expected: "name:type:width triples", found: quoted(spec))
        }
        var out: [Column] = []
        var offset = 0
        for k in stride(from: 0, to: fields.count, by: 3) {
            let (name, type, width) = (fields[k], fields[k + 1], fields[k + 2])
            guard !name.isEmpty, ["R", "I", "S", "L"].contains(type), let w = PyNumber.int(width), w >= 1, w <= 100_000 else {
                throw src.error(.badProperties, at: line, expected: "name:type:width with type R, I, S or L and width from 1 to 100000",
                                found: quoted("\(name):\(type):\(width)"))
            }
            let canonical = aseName[name] ?? name
            guard !out.contains(where: { $0.name == canonical }) else {
                throw src.error(.badProperties, at: line, expected: "each property once", found: "'\(name)' twice")
            }
            out.append(Column(fileName: name, name: canonical, type: Character(type), width: w, offset: offset))
            offset += w
        }
        func require(_ name: String, _ types: String, _ widths: [Int], _ what: String) throws {
            if let c = out.first(where: { $0.name == name }), !types.contains(c.type) || !widths.contains(c.width) {
                throw src.error(.badProperties, at: line, expected: what, found: quoted("\(c.fileName):\(c.type):\(c.width)"))
            }
        }
        try require("positions", "R", [3], "pos:R:3")
        try require("symbols", "S", [1], "species:S:1")
        try require("numbers", "I", [1], "Z:I:1")
        try require("masses", "R", [1], "masses:R:1")
        try require("move_mask", "LI", [1, 3], "move_mask:L:1 or move_mask:L:3")
        guard out.contains(where: { $0.name == "positions" }) else {
            throw src.error(.badProperties, at: line, expected: "a pos:R:3 column", found: quoted(spec))
        }
        guard out.contains(where: { $0.name == "symbols" || $0.name == "numbers" }) else {
            throw src.error(.badProperties, at: line, expected: "a species:S:1 or Z:I:1 column", found: quoted(spec))
        }
        return out
    }

    static func frame(_ src: SourceText, header h: Int, atoms n: Int, vectors: Int) throws -> ParsedFrame {
        let c = h + 1  // comment line
        let comment = try commentLine(src, line: c, plainXYZ: vectors > 0)
        let (cell, pbc) = try cellAndPBC(src, comment: comment, line: c, vectorLines: (0..<vectors).map { h + 2 + n + $0 })
        let cols = try columns(comment.properties, src, line: c)
        let values = try columnValues(src, cols, properties: comment.properties, atomLines: (0..<n).map { h + 2 + $0 })
        func atomLine(_ a: Int) -> Int { h + 2 + a }
        var structure = Structure(numbers: try atomicNumbers(src, cols, values, atomLine: atomLine), positions: .zeros([n, 3]),
                                  cell: Tensor(shape: [3, 3], cell), pbc: pbc)
        structure.info = comment.info
        try assign(values, cols, to: &structure, src, commentLine: c, atomLine: atomLine)
        return ParsedFrame(structure: structure, atomLines: (0..<n).map(atomLine), cellLine: vectors > 0 ? h + 2 + n : c)
    }

    /// The comment line: info key=value pairs, and the Lattice, pbc and Properties values (plain XYZ with VEC
    /// lines keeps the whole line as `comment`).
    struct Comment {
        var info = OrderedDictionary<InfoValue>()
        var lattice: String?
        var pbc: String?
        var properties = "species:S:1:pos:R:3"
    }

    static func commentLine(_ src: SourceText, line c: Int, plainXYZ: Bool) throws -> Comment {
        let text = src.lines[c].trimmed
        var out = Comment()
        if plainXYZ {
            out.info["comment"] = .string(String(text))
            return out
        }
        guard !text.isEmpty else { return out }
        guard let pairs = keyValuePairs(text) else {
            throw src.error(.syntax, at: c, expected: "key=value pairs", found: "'=' without a key in \(quoted(text))")
        }
        for (key, raw) in pairs {
            switch key {
            case "Lattice": out.lattice = raw
            case "pbc": out.pbc = raw
            case "Properties": out.properties = raw
            default:
                guard var v = typedValue(key: key, raw: raw) else {
                    throw src.error(.badValue, at: c, expected: "valid JSON after '_JSON' in '\(key)'", found: quoted(raw))
                }
                if key == "stress" || key == "virial" {
                    v = try matrixValue(key, v, raw, src, line: c)
                }
                out.info[key] = v
            }
        }
        return out
    }

    /// The cell (Lattice, or VEC lines after the atoms) and the periodicity (Lattice or VEC lines make an axis
    /// periodic; pbc overrides).
    static func cellAndPBC(_ src: SourceText, comment: Comment, line c: Int, vectorLines: [Int]) throws -> (cell: [Double], pbc: [Bool]) {
        var cell = [Double](repeating: 0, count: 9)
        var pbc = [false, false, false]
        if let raw = comment.lattice {
            guard let v = typedValue(key: "Lattice", raw: raw)?.doublesValue, v.count == 9 else {
                throw src.error(.badLattice, at: c, expected: "9 numbers (three lattice vectors)", found: quoted(raw))
            }
            guard v.allSatisfy(\.isFinite) else {
                throw src.error(.nonFinite, at: c, expected: "finite lattice vectors", found: quoted(raw))
            }
            cell = v  // Lattice lists a, b, c: the rows of the cell
            pbc = [true, true, true]
        }
        for (k, li) in vectorLines.enumerated() {
            let f = src.lines[li].fields
            let v = f.dropFirst().compactMap { PyNumber.double($0) }
            guard f.first == "VEC\(k + 1)"[...], f.count == 4, v.count == 3, v.allSatisfy(\.isFinite) else {
                throw src.error(.badLattice, at: li, expected: "VEC\(k + 1) followed by 3 finite numbers", found: quoted(src.lines[li].trimmed))
            }
            cell.replaceSubrange(3 * k..<3 * k + 3, with: v)
            pbc[k] = true
        }
        if let raw = comment.pbc {
            switch typedValue(key: "pbc", raw: raw) {
            case .bool(let b)?: pbc = [b, b, b]
            case .bools(let b)? where b.count == 3: pbc = b
            default: throw src.error(.badPBC, at: c, expected: "three logicals such as \"T T F\"", found: quoted(raw))
            }
        }
        return (cell, pbc)
    }

    /// The per-atom columns' values, by column, in atom order.
    struct ColumnValues {
        var reals: [[Double]], ints: [[Int]], bools: [[Bool]], strings: [[String]]
    }

    static func columnValues(_ src: SourceText, _ cols: [Column], properties: String, atomLines: [Int]) throws -> ColumnValues {
        let width = cols.reduce(0) { $0 + $1.width }
        var v = ColumnValues(reals: Array(repeating: [], count: cols.count), ints: Array(repeating: [], count: cols.count),
                             bools: Array(repeating: [], count: cols.count), strings: Array(repeating: [], count: cols.count))
        for li in atomLines {
            let f = src.lines[li].fields
            guard f.count == width else {
                throw src.error(.wrongColumnCount, at: li, expected: "\(width) columns (Properties=\(properties))", found: "\(f.count)")
            }
            for (k, col) in cols.enumerated() {
                for j in col.offset..<col.offset + col.width {
                    let t = f[j]
                    let what = "column \(j + 1) (\(col.fileName))"
                    switch col.type {
                    case "R":
                        guard let x = PyNumber.double(t) else { throw src.error(.badNumber, at: li, expected: "a real number in \(what)", found: quoted(t)) }
                        v.reals[k].append(x)
                    case "I":
                        guard let x = PyNumber.int(t) else { throw src.error(.badNumber, at: li, expected: "an integer in \(what)", found: quoted(t)) }
                        v.ints[k].append(x)
                    case "L":
                        guard let x = columnBools[String(t)] else { throw src.error(.badValue, at: li, expected: "T or F in \(what)", found: quoted(t)) }
                        v.bools[k].append(x)
                    default:
                        v.strings[k].append(String(t))
                    }
                }
            }
        }
        return v
    }

    /// Atomic numbers from the Z:I:1 column, else from the species:S:1 column (`columns` requires one of them).
    static func atomicNumbers(_ src: SourceText, _ cols: [Column], _ v: ColumnValues, atomLine: (Int) -> Int) throws -> [Int] {
        var numbers: [Int] = []
        if let k = cols.firstIndex(where: { $0.name == "numbers" }) {
            for (a, z) in v.ints[k].enumerated() {
                guard z >= 0 && z < Elements.symbols.count else {
                    throw src.error(.unknownElement, at: atomLine(a), expected: "an atomic number from 0 to \(Elements.symbols.count - 1)", found: "\(z)")
                }
                numbers.append(z)
            }
        } else if let k = cols.firstIndex(where: { $0.name == "symbols" }) {
            for (a, s) in v.strings[k].enumerated() {
                guard let z = Elements.number(forSymbol: s) else {
                    throw src.error(.unknownElement, at: atomLine(a), expected: "a chemical symbol (H to Og, or X)", found: quoted(s))
                }
                numbers.append(z)
            }
        }
        return numbers
    }

    /// Positions, masses, move_mask and every other column into `structure`.
    static func assign(_ v: ColumnValues, _ cols: [Column], to structure: inout Structure, _ src: SourceText, commentLine c: Int,
                       atomLine: (Int) -> Int) throws {
        let n = structure.count
        var positions: [Double] = []
        for (k, col) in cols.enumerated() {
            switch col.name {
            case "symbols", "numbers": break
            case "positions":
                positions = v.reals[k]
                if let bad = positions.firstIndex(where: { !$0.isFinite }) {
                    let column = col.offset + bad % 3
                    throw src.error(.nonFinite, at: atomLine(bad / 3), expected: "a finite coordinate in column \(column + 1) (pos)",
                                    found: quoted(src.lines[atomLine(bad / 3)].fields[column]))
                }
            case "masses":
                if let bad = v.reals[k].firstIndex(where: { !($0.isFinite && $0 > 0) }) {
                    throw src.error(.badValue, at: atomLine(bad), expected: "a positive mass in column \(col.offset + 1) (masses)", found: "\(v.reals[k][bad])")
                }
                structure.customMasses = v.reals[k]
            case "move_mask":
                structure.fixed = try fixedAtoms(col.type == "L" ? v.bools[k] : v.ints[k].map { $0 != 0 }, width: col.width, atoms: n, src, atomLine: atomLine)
            default:
                switch col.type {
                case "R": structure.arrays[col.name] = .doubles(Tensor(shape: [n, col.width], v.reals[k]))
                case "I": structure.arrays[col.name] = .ints(v.ints[k], width: col.width)
                case "L": structure.arrays[col.name] = .bools(v.bools[k], width: col.width)
                default:
                    guard col.width == 1 else {
                        throw src.error(.unsupported, at: c, expected: "string columns of width 1", found: quoted("\(col.fileName):S:\(col.width)"))
                    }
                    structure.arrays[col.name] = .strings(v.strings[k])
                }
            }
        }
        structure.positions = Tensor(shape: [n, 3], positions)
    }

    /// move_mask: an atom whose flags are all F is fixed; mixed flags are refused (relaxft fixes whole atoms).
    static func fixedAtoms(_ movable: [Bool], width: Int, atoms n: Int, _ src: SourceText, atomLine: (Int) -> Int) throws -> [Bool]? {
        var fixed = [Bool](repeating: false, count: n)
        for a in 0..<n {
            let flags = movable[a * width..<(a + 1) * width]
            guard flags.allSatisfy({ $0 == flags.first }) else {
                throw src.error(.unsupported, at: atomLine(a), expected: "move_mask flags all T or all F (relaxft fixes whole atoms only)",
                                found: quoted(flags.map { $0 ? "T" : "F" }.joined(separator: " ")))
            }
            fixed[a] = flags.first == false
        }
        return fixed.contains(true) ? fixed : nil
    }

    /// `stress` and `virial`: 9 numbers in column-major order, stored row-major; `stress` may be 6 Voigt values.
    static func matrixValue(_ key: String, _ v: InfoValue, _ raw: String, _ src: SourceText, line: Int) throws -> InfoValue {
        switch v {
        case .doubles(let x) where x.count == 9: return .doubles(transposed3x3(x))
        case .ints(let x) where x.count == 9: return .ints(transposed3x3(x))
        case .doubles(let x) where x.count == 6 && key == "stress": return .doubles(x)
        case .ints(let x) where x.count == 6 && key == "stress": return .ints(x)
        default:
            let what = key == "stress" ? "9 numbers (a 3×3 matrix) or 6 Voigt values" : "9 numbers (a 3×3 matrix)"
            throw src.error(.badValue, at: line, expected: "\(what) for '\(key)'", found: quoted(raw))
        }
    }

    static func transposed3x3<T>(_ x: [T]) -> [T] { (0..<9).map { x[($0 % 3) * 3 + $0 / 3] } }

    // MARK: Writing

    static func write(_ frames: [Structure], path: String) throws -> String {
        var out = ""
        for (k, s) in frames.enumerated() {
            func fail(_ expected: String, _ found: String) -> StructureFileError {
                StructureFileError(path: path, line: nil, kind: .unwritableStructure, expected: expected,
                                   found: frames.count > 1 ? "\(found) (frame \(k + 1))" : found)
            }
            try write(s, to: &out, fail: fail)
        }
        return out
    }

    static func write(_ s: Structure, to out: inout String, fail: (String, String) -> StructureFileError) throws {
        let n = s.count
        var props = "species:S:1:pos:R:3"
        var cols: [(Int) -> String] = []  // after species and pos
        if let fixed = s.fixed, fixed.contains(true) {
            props += ":move_mask:L:1"
            cols.append { fixed[$0] ? "F" : "T" }
        }
        if let m = s.customMasses {
            guard m.count == n else { throw fail("\(n) masses", "\(m.count)") }
            props += ":masses:R:1"
            cols.append { "\(m[$0])" }
        }
        for (name, array) in s.arrays {
            guard !structuralColumns.contains(name) else {
                throw fail("per-atom arrays other than \(structuralColumns.sorted().joined(separator: ", "))", quoted(name))
            }
            guard !name.isEmpty, !name.contains(where: { $0 == ":" || $0.isWhitespace || "\"'{}[]\\=".contains($0) }) else {
                throw fail("per-atom array names without ':', spaces, quotes or brackets", quoted(name))
            }
            let w = array.width
            let file = fileName[name] ?? name
            switch array {
            case .doubles(let t):
                let v = t.array
                props += ":\(file):R:\(w)"
                cols.append { a in (0..<w).map { "\(v[a * w + $0])" }.joined(separator: " ") }
            case .ints(let v, _):
                props += ":\(file):I:\(w)"
                cols.append { a in (0..<w).map { "\(v[a * w + $0])" }.joined(separator: " ") }
            case .bools(let v, _):
                props += ":\(file):L:\(w)"
                cols.append { a in (0..<w).map { v[a * w + $0] ? "T" : "F" }.joined(separator: " ") }
            case .strings(let v):
                if let bad = v.first(where: { $0.isEmpty || $0.contains(where: \.isWhitespace) }) {
                    throw fail("non-empty strings without spaces in array '\(name)'", quoted(bad))
                }
                props += ":\(file):S:1"
                cols.append { v[$0] }
            }
        }

        var comment: [String] = []
        let cell = s.cell.array
        if cell.contains(where: { $0 != 0 }) { comment.append("Lattice=\"\(cell.map { "\($0)" }.joined(separator: " "))\"") }
        comment.append("Properties=\(props)")
        for (key, value) in s.info {
            guard !["Lattice", "Properties", "pbc"].contains(key) else { throw fail("info keys other than Lattice, Properties and pbc", quoted(key)) }
            guard !key.isEmpty, !key.contains(where: \.isNewline) else { throw fail("info keys that are non-empty single-line text", quoted(key)) }
            comment.append("\(quote(key))=\(try infoText(key, value, fail: fail))")
        }
        comment.append("pbc=\"\(s.pbc.map { $0 ? "T" : "F" }.joined(separator: " "))\"")

        out += "\(n)\n"
        out += comment.joined(separator: " ") + "\n"
        let symbols = s.symbols
        s.positions.withUnsafeBufferPointer { p in
            for a in 0..<n {
                out += symbols[a].padding(toLength: max(2, symbols[a].count), withPad: " ", startingAt: 0)
                for k in 0..<3 { out += " " + leftPadded("\(p[3 * a + k])", 22) }
                for c in cols { out += " " + c(a) }
                out += "\n"
            }
        }
    }

    static func leftPadded(_ s: String, _ width: Int) -> String {
        s.count >= width ? s : String(repeating: " ", count: width - s.count) + s
    }

    /// Quotes a key or value when ASE's reader would otherwise split or alter it.
    static func quote(_ s: String) -> String {
        guard s.isEmpty || s.contains(where: { $0.isWhitespace || "\"'{}[]\\=,".contains($0) }) else { return s }
        return "\"" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }

    /// A value written so that both readers type it back as the same InfoValue. Arrays of one element (which
    /// would read back as scalars), string arrays and strings that would read back as numbers or booleans are
    /// written as `_JSON`, which ASE decodes to the same type. Empty real, logical and string arrays all become
    /// `_JSON []`, an empty real array, as in ASE.
    static func infoText(_ key: String, _ value: InfoValue, fail: (String, String) -> StructureFileError) throws -> String {
        func list(_ items: [String], json: Bool) -> String {
            json ? quote("_JSON [" + items.joined(separator: ", ") + "]") : quote(items.joined(separator: " "))
        }
        if key == "stress" || key == "virial" {
            switch value {
            case .doubles(let x) where x.count == 9: return list(transposed3x3(x).map { "\($0)" }, json: false)
            case .ints(let x) where x.count == 9: return list(transposed3x3(x).map { "\($0)" }, json: false)
            case .doubles(let x) where x.count == 6 && key == "stress":
                return list([x[0], x[5], x[4], x[5], x[1], x[3], x[4], x[3], x[2]].map { "\($0)" }, json: false)
            case .ints(let x) where x.count == 6 && key == "stress":
                return list([x[0], x[5], x[4], x[5], x[1], x[3], x[4], x[3], x[2]].map { "\($0)" }, json: false)
            default: throw fail("9 numbers (or 6 for stress) in info '\(key)'", "\(value)")
            }
        }
        switch value {
        case .int(let v): return "\(v)"
        case .double(let v): return "\(v)"
        case .bool(let v): return v ? "T" : "F"
        case .string(let v):
            if typedValue(key: key, raw: v) == .string(v) && !v.contains(where: \.isNewline) { return quote(v) }
            guard key.lowercased() != "uid" else { throw fail("single-line text in info 'uid'", quoted(v)) }
            return quote("_JSON " + JSONValue.encode(v))
        case .ints(let v) where v.isEmpty: return ","  // no numbers between separators: an empty integer array
        case .ints(let v): return list(v.map { "\($0)" }, json: v.count < 2)
        case .doubles(let v): return list(v.map { v.count < 2 ? JSONValue.encode($0) : "\($0)" }, json: v.count < 2)
        case .bools(let v): return v.count < 2 ? list(v.map { $0 ? "true" : "false" }, json: true) : list(v.map { $0 ? "T" : "F" }, json: false)
        case .strings(let v): return list(v.map(JSONValue.encode), json: true)
        }
    }
}
