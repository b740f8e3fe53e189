import Foundation
import Potentials

/// `pip download` run as a child process, for `relaxft models pull` (here in the command line: libraries start
/// no processes). pip is `$RELAXFT_PIP` (a command line, e.g. `python3 -m pip`) when set, else the first of
/// `pip3`, `pip`, `python3 -m pip` found on PATH.
enum PipDownload {
    static func candidates() -> [[String]] {
        let env = ProcessInfo.processInfo.environment
        if let p = env["RELAXFT_PIP"], !p.isEmpty { return [p.split(separator: " ").map(String.init)] }
        let path = (env["PATH"] ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":").map(String.init)
        func find(_ exe: String) -> String? {
            path.map { $0 + "/" + exe }.first { FileManager.default.isExecutableFile(atPath: $0) }
        }
        var out: [[String]] = []
        if let p = find("pip3") { out.append([p]) }
        if let p = find("pip") { out.append([p]) }
        if let p = find("python3") { out.append([p, "-m", "pip"]) }
        return out
    }

    static func run(requirement: String, into dir: String, log: (String) -> Void) throws {
        let pips = candidates()
        guard let pip = pips.first else {
            throw PipError(message: "pip not found (looked for pip3, pip and python3 on PATH; set RELAXFT_PIP to a pip command)")
        }
        // The platform and Python version are pinned so that every machine fetches the same wheel (the
        // weights are identical in all of them) and pip never falls back to building an sdist.
        let args = ["download", "--no-deps", "--only-binary=:all:", "--platform", "manylinux2014_x86_64", "--python-version", "3.11",
                    "--retries", "2", "--timeout", "20", "--disable-pip-version-check", "--progress-bar", "off", "-d", dir, requirement]
        log("running: \((pip + args).joined(separator: " "))")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: pip[0])
        p.arguments = Array(pip.dropFirst()) + args
        let errPipe = Pipe()
        p.standardError = errPipe
        p.standardOutput = FileHandle.nullDevice
        do { try p.run() } catch {
            throw PipError(message: "cannot run \(pip.joined(separator: " ")): \(error.localizedDescription)")
        }
        let errData = errPipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            let tail = String(decoding: errData, as: UTF8.self).split(separator: "\n").suffix(6).joined(separator: "\n")
            throw PipError(message: """
                pip download \(requirement) failed (exit \(p.terminationStatus)); is PyPI reachable? (pip honours PIP_INDEX_URL and proxy settings)
                \(tail)
                """)
        }
    }
}

/// pip missing or failing (network, index, proxy); `relaxft models pull` reports it with exit code 1.
struct PipError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}
