import Atoms
import Foundation
import Tape

// TEMPORARY: a minimal extended-XYZ reader for pretraining, until the Atoms module's `StructureIO.read`
// (branch atoms-io) is merged into main; then this file is deleted and its callers use StructureIO.
// It reads what `../shared/data/si-dft` and ASE's writer produce: `Lattice`, `pbc`, `Properties` with
// species:S:1 and pos:R:3 (any other columns: forces:R:3 is kept, the rest skipped by width), and
// key=value info (numbers, quoted strings; `stress` as 9 or 6 numbers).

public struct ExtXYZError: Error, CustomStringConvertible {
    public let path: String
    public let line: Int
    public let message: String
    public var description: String { "\(path):\(line): \(message)" }
}

enum ExtXYZ {
    static func read(_ path: String) throws -> [Structure] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ExtXYZError(path: path, line: 0, message: "cannot read file")
        }
        guard let text = String(data: data, encoding: .utf8) else { throw ExtXYZError(path: path, line: 0, message: "not UTF-8 text") }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        var frames: [Structure] = []
        var i = 0
        while i < lines.count {
            let countLine = lines[i].trimmingCharacters(in: .whitespaces)
            if countLine.isEmpty { i += 1; continue }
            guard let n = Int(countLine), n >= 0 else {
                throw ExtXYZError(path: path, line: i + 1, message: "expected the atom count of a frame, found '\(countLine.prefix(40))'")
            }
            guard i + 1 + n < lines.count else {
                throw ExtXYZError(path: path, line: lines.count, message: "file ends inside a frame of \(n) atoms (started at line \(i + 1))")
            }
            frames.append(try frame(lines, at: i, count: n, path: path))
            i += 2 + n
        }
        return frames
    }

    /// key=value pairs of a comment line; values may be double-quoted.
    static func keyValues(_ s: Substring, path: String, line: Int) throws -> [(String, String)] {
        var out: [(String, String)] = []
        let c = Array(s)
        var k = 0
        while k < c.count {
            while k < c.count && c[k] == " " { k += 1 }
            if k >= c.count { break }
            var key = ""
            while k < c.count && c[k] != "=" && c[k] != " " { key.append(c[k]); k += 1 }
            guard k < c.count && c[k] == "=" else { out.append((key, "T")); continue }
            k += 1
            var value = ""
            if k < c.count && c[k] == "\"" {
                k += 1
                while k < c.count && c[k] != "\"" { value.append(c[k]); k += 1 }
                guard k < c.count else { throw ExtXYZError(path: path, line: line, message: "unterminated quote in value of '\(key)'") }
                k += 1
            } else {
                while k < c.count && c[k] != " " { value.append(c[k]); k += 1 }
            }
            out.append((key, value))
        }
        return out
    }

    static func numbers(_ s: String, _ key: String, path: String, line: Int) throws -> [Double] {
        try s.split(separator: " ").map {
            guard let v = Double($0) else { throw ExtXYZError(path: path, line: line, message: "'\(key)': expected numbers, found '\($0)'") }
            return v
        }
    }

    static func frame(_ lines: [Substring], at start: Int, count n: Int, path: String) throws -> Structure {
        let headerLine = start + 2
        var cell = Tensor.zeros([3, 3])
        var pbc = [false, false, false]
        var properties = "species:S:1:pos:R:3"
        var info: [(String, InfoValue)] = []
        for (key, value) in try keyValues(lines[start + 1], path: path, line: headerLine) {
            switch key {
            case "Lattice":
                let v = try numbers(value, key, path: path, line: headerLine)
                guard v.count == 9 else { throw ExtXYZError(path: path, line: headerLine, message: "Lattice needs 9 numbers, found \(v.count)") }
                cell = Tensor(shape: [3, 3], v)
                pbc = [true, true, true]
            case "pbc":
                let t = value.split(separator: " ").map { ["T", "True", "true", "1"].contains(String($0)) }
                guard t.count == 3 else { throw ExtXYZError(path: path, line: headerLine, message: "pbc needs 3 flags, found '\(value)'") }
                pbc = t
            case "Properties":
                properties = value
            default:
                let parts = value.split(separator: " ")
                if parts.count > 1, let v = try? numbers(value, key, path: path, line: headerLine) {
                    info.append((key, .doubles(v)))
                } else if let x = Int(value) {
                    info.append((key, .int(x)))
                } else if let x = Double(value) {
                    info.append((key, .double(x)))
                } else {
                    info.append((key, .string(value)))
                }
            }
        }
        // Properties: name:type:width triples.
        let spec = properties.split(separator: ":").map(String.init)
        guard spec.count % 3 == 0 else { throw ExtXYZError(path: path, line: headerLine, message: "Properties '\(properties)' is not name:type:width triples") }
        var columns: [(name: String, type: String, width: Int, offset: Int)] = []
        var width = 0
        for k in stride(from: 0, to: spec.count, by: 3) {
            guard let w = Int(spec[k + 2]), w > 0 else { throw ExtXYZError(path: path, line: headerLine, message: "Properties: bad width '\(spec[k + 2])' of '\(spec[k])'") }
            columns.append((spec[k], spec[k + 1], w, width))
            width += w
        }
        guard let sp = columns.first(where: { $0.name == "species" }), let pos = columns.first(where: { $0.name == "pos" }), pos.width == 3 else {
            throw ExtXYZError(path: path, line: headerLine, message: "Properties must contain species:S:1 and pos:R:3, found '\(properties)'")
        }
        let forcesCol = columns.first { $0.name == "forces" && $0.width == 3 }
        var nums = [Int](repeating: 0, count: n)
        var x = [Double](repeating: 0, count: 3 * n)
        var f = [Double](repeating: 0, count: forcesCol == nil ? 0 : 3 * n)
        for a in 0..<n {
            let ln = start + 3 + a
            let fields = lines[ln - 1].split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count == width else {
                throw ExtXYZError(path: path, line: ln, message: "expected \(width) columns (\(properties)), found \(fields.count)")
            }
            let sym = String(fields[sp.offset])
            guard let z = Elements.symbols.firstIndex(of: sym), z > 0 else { throw ExtXYZError(path: path, line: ln, message: "unknown element '\(sym)'") }
            nums[a] = z
            for k in 0..<3 {
                guard let v = Double(fields[pos.offset + k]) else { throw ExtXYZError(path: path, line: ln, message: "position: expected a number, found '\(fields[pos.offset + k])'") }
                x[3 * a + k] = v
                if let fc = forcesCol {
                    guard let v = Double(fields[fc.offset + k]) else { throw ExtXYZError(path: path, line: ln, message: "forces: expected a number, found '\(fields[fc.offset + k])'") }
                    f[3 * a + k] = v
                }
            }
        }
        var s = Structure(numbers: nums, positions: Tensor(shape: [n, 3], x), cell: cell, pbc: pbc)
        for (k, v) in info { s.info[k] = v }
        if forcesCol != nil { s.forces = Tensor(shape: [n, 3], f) }
        if let st = s.info["stress"]?.doublesValue, st.count != 9 && st.count != 6 {
            throw ExtXYZError(path: path, line: headerLine, message: "stress needs 9 or 6 numbers, found \(st.count)")
        }
        return s
    }
}
