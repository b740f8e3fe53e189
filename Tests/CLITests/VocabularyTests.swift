import Foundation
import Testing

/// A row of docs/options.md: an option as every command that has it must spell and mean it.
struct OptionRow {
    var names: [String]
    /// Accepted spellings, with the commands that accept them (nil: every command that has the option).
    var aliases: [(name: String, commands: [String]?)]
    /// The value placeholder, nil for a flag.
    var value: String?
    /// Every command's help for the option starts with these words.
    var meaning: String
    var defaultValue: String?
    var commands: [String]

    var key: String { names.first { $0.hasPrefix("--") } ?? names[0] }
}

/// docs/options.md, the one table of options: rows `| option | also | value | meaning | default | commands |`.
func optionTable() throws -> [String: OptionRow] {
    let text = try String(contentsOf: repoRoot.appendingPathComponent("docs/options.md"), encoding: .utf8)
    func cells(_ line: Substring) -> [String] {
        line.split(separator: "|", omittingEmptySubsequences: false).dropFirst().dropLast().map { $0.trimmingCharacters(in: .whitespaces) }
    }
    func list(_ cell: String) -> [String] {
        cell == "–" ? [] : cell.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).trimmingCharacters(in: CharacterSet(charactersIn: "`")) }
    }
    // "`--init` (pretrain)": an alias of some commands only.
    func aliases(_ cell: String) -> [(name: String, commands: [String]?)] {
        list(cell).map { item in
            guard let open = item.firstIndex(of: "(") else { return (item, nil) }
            let name = item[..<open].trimmingCharacters(in: .whitespaces).trimmingCharacters(in: CharacterSet(charactersIn: "`"))
            return (name, item[item.index(after: open)...].dropLast().split(separator: " ").map(String.init))
        }
    }
    var rows: [String: OptionRow] = [:]
    for line in text.split(separator: "\n") where line.hasPrefix("| `-") {
        let c = cells(line)
        guard c.count == 6 else { continue }
        let row = OptionRow(names: list(c[0]), aliases: aliases(c[1]), value: c[2] == "–" ? nil : c[2], meaning: c[3],
                            defaultValue: c[4] == "–" ? nil : c[4].trimmingCharacters(in: CharacterSet(charactersIn: "`")), commands: list(c[5]))
        rows[row.key] = row
    }
    return rows
}

/// A command's options as `relaxft CMD --help --json` gives them.
struct CommandOption {
    var names: [String]
    var aliases: [String]
    var value: String?
    var help: String
    var defaultValue: String?
    var defaultReason: String?

    var key: String { names.first { $0.hasPrefix("--") } ?? names[0] }
}

/// The commands `relaxft --help` lists.
func commandNames(_ dir: Scratch) throws -> [String] {
    let help = try dir.run(["--help"]).stdout
    guard let r = help.range(of: "commands:\n") else { return [] }
    return help[r.upperBound...].split(separator: "\n").prefix { $0.hasPrefix("  ") }.compactMap { $0.split(separator: " ").first.map(String.init) }
}

func commandOptions(_ dir: Scratch, _ command: String) throws -> [CommandOption] {
    let run = try dir.run([command, "--help", "--json"])
    let obj = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any], "\(command): \(run.stderr)")
    return (obj["options"] as? [[String: Any]] ?? []).map { o in
        CommandOption(names: o["names"] as? [String] ?? [], aliases: o["aliases"] as? [String] ?? [], value: o["value"] as? String,
                      help: o["help"] as? String ?? "", defaultValue: o["default"] as? String, defaultReason: o["default_reason"] as? String)
    }
}

