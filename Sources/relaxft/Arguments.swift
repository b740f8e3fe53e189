import Foundation

/// A command-line option: `--name VALUE` (or `--name=VALUE`), or a flag when `value` is nil. `names` are the
/// spellings shown first (`-o, --out`); `aliases` are older or other tools' spellings that parse to the same
/// option (`--pretrained` for `--potential`), shown after the help text.
struct OptionSpec: Sendable {
    let names: [String]
    var aliases: [String] = []
    let value: String?
    var help: String
    var defaultValue: String? = nil
    /// Why this command's default differs from the one the option has elsewhere (docs/options.md).
    var defaultReason: String? = nil
    /// The default is a description (`sw for structures of silicon only`), shown in the help but not filled in.
    var defaultIsDescription = false

    init(_ names: String..., value: String? = nil, default defaultValue: String? = nil, help: String) {
        self.names = names
        self.value = value
        self.help = help
        self.defaultValue = defaultValue
    }

    /// The long name without dashes: the key the option's values are stored under.
    var key: String {
        names.first { $0.hasPrefix("--") }.map { String($0.dropFirst(2)) } ?? String(names[0].dropFirst())
    }

    /// This option with another default (and the reason it differs from the usual one, when it does).
    func withDefault(_ value: String?, reason: String? = nil) -> OptionSpec {
        var o = self
        o.defaultValue = value
        o.defaultReason = reason
        return o
    }

    /// This option with a default that the command works out itself (described, not filled in as a value).
    func describedDefault(_ text: String, reason: String? = nil) -> OptionSpec {
        var o = withDefault(text, reason: reason)
        o.defaultIsDescription = true
        return o
    }

    /// This option with command-specific words after its meaning ("MEANING; DETAIL").
    func detail(_ text: String) -> OptionSpec {
        var o = self
        o.help += "; " + text
        return o
    }

    func alias(_ names: String...) -> OptionSpec {
        var o = self
        o.aliases += names
        return o
    }

    var helpLine: String {
        var d = help
        if let v = defaultValue { d += " (default: \(v)" + (defaultReason.map { "; \($0)" } ?? "") + ")" }
        if !aliases.isEmpty { d += " [also \(aliases.joined(separator: ", "))]" }
        return d
    }

    var json: [String: Any] {
        var o: [String: Any] = ["names": names, "aliases": aliases, "help": help, "takes_value": value != nil]
        if let v = value { o["value"] = v }
        if let d = defaultValue { o["default"] = d }
        if let r = defaultReason { o["default_reason"] = r }
        return o
    }
}

struct CommandSpec: Sendable {
    let name: String
    let summary: String
    let usage: String
    let options: [OptionSpec]
    var details: String = ""

    var help: String {
        // Each usage line wrapped on its own (a second form starts with "relaxft" on a line of its own).
        let forms = usage.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        var s = forms.enumerated().map { k, form in
            wrapped((k == 0 ? "usage: relaxft \(name) " : "       ") + form, width: 112).joined(separator: "\n    ")
        }.joined(separator: "\n") + "\n\n\(summary)\n"
        if !details.isEmpty { s += "\n\(details)\n" }
        if !options.isEmpty {
            s += "\noptions:\n"
            let rows = options.map { o -> (String, String) in
                (o.names.joined(separator: ", ") + (o.value.map { " \($0)" } ?? ""), o.helpLine)
            } + [("-h, --help", "show this help (with --json: the options as JSON)")]
            let w = min(rows.map(\.0.count).max() ?? 0, 34)
            let indent = "\n  " + String(repeating: " ", count: w) + "  "
            for (n, h) in rows {
                let text = wrapped(h, width: max(40, 112 - w - 4)).joined(separator: indent)
                if n.count > w { s += "  \(n)\(indent)\(text)\n" } else { s += "  \(n.padding(toLength: w, withPad: " ", startingAt: 0))  \(text)\n" }
            }
        }
        return s
    }

    /// `relaxft CMD --help --json`: the command's options, for scripts and the vocabulary test.
    var helpJSON: String {
        let obj: [String: Any] = ["command": name, "summary": summary, "options": options.map(\.json)]
        let data = (try? JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys, .prettyPrinted])) ?? Data()
        return String(decoding: data, as: UTF8.self) + "\n"
    }
}

/// Words of `text` in lines of at most `width` characters (a longer word gets a line of its own).
func wrapped(_ text: String, width: Int) -> [String] {
    var lines: [String] = [], line = ""
    for word in text.split(separator: " ") {
        if !line.isEmpty && line.count + 1 + word.count > width {
            lines.append(line)
            line = ""
        }
        line += (line.isEmpty ? "" : " ") + word
    }
    return lines + [line]
}

