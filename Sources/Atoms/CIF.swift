import Foundation
import Tape

/// CIF reader for crystal structures given as atom sites plus symmetry operations (or in P1).
///
/// Supported: CIF 1.1 syntax (data blocks, `loop_`, quoted values, `;` text fields, `#` comments); the cell from
/// `_cell_length_a/b/c` and `_cell_angle_alpha/beta/gamma`, oriented as ASE's `cellpar_to_cell` (a along x, b in
/// the xy plane); sites from `_atom_site_fract_x/y/z` with `_atom_site_type_symbol` or else `_atom_site_label`
/// (the first capitalized element-like letters, as ASE takes them; D becomes H with mass 2.01355); symmetry
/// operations from `_space_group_symop_operation_xyz`, `_space_group_symop.operation_xyz` or
/// `_symmetry_equiv_pos_as_xyz`, applied to every site, wrapped into [0, 1) and deduplicated at 1e-3 in
/// fractional coordinates (ASE's `symprec`), orbits in site order, as ASE's `crystal()` orders them; numbers with
/// standard uncertainties (`5.431(2)`). Each data block with atom sites gives one structure, periodic along all
/// three vectors.
///
/// Not supported (reading fails with a message saying so): a space group given only by symbol or number without
/// its symmetry operations (relaxft has no space-group tables; P1 is fine), partial occupancy
/// (`_atom_site_occupancy` below 1: disorder, mixed sites), Cartesian sites (`_atom_site_Cartn_*`), save frames and
/// global blocks, CIF 2 lists and tables, and mmCIF (`_atom_site.` names). Ignored: displacement parameters, site
/// multiplicities and Wyckoff letters, `calc` flags, bonds and every other data item. As in ASE, the per-atom
/// array `spacegroup_kinds` holds the index of the site each atom was generated from.
///
/// Positions agree with ASE's to about 1e-15 Å rather than bit for bit: ASE converts the sites to Cartesian
/// coordinates and back before expanding them.
enum CIF {
    struct Token {
        var text: String
        var line: Int
        /// Quoted or a text field: always a value, never a keyword or data name.
        var quoted: Bool
    }

    struct Block {
        var name: String
        var line: Int
        var items: [String: Token] = [:]
        var loops: [[String: [Token]]] = []

        /// A column: the values of a looped data name, or the one value of a single item.
        func column(_ name: String) -> [Token]? {
            if let t = items[name] { return [t] }
            return loops.first { $0[name] != nil }?[name]
        }

        func value(_ names: [String]) -> Token? { names.lazy.compactMap { items[$0] }.first }
    }

    static func tokens(_ src: SourceText) throws -> [Token] {
        var out: [Token] = []
        let lines = src.lines
        var k = 0
        while k < lines.count {
            var rest = lines[k][...]
            if rest.hasPrefix(";") {
                var text = [String(rest.dropFirst())]
                var j = k + 1
                while j < lines.count, !lines[j].hasPrefix(";") { text.append(String(lines[j])); j += 1 }
                guard j < lines.count else {
                    throw src.error(.syntax, at: k, expected: "a line starting with ';' to close the text field", found: "the end of the file")
                }
                out.append(Token(text: String(text.joined(separator: "\n").trimmed), line: k, quoted: true))
                k = j
                rest = lines[j].dropFirst()
            }
            var i = rest.startIndex
            while i < rest.endIndex {
                let c = rest[i]
                if c == " " || c == "\t" { i = rest.index(after: i); continue }
                if c == "#" { break }
                if c == "'" || c == "\"" {
                    // A quote closes only when followed by whitespace or the end of the line (CIF 1.1).
                    var j = rest.index(after: i)
                    while j < rest.endIndex {
                        let next = rest.index(after: j)
                        if rest[j] == c, next == rest.endIndex || rest[next] == " " || rest[next] == "\t" { break }
                        j = next
                    }
                    guard j < rest.endIndex else {
                        throw src.error(.syntax, at: k, expected: "a closing \(c) quote", found: quoted(rest[i...]))
                    }
                    out.append(Token(text: String(rest[rest.index(after: i)..<j]), line: k, quoted: true))
                    i = rest.index(after: j)
                } else {
                    var j = i
                    while j < rest.endIndex, rest[j] != " ", rest[j] != "\t" { j = rest.index(after: j) }
                    out.append(Token(text: String(rest[i..<j]), line: k, quoted: false))
                    i = j
                }
            }
            k += 1
        }
        return out
    }

