import Foundation

// Helpers shared by every test target (each target re-exports this module in its Support.swift).

/// The repository, found from this file's location (the tests need no working directory).
public let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// A path inside the repository.
public func repoPath(_ relative: String) -> String { repoRoot.appendingPathComponent(relative).path }

/// A new, empty scratch directory `relaxft-<tag>-<pid>-<random>` in the system's temporary directory.
public func temporaryDirectory(_ tag: String) throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("relaxft-\(tag)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

/// Bitwise equality of two arrays of doubles (NaN-safe, and -0.0 ≠ 0.0).
public func bitwiseEqual(_ a: [Double], _ b: [Double]) -> Bool {
    a.count == b.count && zip(a, b).allSatisfy { $0.bitPattern == $1.bitPattern }
}
