import Foundation
#if canImport(Glibc)
import Glibc
#endif

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
    /// Ended by a signal (`status` is the signal number), or killed at the time limit.
    public var signaled = false
    public var timedOut = false

    public init(status: Int32, stdout: String, stderr: String, signaled: Bool = false, timedOut: Bool = false) {
        self.status = status
        self.stdout = stdout
        self.stderr = stderr
        self.signaled = signaled
        self.timedOut = timedOut
    }

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
/// pipe could fill up and block. With a `timeout` (seconds) the process is ended when it runs longer
/// (`CLIRun.timedOut`, and "[killed after N s]" ends its stderr): `timeoutSignal` (SIGTERM, so that a launcher
/// such as mpirun can end its tasks), SIGKILL 10 s later. The child is spawned and reaped here (posix_spawn, waitpid),
/// not by Foundation's Process, whose reaping can starve when many tests wait at once.
public func runTool(_ executable: String, _ args: [String], in dir: URL, path: String = "/usr/bin:/bin", environment: [String: String] = [:],
             timeout: Double? = nil, timeoutSignal: Int32 = SIGTERM) throws -> CLIRun {
    let outputs = FileManager.default.temporaryDirectory.appendingPathComponent("relaxft-tool-out-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: outputs, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: outputs) }
    let (o, e) = (outputs.appendingPathComponent("stdout"), outputs.appendingPathComponent("stderr"))
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, o.path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    posix_spawn_file_actions_addopen(&actions, 2, e.path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    // The shell changes directory, then exec keeps the pid: a signal ending the tool ends this child.
    let argv = ["/bin/sh", "-c", "cd \"$0\" && exec \"$@\"", dir.path, executable] + args
    let env = ["OPENBLAS_NUM_THREADS": "1", "PATH": path].merging(environment) { $1 }.map { "\($0.key)=\($0.value)" }
    let cArgs = argv.map { strdup($0) } + [nil], cEnv = env.map { strdup($0) } + [nil]
    defer { (cArgs + cEnv).forEach { free($0) } }
    var pid = pid_t()
    let spawned = posix_spawn(&pid, "/bin/sh", &actions, nil, cArgs, cEnv)
    guard spawned == 0 else { throw CocoaError(.executableLoad, userInfo: [NSLocalizedDescriptionKey: "posix_spawn failed: \(spawned)"]) }
    var status: Int32 = 0
    var timedOut = false
    let deadline = timeout.map { Date().addingTimeInterval($0) }
    while true {
        let r = waitpid(pid, &status, deadline == nil ? 0 : WNOHANG)
        if r == pid { break }
        if r < 0 && errno != EINTR { break }
        if let d = deadline, Date() > d {
            if !timedOut {
                timedOut = true
                kill(pid, timeoutSignal)
            } else if Date() > d.addingTimeInterval(10) {
                kill(pid, SIGKILL)
            }
        }
        if deadline != nil { usleep(2000) }
    }
    // Linux wait status: the low 7 bits are the signal (0: exited), the next byte the exit code.
    let signal = status & 0x7F, exited = signal == 0
    // Invalid UTF-8 (a crash dump, echoed binary input) is shown with replacement characters rather than lost.
    func text(_ url: URL) -> String { String(decoding: (try? Data(contentsOf: url)) ?? Data(), as: UTF8.self) }
    let killed = timedOut ? "\n[killed after \(timeout ?? 0) s]" : ""
    return CLIRun(status: exited ? (status >> 8) & 0xFF : signal, stdout: text(o), stderr: text(e) + killed, signaled: !exited && !timedOut, timedOut: timedOut)
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