    static func blocks(_ src: SourceText) throws -> [Block] {
        let toks = try tokens(src)
        var blocks: [Block] = []
        func isKeyword(_ t: Token) -> Bool {
            guard !t.quoted else { return false }
            let l = t.text.lowercased()
            return l.hasPrefix("_") || l.hasPrefix("data_") || l == "loop_" || l.hasPrefix("save_") || l == "global_" || l == "stop_"
        }
        var i = 0
        while i < toks.count {
            let t = toks[i]
            let lower = t.text.lowercased()
            if !t.quoted && lower.hasPrefix("data_") {
                blocks.append(Block(name: String(t.text.dropFirst(5)), line: t.line))
                i += 1
                continue
            }
            if !t.quoted && (lower.hasPrefix("save_") || lower == "global_" || lower == "stop_") {
                throw src.error(.unsupported, at: t.line, expected: "data blocks with items and loops (save frames and global blocks are not supported)", found: quoted(t.text))
            }
            guard !blocks.isEmpty else {
                throw src.error(.syntax, at: t.line, expected: "a data_ block header", found: quoted(t.text))
            }
            if !t.quoted && lower == "loop_" {
                var headers: [Token] = []
                i += 1
                while i < toks.count, !toks[i].quoted, toks[i].text.hasPrefix("_") { headers.append(toks[i]); i += 1 }
                guard !headers.isEmpty else {
                    throw src.error(.syntax, at: t.line, expected: "data names after loop_", found: i < toks.count ? quoted(toks[i].text) : "the end of the file")
                }
                var values: [Token] = []
                while i < toks.count, !isKeyword(toks[i]) { values.append(toks[i]); i += 1 }
                guard values.count % headers.count == 0 else {
                    throw src.error(.countMismatch, at: t.line, expected: "a multiple of \(headers.count) values in the loop (one per data name)",
                                    found: "\(values.count) values")
                }
                var loop: [String: [Token]] = [:]
                for (h, header) in headers.enumerated() {
                    loop[header.text.lowercased()] = stride(from: h, to: values.count, by: headers.count).map { values[$0] }
                }
                blocks[blocks.count - 1].loops.append(loop)
            } else if !t.quoted && lower.hasPrefix("_") {
                guard i + 1 < toks.count, !isKeyword(toks[i + 1]) else {
                    throw src.error(.syntax, at: t.line, expected: "a value for \(t.text)", found: i + 1 < toks.count ? quoted(toks[i + 1].text) : "the end of the file")
                }
                blocks[blocks.count - 1].items[lower] = toks[i + 1]
                i += 2
            } else {
                throw src.error(.syntax, at: t.line, expected: "a data name, loop_ or data_", found: quoted(t.text))
            }
        }
        return blocks
    }

    /// A CIF number, standard uncertainty in parentheses dropped; nil for '?', '.' and text.
    static func number(_ t: Token) -> Double? {
        var s = Substring(t.text)
        if s.hasSuffix(")"), let open = s.lastIndex(of: "("), s[s.index(after: open)..<s.index(before: s.endIndex)].allSatisfy(\.isNumber) {
            s = s[..<open]
        }
        guard s.allSatisfy({ "+-0123456789.eE".contains($0) }) else { return nil }
        return PyNumber.double(s)
    }

    static func read(_ src: SourceText) throws -> [ParsedFrame] {
        let all = try blocks(src)
        var frames: [ParsedFrame] = []
        for block in all {
            if let frame = try structure(block, src) { frames.append(frame) }
        }
        guard !frames.isEmpty else {
            if let b = all.first(where: { b in b.column("_atom_site_cartn_x") != nil || b.loops.contains { $0.keys.contains { $0.hasPrefix("_atom_site.") } } }) {
                throw src.error(.unsupported, at: b.line, expected: "atom sites as _atom_site_fract_x/y/z (Cartesian and mmCIF sites are not supported)",
                                found: "data_\(b.name) without fractional coordinates")
            }
            throw src.error(.unsupported, at: nil, expected: "a data block with atom sites (_atom_site_fract_x/y/z)",
                            found: all.isEmpty ? "no data block" : "\(all.count) data block(s) without atom sites")
        }
        return frames
    }