/// Every command's options against docs/options.md: the same option has the same spellings, the same kind of
/// value, help that starts with the same meaning and the same default (or a stated reason) everywhere.
@Suite("option vocabulary", .serialized)
struct VocabularyTests {
    @Test func everyOptionOfEveryCommandIsInTheTable() throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let table = try optionTable()
        let commands = try commandNames(dir)
        #expect(commands.count >= 11, "\(commands)")
        #expect(table.count >= 80, "docs/options.md rows: \(table.count)")
        var seen: [String: Set<String>] = [:]
        for command in commands {
            for o in try commandOptions(dir, command) {
                seen[o.key, default: []].insert(command)
                guard let row = table[o.key] else {
                    Issue.record("\(command) \(o.key) is not in docs/options.md")
                    continue
                }
                #expect(o.names == row.names, "\(command) \(o.key): spelled \(o.names), the table says \(row.names)")
                let expected = row.aliases.filter { $0.commands?.contains(command) ?? true }.map(\.name)
                #expect(o.aliases == expected, "\(command) \(o.key): aliases \(o.aliases), the table says \(expected)")
                #expect(o.value == row.value, "\(command) \(o.key): value \(o.value ?? "none"), the table says \(row.value ?? "none")")
                #expect(o.help.hasPrefix(row.meaning), "\(command) \(o.key): '\(o.help)' does not start with the table's meaning '\(row.meaning)'")
                #expect(row.commands.contains(command), "\(command) \(o.key): the table lists \(row.commands)")
                if let d = o.defaultValue, d != row.defaultValue {
                    #expect(!(o.defaultReason ?? "").isEmpty, "\(command) \(o.key): default \(d) differs from the table's \(row.defaultValue ?? "none") without a reason")
                }
            }
        }
        for (key, row) in table {
            #expect(Set(row.commands) == seen[key] ?? [], "\(key): the table lists \(row.commands), the commands that have it are \(seen[key]?.sorted() ?? [])")
        }
    }

    /// A spelling names one option only: no command uses another command's option name or alias for something else.
    @Test func noSpellingMeansTwoOptions() throws {
        let dir = try Scratch()
        defer { dir.remove() }
        var owner: [String: String] = [:]
        for command in try commandNames(dir) {
            for o in try commandOptions(dir, command) {
                for n in o.names + o.aliases {
                    if let k = owner[n] { #expect(k == o.key, "\(n) is \(k) in one command and \(o.key) in \(command)") }
                    owner[n] = o.key
                }
            }
        }
        #expect(owner["--model"] == "--potential" && owner["--pretrained"] == "--potential" && owner["--output"] == "--out")
    }

    /// Every command has --json and --quiet; commands that take a potential call it --potential; commands that
    /// write a file take -o/--out.
    @Test func sharedOptionsAreWhereTheyBelong() throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let commands = try commandNames(dir)
        for command in commands {
            let keys = Set(try commandOptions(dir, command).map(\.key))
            #expect(keys.contains("--json") && keys.contains("--quiet"), "\(command) lacks --json or --quiet")
            if ["relax", "md", "finetune", "evaluate", "pretrain", "stable"].contains(command) {
                #expect(keys.contains("--potential"), "\(command) lacks --potential")
            }
            if ["relax", "md", "convert", "finetune", "evaluate", "pretrain", "stable", "report"].contains(command) {
                #expect(keys.contains("--out"), "\(command) lacks -o/--out")
            }
        }
    }

    /// Aliases parse to the option they stand for: the same run with either spelling gives the same result.
    @Test func aliasesAreTheSameOption() throws {
        let dir = try Scratch(copying: ["Fixtures/structures/si_vacancy.extxyz"])
        defer { dir.remove() }
        let spec = "sw:sigma=2.1"
        let a = try dir.run(["relax", "si_vacancy.extxyz", "--potential", spec, "--steps", "5", "--json", "--out", "a.xyz"])
        let b = try dir.run(["relax", "si_vacancy.extxyz", "--model", spec, "--steps", "5", "--json", "--output", "b.xyz"])
        let c = try dir.run(["relax", "si_vacancy.extxyz", "--pretrained", spec, "--steps", "5", "--json", "-o", "c.xyz"])
        #expect(a.status == 1 && b.status == 1 && c.status == 1, "\(a.stderr) \(b.stderr) \(c.stderr)")
        #expect(a.number("energy") != nil && a.number("energy") == b.number("energy") && a.number("energy") == c.number("energy"))
        let written = try ["a.xyz", "b.xyz", "c.xyz"].map { try String(contentsOfFile: dir.path($0), encoding: .utf8) }
        #expect(written[0] == written[1] && written[0] == written[2])
        // md: --frame (old) and --frames select the same starting frame.
        let m1 = try dir.run(["md", "si_vacancy.extxyz", "--potential", "sw", "--steps", "4", "--frame", "-1", "--json"])
        let m2 = try dir.run(["md", "si_vacancy.extxyz", "--potential", "sw", "--steps", "4", "--frames", "-1", "--json"])
        #expect(m1.status == 0 && m1.number("atoms") == m2.number("atoms"), "\(m1.stderr)")
    }
}

/// Models by name: the repository's Fixtures/models and any directory of $RELAXFT_MODEL_PATH are listed and
/// usable wherever a potential is.
@Suite("models by name", .serialized)
struct ModelsByNameTests {
    @Test func bundledAndPathModelsAreListedAndUsable() throws {
        let dir = try Scratch(copying: ["Fixtures/structures/si_vacancy.extxyz"])
        defer { dir.remove() }
        let mine = dir.path("mine")
        try FileManager.default.createDirectory(atPath: mine, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: repoPath("Fixtures/models/si-schnet-pretrained.safetensors"), toPath: mine + "/my-schnet.safetensors")
        let env = ["RELAXFT_MODEL_PATH": mine, "RELAXFT_HOME": dir.path("home")]
        let list = try runTool(relaxftBinary, ["models", "list", "--json"], in: dir.url, environment: env)
        #expect(list.status == 0, "\(list.stderr)")
        let obj = try #require(try JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as? [String: Any])
        let models = try #require(obj["models"] as? [[String: Any]])
        let names = models.compactMap { $0["name"] as? String }
        #expect(names.first == "my-schnet" && names.contains("si-so3krates-pretrained") && names.contains("si-schnet-pretrained"), "\(names)")
        #expect((obj["search_path"] as? [String])?.first == mine)
        // Usable by name, from any directory: the same relaxation as with the file's path.
        let byName = try runTool(relaxftBinary, ["relax", "si_vacancy.extxyz", "--potential", "my-schnet", "--steps", "2", "--json", "-o", "a.xyz"],
                                 in: dir.url, environment: env)
        let byPath = try runTool(relaxftBinary, ["relax", "si_vacancy.extxyz", "--potential", mine + "/my-schnet.safetensors", "--steps", "2", "--json", "-o", "b.xyz"],
                                 in: dir.url, environment: env)
        #expect(byName.status == 1 && byName.number("energy") != nil && byName.number("energy") == byPath.number("energy"), "\(byName.stderr)")
        let bundled = try runTool(relaxftBinary, ["info", "si-so3krates-pretrained", "--quiet"], in: dir.url, environment: env)
        #expect(bundled.status == 0 && bundled.stdout.contains("kind:        so3krates"), "\(bundled.stderr)")
        let missing = try runTool(relaxftBinary, ["relax", "si_vacancy.extxyz", "--potential", "no-such-model"], in: dir.url, environment: env)
        #expect(missing.status == 2 && missing.stderr.contains("model 'no-such-model' is not in \(mine)"), "\(missing.stderr)")
    }
}
