/// An error in a structure file (or in a structure that cannot be written): which file, which line, what was
/// expected there and what was found. `description` is the one-line message the CLI prints.
public struct StructureFileError: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Kind: String, Sendable, CaseIterable {
        case unreadable = "cannot read file"
        case unwritable = "cannot write file"
        case unknownFormat = "unknown format"
        case badHeader = "bad frame header"
        case truncatedFrame = "truncated frame"
        case wrongColumnCount = "wrong column count"
        case unknownElement = "unknown element"
        case badNumber = "not a number"
        case nonFinite = "non-finite number"
        case badValue = "bad value"
        case badLattice = "bad Lattice"
        case badProperties = "bad Properties"
        case badPBC = "bad pbc"
        case singularCell = "singular cell"
        case atomsTooClose = "atoms too close"
        case countMismatch = "mismatched counts"
        case missingSpecies = "missing species"
        case syntax = "syntax error"
        case unsupported = "unsupported"
        case unwritableStructure = "cannot write structure"
    }

    public var path: String
    /// 1-based line number, when the problem sits on one line.
    public var line: Int?
    public var kind: Kind
    public var expected: String
    public var found: String

    public init(path: String, line: Int?, kind: Kind, expected: String, found: String) {
        self.path = path
        self.line = line
        self.kind = kind
        self.expected = expected
        self.found = found
    }

    public var description: String {
        "\(path)\(line.map { ":\($0)" } ?? ""): \(kind.rawValue): expected \(expected), found \(found)".escapingControlCharacters()
    }
}

/// Quotes a piece of input for an error message, shortened so one bad line cannot flood the terminal.
func quoted<S: StringProtocol>(_ s: S, limit: Int = 60) -> String {
    let t = s.count > limit ? String(s.prefix(limit)) + "…" : String(s)
    return "'\(t.escapingControlCharacters())'"
}