/// A usage error: printed with a pointer to --help, exit code 2.
struct UsageError: Error, CustomStringConvertible {
    let command: String
    let message: String
    var description: String { "relaxft \(command): \(message) (see 'relaxft \(command) --help')" }
}

struct ParsedArguments {
    let command: String
    var values: [String: [String]] = [:]
    var flags: Set<String> = []
    var positionals: [String] = []
    /// Options given on the command line (not filled in from defaults), by their long name.
    var given: Set<String> = []

    func has(_ name: String) -> Bool { flags.contains(name) || values[name] != nil }

    /// The value of an option given on the command line (nil when only its default applies).
    func givenPositiveInt(_ name: String) throws -> Int? { given.contains(name) ? try positiveInt(name) : nil }

    /// Refuses options that cannot apply when resuming a run: its config.json holds them. `allowed` are
    /// applied to the resumed run explicitly (a new --epochs budget, the output format, threads).
    func refuseOnResume(allowed: Set<String>) throws {
        let refused = given.subtracting(allowed.union(["resume"])).sorted()
        guard refused.isEmpty else {
            throw UsageError(command: command, message: refused.map { "--" + $0 }.joined(separator: ", ")
                             + " cannot be changed when resuming (the run's config.json is used; on --resume only "
                             + allowed.sorted().map { "--" + $0 }.joined(separator: ", ") + " apply)")
        }
    }

    func string(_ name: String) -> String? { values[name]?.last }
    func strings(_ name: String) -> [String] { values[name] ?? [] }

    func double(_ name: String) throws -> Double? {
        guard let s = string(name) else { return nil }
        guard let v = Double(s), v.isFinite else { throw UsageError(command: command, message: "--\(name) expects a number, got '\(s)'") }
        return v
    }

    func int(_ name: String) throws -> Int? {
        guard let s = string(name) else { return nil }
        guard let v = Int(s) else { throw UsageError(command: command, message: "--\(name) expects an integer, got '\(s)'") }
        return v
    }

    func positiveInt(_ name: String) throws -> Int? {
        guard let v = try int(name) else { return nil }
        guard v > 0 else { throw UsageError(command: command, message: "--\(name) must be positive, got \(v)") }
        return v
    }

    func positiveDouble(_ name: String) throws -> Double? {
        guard let v = try double(name) else { return nil }
        guard v > 0 else { throw UsageError(command: command, message: "--\(name) must be positive, got \(v)") }
        return v
    }
}

enum ArgumentParser {
    /// Parses `args` against `spec`. Returns nil when help was requested (and printed).
    static func parse(_ args: [String], _ spec: CommandSpec) throws -> ParsedArguments? {
        var out = ParsedArguments(command: spec.name)
        var byName: [String: OptionSpec] = [:]
        for o in spec.options { for n in o.names + o.aliases { byName[n] = o } }
        var i = 0
        var onlyPositionals = false
        while i < args.count {
            let a = args[i]
            i += 1
            if onlyPositionals || !a.hasPrefix("-") || a == "-" || Double(a) != nil {
                out.positionals.append(a)
                continue
            }
            if a == "--" { onlyPositionals = true; continue }
            if a == "-h" || a == "--help" {
                print(args.contains("--json") ? spec.helpJSON : spec.help, terminator: "")
                return nil
            }
            var name = a, inline: String? = nil
            if let eq = a.firstIndex(of: "="), a.hasPrefix("--") {
                name = String(a[..<eq])
                inline = String(a[a.index(after: eq)...])
            }
            guard let o = byName[name] else {
                throw UsageError(command: spec.name, message: "unknown option '\(name)'")
            }
            let key = o.key
            out.given.insert(key)
            if o.value == nil {
                if inline != nil { throw UsageError(command: spec.name, message: "option '\(name)' takes no value") }
                out.flags.insert(key)
            } else {
                let v: String
                if let inl = inline { v = inl } else {
                    guard i < args.count else { throw UsageError(command: spec.name, message: "option '\(name)' needs a value \(o.value!)") }
                    v = args[i]
                    i += 1
                }
                out.values[key, default: []].append(v)
            }
        }
        for o in spec.options where o.value != nil && !o.defaultIsDescription {
            if let d = o.defaultValue, out.values[o.key] == nil { out.values[o.key] = [d] }
        }
        return out
    }
}

/// Writes to standard error.
func printError(_ s: String) {
    FileHandle.standardError.write((s + "\n").data(using: .utf8)!)
}
