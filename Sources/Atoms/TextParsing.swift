import Foundation

/// The lines of a text file, with its path for error messages. Lines split at \n, \r\n and \r (as Python's
/// universal newlines do); a final newline does not start an extra empty line.
struct SourceText {
    let path: String
    let lines: [Substring]

    init(path: String, text: String) {
        self.path = path
        var out: [Substring] = []
        let u = text.utf8
        var start = u.startIndex
        var i = start
        while i != u.endIndex {
            let b = u[i]
            if b == 10 || b == 13 {
                out.append(text[start..<i])
                var next = u.index(after: i)
                if b == 13, next != u.endIndex, u[next] == 10 { next = u.index(after: next) }
                start = next
                i = next
            } else {
                i = u.index(after: i)
            }
        }
        if start != u.endIndex { out.append(text[start..<u.endIndex]) }
        lines = out
    }

    /// Error at a 0-based line index (reported 1-based).
    func error(_ kind: StructureFileError.Kind, at index: Int?, expected: String, found: String) -> StructureFileError {
        StructureFileError(path: path, line: index.map { $0 + 1 }, kind: kind, expected: expected, found: found)
    }
}

/// Decodes file bytes: UTF-8, else Latin-1 (the encoding CIF 1.1 prescribes; it accepts any byte sequence).
func decodeText(_ data: Data) -> String {
    let text = String(data: data, encoding: .utf8) ?? String(decoding: data.map { UInt16($0) }, as: UTF16.self)
    return text.hasPrefix("\u{FEFF}") ? String(text.dropFirst()) : text  // byte-order mark
}

@inline(__always) func isBlankByte(_ b: UInt8) -> Bool { b == 32 || (b >= 9 && b <= 13) }

extension StringProtocol {
    var isBlank: Bool { utf8.allSatisfy(isBlankByte) }
}

extension Substring {
    /// Whitespace-separated fields (ASCII whitespace, as str.split() sees it in these ASCII formats); scanned as
    /// bytes, several times faster than splitting Characters.
    var fields: [Substring] {
        var out: [Substring] = []
        let u = utf8
        var i = u.startIndex
        while true {
            while i != u.endIndex, isBlankByte(u[i]) { i = u.index(after: i) }
            guard i != u.endIndex else { return out }
            var j = i
            while j != u.endIndex, !isBlankByte(u[j]) { j = u.index(after: j) }
            out.append(self[i..<j])
            i = j
        }
    }

    /// Without leading and trailing ASCII whitespace.
    var trimmed: Substring {
        let u = utf8
        var lo = u.startIndex, hi = u.endIndex
        while lo != hi, isBlankByte(u[lo]) { lo = u.index(after: lo) }
        while hi != lo, isBlankByte(u[u.index(before: hi)]) { hi = u.index(before: hi) }
        return self[lo..<hi]
    }
}

extension String {
    var trimmed: Substring { self[...].trimmed }
}

/// Number syntax as Python's float() and int() accept it (what ASE parses with): optional sign, decimal digits
/// with single underscores between digits, optional fraction and exponent, or inf/infinity/nan in any case.
/// Hexadecimal floats (which Swift's Double(String) would take) are rejected.
enum PyNumber {
    static func double<S: StringProtocol>(_ s: S) -> Double? {
        let b = Array(s.utf8)
        var i = 0
        if i < b.count, b[i] == 43 || b[i] == 45 { i += 1 }  // + -
        let word = String(decoding: b[i...], as: UTF8.self).lowercased()
        if word == "inf" || word == "infinity" || word == "nan" {
            let v = word == "nan" ? Double.nan : Double.infinity
            return b.first == 45 ? -v : v
        }
        var digits = 0
        var hasUnderscore = false
        func scanDigits() -> Int {
            var n = 0
            while i < b.count {
                if b[i] >= 48 && b[i] <= 57 { n += 1; i += 1 }
                else if b[i] == 95, n > 0, i + 1 < b.count, b[i + 1] >= 48 && b[i + 1] <= 57 { hasUnderscore = true; i += 1 }
                else { break }
            }
            return n
        }
        digits += scanDigits()
        if i < b.count, b[i] == 46 { i += 1; digits += scanDigits() }  // .
        guard digits > 0 else { return nil }
        if i < b.count, b[i] == 101 || b[i] == 69 {  // e E
            i += 1
            if i < b.count, b[i] == 43 || b[i] == 45 { i += 1 }
            guard scanDigits() > 0 else { return nil }
        }
        guard i == b.count else { return nil }
        return hasUnderscore ? Double(String(s).replacingOccurrences(of: "_", with: "")) : Double(s)
    }

    /// An integer that fits in Int (Python's int() has no limit; ASE then falls back to float, as callers do).
    static func int<S: StringProtocol>(_ s: S) -> Int? {
        let b = Array(s.utf8)
        var i = 0
        if i < b.count, b[i] == 43 || b[i] == 45 { i += 1 }
        var n = 0
        var hasUnderscore = false
        while i < b.count {
            if b[i] >= 48 && b[i] <= 57 { n += 1; i += 1 }
            else if b[i] == 95, n > 0, i + 1 < b.count, b[i + 1] >= 48 && b[i + 1] <= 57 { hasUnderscore = true; i += 1 }
            else { return nil }
        }
        guard n > 0 else { return nil }
        let t = hasUnderscore ? String(s).replacingOccurrences(of: "_", with: "") : String(s)
        return Int(t.hasPrefix("+") ? String(t.dropFirst()) : t)
    }
}

extension Elements {
    /// Atomic number of a chemical symbol (exact case), including "X" for 0.
    static let numberBySymbol: [String: Int] = Dictionary(uniqueKeysWithValues: symbols.enumerated().map { ($1, $0) })

    /// Atomic number of a symbol written in any case ("SI", "si" → 14), as ASE capitalizes extxyz species.
    static func number<S: StringProtocol>(forSymbol s: S) -> Int? {
        guard let first = s.first else { return nil }
        return numberBySymbol[first.uppercased() + s.dropFirst().lowercased()]
    }
}

/// Fractional to Cartesian, x_j = ((s0·c0j) + s1·c1j) + s2·c2j with fused multiply-adds: the order and rounding
/// of NumPy's BLAS kernels on FMA hardware, so Direct POSCAR coordinates read as ASE reads them, bit for bit.
func cartesian(fractional s: [Double], cell c: [Double]) -> [Double] {
    (0..<3).map { j in (s[0] * c[j]).addingProduct(s[1], c[3 + j]).addingProduct(s[2], c[6 + j]) }
}