    static func structure(_ b: Block, _ src: SourceText) throws -> ParsedFrame? {
        guard let fx = b.column("_atom_site_fract_x") else { return nil }
        guard let fy = b.column("_atom_site_fract_y"), let fz = b.column("_atom_site_fract_z") else {
            throw src.error(.unsupported, at: fx.first?.line ?? b.line, expected: "_atom_site_fract_y and _atom_site_fract_z with _atom_site_fract_x", found: "only some of them")
        }
        let cell = try cellVectors(b, src)

        let labelName = b.column("_atom_site_type_symbol") != nil ? "_atom_site_type_symbol" : "_atom_site_label"
        guard let labels = b.column(labelName) else {
            throw src.error(.missingSpecies, at: fx.first?.line ?? b.line, expected: "_atom_site_type_symbol or _atom_site_label", found: "neither")
        }
        let occupancy = b.column("_atom_site_occupancy")
        for (name, column) in [("_atom_site_fract_y", fy), ("_atom_site_fract_z", fz), (labelName, labels)]
            + (occupancy.map { [("_atom_site_occupancy", $0)] } ?? []) where column.count != fx.count {
            throw src.error(.countMismatch, at: column.first?.line ?? b.line, expected: "\(fx.count) values of \(name), one per site", found: "\(column.count)")
        }

        let sites = try siteList(fx: fx, fy: fy, fz: fz, labels: labels, occupancy: occupancy, src)
        let orbits = try expand(sites, labels: labels, operations: try operations(b, src), src)
        var numbers: [Int] = [], positions: [Double] = [], lines: [Int] = [], masses: [Double] = [], kinds: [Int] = []
        let hasDeuterium = sites.contains { $0.deuterium }
        for (s, points) in orbits {
            for p in points {
                numbers.append(sites[s].z)
                kinds.append(s)
                positions += cartesian(fractional: p, cell: cell)
                lines.append(sites[s].line)
                masses.append(sites[s].deuterium ? 2.01355 : Elements.masses[sites[s].z])
            }
        }
        var structure = Structure(numbers: numbers, positions: Tensor(shape: [numbers.count, 3], positions),
                                  cell: Tensor(shape: [3, 3], cell), pbc: [true, true, true])
        if hasDeuterium { structure.customMasses = masses }
        structure.arrays["spacegroup_kinds"] = .ints(kinds, width: 1)  // the site each atom comes from, as ASE names it
        return ParsedFrame(structure: structure, atomLines: lines, cellLine: b.items["_cell_length_a"]?.line)
    }

    /// An asymmetric-unit site: element (deuterium apart), fractional coordinates, line.
    typealias Site = (z: Int, deuterium: Bool, f: [Double], line: Int)

    /// The sites of the atom-site loop, fully occupied ones only.
    static func siteList(fx: [Token], fy: [Token], fz: [Token], labels: [Token], occupancy: [Token]?, _ src: SourceText) throws -> [Site] {
        var sites: [Site] = []
        for s in 0..<fx.count {
            let label = labels[s]
            guard let range = label.text.range(of: "[A-Z][a-z]?", options: .regularExpression) else {
                throw src.error(.unknownElement, at: label.line, expected: "an element symbol in the site's type or label", found: quoted(label.text))
            }
            let symbol = String(label.text[range])
            guard let z = symbol == "D" ? 1 : Elements.numberBySymbol[symbol] else {
                throw src.error(.unknownElement, at: label.line, expected: "a chemical symbol (H to Og)", found: quoted(label.text))
            }
            if let occ = occupancy?[s], occ.text != "?", occ.text != "." {
                guard let o = number(occ), o.isFinite else {
                    throw src.error(.badNumber, at: occ.line, expected: "an occupancy", found: quoted(occ.text))
                }
                guard Swift.abs(o - 1) <= 1e-3 else {
                    throw src.error(.unsupported, at: occ.line, expected: "fully occupied sites (occupancy 1; partial occupancy, i.e. disorder, is not supported)",
                                    found: "occupancy \(occ.text) for site \(quoted(label.text))")
                }
            }
            var f: [Double] = []
            for t in [fx[s], fy[s], fz[s]] {
                guard let v = number(t) else { throw src.error(.badNumber, at: t.line, expected: "a fractional coordinate", found: quoted(t.text)) }
                guard v.isFinite else { throw src.error(.nonFinite, at: t.line, expected: "a finite fractional coordinate", found: quoted(t.text)) }
                f.append(v)
            }
            sites.append((z, symbol == "D", f, fx[s].line))
        }
        return sites
    }

