import FineTune
import Foundation
import Relax

// Options shared by several commands, parsed once into typed values.

/// `--relaxer NAME` with `--relaxer-param name=value,…` (repeatable; later values win) as a typed relaxer.
/// `name` overrides --relaxer (nil: the option, else `fallback`).
func parseRelaxer(_ a: ParsedArguments, command: String, name: String? = nil, fallback: String = "fire") throws -> any Relaxer {
    let relaxerName = name ?? a.string("relaxer") ?? fallback
    let overrides = try relaxerOverrides(a.strings("relaxer-param"), command: command)
    do {
        return try RelaxerFactory.make(relaxerName, overrides: overrides)
    } catch let e as RelaxerError {
        let option = RelaxerFactory.names.contains(relaxerName) ? "--relaxer-param" : "--relaxer"
        throw UsageError(command: command, message: "\(option): \(e.message)")
    }
}

/// `--relaxer-param` values: comma-separated name=value pairs, numbers only (later ones win).
func relaxerOverrides(_ values: [String], command: String) throws -> [String: Double] {
    var overrides: [String: Double] = [:]
    for item in values.flatMap({ $0.split(separator: ",") }) {
        let kv = item.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
        guard kv.count == 2, !kv[0].isEmpty else {
            throw UsageError(command: command, message: "--relaxer-param expects name=value, got '\(item)'")
        }
        guard let v = Double(kv[1]), v.isFinite else {
            throw UsageError(command: command, message: "--relaxer-param \(kv[0]): expects a number, got '\(kv[1])'")
        }
        overrides[kv[0]] = v
    }
    return overrides
}

func parseList(_ s: String?) -> [String] {
    (s ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
}
