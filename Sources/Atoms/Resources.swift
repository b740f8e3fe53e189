import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A request that cannot be met: more memory than the machine has, or a size that is not representable.
/// The message says what was asked, how much it would take and why.
public struct ResourceError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}

/// The memory a run may plan for: the machine's physical memory, or less when the address space is limited
/// (`ulimit -v`), or `RELAXFT_MEMORY_LIMIT` (bytes, or with a K, M, G or T suffix). Large allocations are
/// estimated first and refused above it, so that an absurd request ends in a message instead of an abort or
/// the machine's out-of-memory killer.
public enum MemoryBudget {
    /// The limit in bytes and where it comes from.
    public static var limit: (bytes: Double, source: String) {
        if let text = ProcessInfo.processInfo.environment["RELAXFT_MEMORY_LIMIT"], let b = parseSize(text) {
            return (b, "RELAXFT_MEMORY_LIMIT")
        }
        var best = (bytes: physicalMemory, source: "this machine's memory")
        var r = rlimit()
        if getrlimit(Int32(RLIMIT_AS.rawValue), &r) == 0, r.rlim_cur != rlim_t.max, Double(r.rlim_cur) < best.bytes {
            best = (Double(r.rlim_cur), "the address-space limit (ulimit -v)")
        }
        return best
    }

    static var physicalMemory: Double {
        let pages = sysconf(Int32(_SC_PHYS_PAGES)), size = sysconf(Int32(_SC_PAGESIZE))
        return pages > 0 && size > 0 ? Double(pages) * Double(size) : 8e9
    }

    /// "12G", "512M", "1e9": bytes (nil when not a positive size).
    static func parseSize(_ text: String) -> Double? {
        let t = text.trimmingCharacters(in: .whitespaces).uppercased()
        let units: [Character: Double] = ["K": 1024, "M": 1024 * 1024, "G": 1024 * 1024 * 1024, "T": 1024 * 1024 * 1024 * 1024]
        var body = Substring(t), factor = 1.0
        if let last = body.last, let f = units[last] { factor = f; body = body.dropLast() }
        if body.hasSuffix("I") || body.hasSuffix("B") { return nil }
        guard let v = Double(body), v.isFinite, v > 0 else { return nil }
        return v * factor
    }

    /// Throws when `bytes` (an estimate; may be infinite or NaN for unrepresentable requests) exceeds the limit.
    /// `what` names the request and its cause, e.g. "the neighbour list of si.xyz (cutoff 1e6 Å, about 3e17 pairs)".
    public static func require(_ bytes: Double, for what: String) throws {
        let (limit, source) = self.limit
        guard bytes.isFinite, bytes <= limit else {
            throw ResourceError(message: "\(what) would need \(bytes.isFinite ? "about " + format(bytes) : "more memory than can be addressed"), "
                                + "more than the \(format(limit)) of \(source)")
        }
    }

    /// A byte count for people: 1.5 GB, 320 MB, 12 kB (decimal units).
    public static func format(_ bytes: Double) -> String {
        guard bytes.isFinite else { return "∞" }
        let units = [(1e15, "PB"), (1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")]
        for (f, u) in units where bytes >= f { return String(format: "%.3g %@", bytes / f, u) }
        return String(format: "%.0f bytes", bytes)
    }
}

/// Sizes and counts multiplied without trapping: nil when the product does not fit an Int.
public func checkedProduct<S: Sequence>(_ factors: S) -> Int? where S.Element == Int {
    var p = 1
    for f in factors {
        guard f >= 0 else { return nil }
        let (r, overflow) = p.multipliedReportingOverflow(by: f)
        if overflow { return nil }
        p = r
    }
    return p
}

extension String {
    /// The text with control characters (terminal escape sequences, carriage returns, NUL, DEL, C1 controls)
    /// shown as escapes (\u{1B}, \r, …), so that a message quoting an input cannot act on the terminal.
    /// Tabs and newlines are kept only when `keepNewlines` (multi-line messages of our own).
    public func escapingControlCharacters(keepNewlines: Bool = false) -> String {
        guard unicodeScalars.contains(where: { Self.isControl($0, keepNewlines: keepNewlines) }) else { return self }
        var out = ""
        for u in unicodeScalars {
            if Self.isControl(u, keepNewlines: keepNewlines) {
                switch u {
                case "\r": out += "\\r"
                case "\t": out += "\\t"
                case "\n": out += "\\n"
                default: out += "\\u{\(String(u.value, radix: 16, uppercase: true))}"
                }
            } else {
                out.unicodeScalars.append(u)
            }
        }
        return out
    }

    static func isControl(_ u: Unicode.Scalar, keepNewlines: Bool) -> Bool {
        if keepNewlines && (u == "\n" || u == "\t") { return false }
        // C0, DEL, C1, and the bidirectional overrides that can disguise text in a terminal.
        return u.value < 0x20 || (0x7F...0x9F).contains(u.value) || (0x202A...0x202E).contains(u.value)
            || (0x2066...0x2069).contains(u.value)
    }
}