    /// Expansion as ASE's Spacegroup.equivalent_sites: the orbit of each site in operation order, wrapped into
    /// [0, 1); a site equivalent to an earlier one is dropped (ASE keeps the first), unless it holds another element.
    static func expand(_ sites: [Site], labels: [Token], operations ops: [Operation], _ src: SourceText) throws -> [(site: Int, points: [[Double]])] {
        func sameSite(_ p: [Double], _ q: [Double]) -> Bool {
            (0..<3).allSatisfy { k in let d = p[k] - q[k]; return Swift.abs(d - d.rounded(.toNearestOrEven)) < 1e-3 }
        }
        var orbits: [(site: Int, points: [[Double]])] = []
        for (s, site) in sites.enumerated() {
            if let o = orbits.first(where: { $0.points.contains { sameSite($0, site.f) } }) {
                let other = sites[o.site]
                guard other.z == site.z && other.deuterium == site.deuterium else {
                    throw src.error(.unsupported, at: site.line, expected: "distinct sites for distinct elements (mixed occupancy is not supported)",
                                    found: "\(quoted(labels[s].text)) on the site of \(quoted(labels[o.site].text)) (line \(other.line + 1))")
                }
                continue  // a symmetry-equivalent copy of an earlier site: ASE keeps the first
            }
            var points: [[Double]] = []
            for op in ops {
                let p = (0..<3).map { i in pyMod((op.rotation[i][0] * site.f[0] + op.rotation[i][1] * site.f[1] + op.rotation[i][2] * site.f[2]) + pyMod(op.translation[i])) }
                if !points.contains(where: { sameSite($0, p) }) { points.append(p) }
            }
            orbits.append((s, points))
        }
        return orbits
    }

    /// Python's x % 1.0: in [0, 1), with the sign of the divisor (and 1.0 itself when a tiny negative x rounds up).
    static func pyMod(_ x: Double) -> Double {
        let m = fmod(x, 1.0)
        if m == 0 { return 0 }
        return m < 0 ? m + 1.0 : m
    }

    /// ASE's cellpar_to_cell with its default orientation.
    static func cellVectors(_ b: Block, _ src: SourceText) throws -> [Double] {
        var p: [Double] = []
        for name in ["_cell_length_a", "_cell_length_b", "_cell_length_c", "_cell_angle_alpha", "_cell_angle_beta", "_cell_angle_gamma"] {
            guard let t = b.items[name] else {
                throw src.error(.badLattice, at: b.line, expected: "\(name) in data_\(b.name)", found: "none")
            }
            guard let v = number(t), v.isFinite else { throw src.error(.badNumber, at: t.line, expected: "a number for \(name)", found: quoted(t.text)) }
            guard name.contains("length") ? v > 0 : v > 0 && v < 180 else {
                throw src.error(.badLattice, at: t.line, expected: name.contains("length") ? "a positive length" : "an angle between 0 and 180 degrees", found: quoted(t.text))
            }
            p.append(v)
        }
        let (a, bl, c, alpha, beta, gamma) = (p[0], p[1], p[2], p[3], p[4], p[5])
        let eps = 2 * 90.0.ulp
        let cosAlpha = Swift.abs(Swift.abs(alpha) - 90) < eps ? 0 : Foundation.cos(alpha * Double.pi / 180.0)
        let cosBeta = Swift.abs(Swift.abs(beta) - 90) < eps ? 0 : Foundation.cos(beta * Double.pi / 180.0)
        var cosGamma = 0.0, sinGamma = 1.0
        if Swift.abs(gamma - 90) >= eps {
            cosGamma = Foundation.cos(gamma * Double.pi / 180.0)
            sinGamma = Foundation.sin(gamma * Double.pi / 180.0)
        }
        let cy = (cosAlpha - cosBeta * cosGamma) / sinGamma
        let czSquared = 1.0 - cosBeta * cosBeta - cy * cy
        guard czSquared > 0 else {
            throw src.error(.badLattice, at: b.items["_cell_angle_alpha"]?.line ?? b.line, expected: "cell angles that span a volume",
                            found: "alpha \(alpha), beta \(beta), gamma \(gamma)")
        }
        return [a, 0, 0, bl * cosGamma, bl * sinGamma, 0, c * cosBeta, c * cy, c * czSquared.squareRoot()]
    }

