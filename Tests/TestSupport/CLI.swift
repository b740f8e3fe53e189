import Foundation

// Running the relaxft binary (and scripts) from tests.

/// The relaxft binary, built next to the test executable (.build/<config>/; on macOS the test executable sits
/// inside the .xctest bundle, so parent directories are searched too).
public let relaxftBinary: String = {
    let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
    for _ in 0..<4 {
        let candidate = dir.appendingPathComponent("relaxft").path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        dir = dir.deletingLastPathComponent()
    }
    return "relaxft-not-found-next-to-\(exe)"
}()

public struct CLIRun: Sendable {
    public let status: Int32
    public let stdout: String
    public let stderr: String

    /// The JSON objects of stdout, one per line.
    public var json: [[String: Any]] {
        stdout.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    /// A number of the first JSON line read from its text: Foundation's JSON reader on Linux is not correctly
    /// rounded (off by an ulp at times), Double(String) is, so this checks that no digit was lost.
    public func number(_ key: String) -> Double? {
        guard let line = stdout.split(separator: "\n").first, let r = line.range(of: "\"\(key)\": ") else { return nil }
        return Double(line[r.upperBound...].prefix { $0 != "," && $0 != "}" })
    }
}

/// A scratch directory with copies of fixture files; removed by `remove()`.
public struct Scratch: Sendable {
    public let url: URL

    public init(copying fixtures: [String] = []) throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("relaxft-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        for f in fixtures {
            let source = repoRoot.appendingPathComponent(f)
            try FileManager.default.copyItem(at: source, to: url.appendingPathComponent(source.lastPathComponent))
        }
    }

    public func path(_ name: String) -> String { url.appendingPathComponent(name).path }
    public func files() -> [String] { ((try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []).sorted() }
    public func remove() { try? FileManager.default.removeItem(at: url) }

    /// Runs `relaxft args…` in this directory (output through files: a pipe could fill up and block).
    public func run(_ args: [String]) throws -> CLIRun {
        try runTool(relaxftBinary, args, in: url)
    }
}

/// Runs an executable (relaxft, or python3 scripts) in `dir` with a given PATH; output goes through files, since a
/// pipe could fill up and block.
/// With `timeout`, a run still going after that many seconds is killed and "[killed after N s]" ends its stderr.
public func runTool(_ executable: String, _ args: [String], in dir: URL, path: String = "/usr/bin:/bin", environment: [String: String] = [:],
                    timeout: Double? = nil) throws -> CLIRun {
    let outputs = FileManager.default.temporaryDirectory.appendingPathComponent("relaxft-tool-out-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: outputs, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: outputs) }
    let (o, e) = (outputs.appendingPathComponent("stdout"), outputs.appendingPathComponent("stderr"))
    _ = FileManager.default.createFile(atPath: o.path, contents: nil)
    _ = FileManager.default.createFile(atPath: e.path, contents: nil)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = args
    process.currentDirectoryURL = dir
    process.environment = ["OPENBLAS_NUM_THREADS": "1", "PATH": path].merging(environment) { $1 }
    process.standardOutput = try FileHandle(forWritingTo: o)
    process.standardError = try FileHandle(forWritingTo: e)
    try process.run()
    var killed = ""
    if let timeout {
        let done = DispatchSemaphore(value: 0)
        DispatchQueue.global().async { process.waitUntilExit(); done.signal() }
        if done.wait(timeout: .now() + timeout) == .timedOut {
            killed = "\n[killed after \(timeout) s]"
            process.terminate()
            if done.wait(timeout: .now() + 10) == .timedOut { kill(process.processIdentifier, SIGKILL); done.wait() }
        }
    }
    process.waitUntilExit()
    return CLIRun(status: process.terminationStatus, stdout: try String(contentsOf: o, encoding: .utf8),
                  stderr: try String(contentsOf: e, encoding: .utf8) + killed)
}

public func readCSV(_ path: String) throws -> (header: [String], rows: [[String: String]]) {
    let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").filter { !$0.hasPrefix("#") }
    // No quoted commas in the columns these tests read; fields with commas are quoted and sit elsewhere.
    let header = lines[0].split(separator: ",", omittingEmptySubsequences: false).map(String.init)
    let rows = lines.dropFirst().map { line -> [String: String] in
        var fields: [String] = [], cur = "", quoted = false
        for ch in line {
            if ch == "\"" { quoted.toggle() } else if ch == "," && !quoted { fields.append(cur); cur = "" } else { cur.append(ch) }
        }
        fields.append(cur)
        return Dictionary(zip(header, fields), uniquingKeysWith: { a, _ in a })
    }
    return (header, rows)
}