    struct Operation {
        var rotation: [[Double]]
        var translation: [Double]
    }

    static func operations(_ b: Block, _ src: SourceText) throws -> [Operation] {
        let names = ["_space_group_symop_operation_xyz", "_space_group_symop.operation_xyz", "_symmetry_equiv_pos_as_xyz"]
        guard let column = names.lazy.compactMap({ b.column($0) }).first, !column.isEmpty else {
            let number = b.value(["_space_group.it_number", "_space_group_it_number", "_symmetry_int_tables_number"])
            let symbol = b.value(["_space_group_name_h-m_alt", "_symmetry_space_group_name_h-m", "_space_group.patterson_name_h-m"])
            let isP1 = (number.map { CIF.number($0) == 1 || $0.text == "?" || $0.text == "." } ?? true)
                && (symbol.map { ["p1", "?", "."].contains($0.text.lowercased().filter { $0 != " " }) } ?? true)
            guard isP1 else {
                let given = [symbol.map { quoted($0.text) }, number.map { "number \($0.text)" }].compactMap { $0 }.joined(separator: ", ")
                throw src.error(.unsupported, at: (symbol ?? number)?.line ?? b.line,
                                expected: "symmetry operations (_space_group_symop_operation_xyz) for a space group other than P1 (relaxft has no space-group tables)",
                                found: "space group \(given) without operations")
            }
            return [Operation(rotation: [[1, 0, 0], [0, 1, 0], [0, 0, 1]], translation: [0, 0, 0])]
        }
        return try column.map { t in
            guard let op = operation(t.text) else {
                throw src.error(.syntax, at: t.line, expected: "a symmetry operation such as '-y+1/2,x,z'", found: quoted(t.text))
            }
            return op
        }
    }

    /// Parses 'x,y,z'-style operations: per component, signed terms x, y, z and numbers or fractions.
    static func operation(_ text: String) -> Operation? {
        let parts = text.lowercased().filter { !$0.isWhitespace }.split(separator: ",", omittingEmptySubsequences: false)
        guard parts.count == 3 else { return nil }
        var op = Operation(rotation: [[0, 0, 0], [0, 0, 0], [0, 0, 0]], translation: [0, 0, 0])
        for (i, part) in parts.enumerated() {
            let c = Array(part)
            var k = 0
            var terms = 0
            while k < c.count {
                var sign = 1.0
                if c[k] == "+" || c[k] == "-" { sign = c[k] == "-" ? -1 : 1; k += 1 }
                guard k < c.count else { return nil }
                if let axis = "xyz".firstIndex(of: c[k]) {
                    op.rotation[i]["xyz".distance(from: "xyz".startIndex, to: axis)] += sign
                    k += 1
                } else {
                    func decimal() -> Double? {
                        let start = k
                        while k < c.count, c[k].isNumber || c[k] == "." { k += 1 }
                        return k > start ? PyNumber.double(String(c[start..<k])) : nil
                    }
                    guard var v = decimal() else { return nil }
                    if k < c.count, c[k] == "/" {
                        k += 1
                        guard let d = decimal(), d != 0 else { return nil }
                        v = sign * v / d  // ASE: (sign · numerator) / denominator
                    } else {
                        v = sign * v
                    }
                    op.translation[i] += v
                }
                terms += 1
            }
            guard terms > 0 else { return nil }
        }
        return op
    }
}
