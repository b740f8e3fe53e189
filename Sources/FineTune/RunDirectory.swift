import Atoms
import Foundation
import Potentials
import Tape

/// The stored options of a training run (config.json); `epochs` is the budget a resumed run may change.
public protocol RunConfiguration: Codable {
    var epochs: Int { get set }
}

public struct RunDirectoryError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// The directory of one training run, shared by `finetune`, `pretrain` and `stable`:
///
/// - `config.json`: the run's options, written once when the run is created; a resumed run reads them back
///   (options given again on resume are applied explicitly by the trainer, or refused);
/// - the resumable state (`state.json`, or `checkpoint.safetensors` with the state in its metadata), written
///   atomically once before the first expensive step and after every completed epoch;
/// - `metrics.csv`, one row per completed epoch (rows past the state's epoch are dropped on resume);
/// - `best.safetensors`, `last.safetensors` (model files with provenance), `summary.json` at the end;
/// - `cost.json`: wall and CPU seconds and peak memory summed over every process that worked on the run.
///
/// Every file is written to a temporary file and renamed into place, so a run killed at any moment leaves
/// each file either complete or absent.
public struct RunDirectory: Sendable {
    public let path: String

    public init(_ path: String) { self.path = path }

    public func file(_ name: String) -> String { path + "/" + name }
    public var configPath: String { file("config.json") }
    public var metricsPath: String { file("metrics.csv") }
    public var summaryPath: String { file("summary.json") }
    public var bestModelPath: String { file("best.safetensors") }
    public var lastModelPath: String { file("last.safetensors") }
    public var checkpointPath: String { file("checkpoint.safetensors") }
    public var costPath: String { file("cost.json") }

    public func exists(_ name: String) -> Bool { FileManager.default.fileExists(atPath: file(name)) }

    /// A run's command line as model files record it: the run directory by its name only, whichever spelling
    /// of the output option gave it (where it lived is machine-specific).
    public func recordedCommand(_ command: String) -> String {
        let name = URL(fileURLWithPath: path).lastPathComponent
        var out = command
        for option in ["--out", "-o", "--output"] {
            out = out.replacingOccurrences(of: option + " " + path, with: option + " " + name)
                .replacingOccurrences(of: option + "=" + path, with: option + "=" + name)
        }
        return out
    }

    /// A new run: refuses a directory that holds a run or anything else, creates it, writes config.json.
    public static func create(_ path: String, config: some Encodable) throws -> RunDirectory {
        let fm = FileManager.default
        let dir = RunDirectory(path)
        if fm.fileExists(atPath: path) {
            if dir.exists("config.json") {
                throw RunDirectoryError(message: "\(path) already holds a run (use --resume \(path), or another --out)")
            }
            if let items = try? fm.contentsOfDirectory(atPath: path), !items.isEmpty {
                throw RunDirectoryError(message: "run directory '\(path)' exists and is not empty (use a new --out, or --resume \(path))")
            }
        }
        try fm.createDirectory(atPath: path, withIntermediateDirectories: true)
        try dir.writeJSON(config, to: "config.json", pretty: true)
        return dir
    }

    /// An existing run (its config.json must be there).
    public static func open(_ path: String) throws -> RunDirectory {
        let dir = RunDirectory(path)
        guard dir.exists("config.json") else { throw RunDirectoryError(message: "\(path): no config.json (not a run directory)") }
        return dir
    }

    /// An interrupted run's directory and stored configuration; `epochs`, when given, is the new epoch budget
    /// (applied to the configuration and stored in config.json).
    /// Only the rank that writes files (`write`) stores the new budget; every rank applies it.
    public static func resume<C: RunConfiguration>(_ path: String, as type: C.Type, epochs: Int? = nil, write: Bool = true) throws -> (run: RunDirectory, config: C) {
        let run = try open(path)
        var config = try run.readConfig(C.self)
        if let e = epochs, e != config.epochs {
            config.epochs = e
            if write { try run.writeJSON(config, to: "config.json", pretty: true) }
        }
        return (run, config)
    }

    public func readConfig<C: Decodable>(_ type: C.Type) throws -> C {
        guard let c = try readJSON(type, from: "config.json") else { throw RunDirectoryError(message: "\(path): no config.json") }
        return c
    }

    // MARK: JSON files

    static func encoder(pretty: Bool) -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys] : [.sortedKeys]
        e.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return e
    }

    static func decoder(userInfo: [CodingUserInfoKey: Any] = [:]) -> JSONDecoder {
        let d = JSONDecoder()
        d.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        d.userInfo = userInfo
        return d
    }

    public func writeJSON(_ value: some Encodable, to name: String, pretty: Bool = false) throws {
        try AtomicFile.write(try Self.encoder(pretty: pretty).encode(value), to: file(name))
    }

    /// The decoded file, or nil when it does not exist; an unreadable file is an error naming it. `userInfo`
    /// reaches the type's decoder.
    public func readJSON<T: Decodable>(_ type: T.Type, from name: String, userInfo: [CodingUserInfoKey: Any] = [:]) throws -> T? {
        guard let data = FileManager.default.contents(atPath: file(name)) else { return nil }
        do { return try Self.decoder(userInfo: userInfo).decode(type, from: data) } catch {
            throw RunDirectoryError(message: "\(file(name)): unreadable (\(error))")
        }
    }

    // MARK: Checkpoints (weights and state in one file)

    /// checkpoint.safetensors: the model's tensors, and `state` as JSON under the metadata key `key`.
    public func writeCheckpoint(_ parameters: OrderedDictionary<Tensor>, state: some Encodable, key: String) throws {
        let js = String(decoding: try Self.encoder(pretty: false).encode(state), as: UTF8.self)
        try SafeTensors.write(parameters.map { ($0.key, $0.value) }, metadata: [key: js], to: checkpointPath)
    }

    /// The checkpoint, then, when `session` counts this process's work, the cost so far (cost.json).
    public func saveCheckpoint(_ parameters: OrderedDictionary<Tensor>, state: some Encodable, key: String, session: Session?) throws {
        try writeCheckpoint(parameters, state: state, key: key)
        if let s = session { try recordCost(s) }
    }

    /// The checkpoint's tensors and state, nil when there is none.
    public func readCheckpoint<S: Decodable>(_ type: S.Type, key: String, userInfo: [CodingUserInfoKey: Any] = [:]) throws
        -> (tensors: SafeTensors.OrderedTensors, state: S)? {
        guard exists("checkpoint.safetensors") else { return nil }
        let (tensors, meta) = try SafeTensors.read(checkpointPath)
        guard let js = meta[key], let state = try? Self.decoder(userInfo: userInfo).decode(type, from: Data(js.utf8)) else {
            throw RunDirectoryError(message: "\(checkpointPath): no readable \(key) in __metadata__")
        }
        return (tensors, state)
    }

    // MARK: metrics.csv

    /// Starts metrics.csv with its header (replacing any earlier file).
    public func startMetrics(header: String) throws {
        try AtomicFile.write(header + "\n", to: metricsPath)
    }

    /// Appends one row (the file is rewritten atomically: never half a row).
    public func appendMetrics(_ row: String, header: String) throws {
        let old = (try? String(contentsOfFile: metricsPath, encoding: .utf8)) ?? (header + "\n")
        try AtomicFile.write(old + row + "\n", to: metricsPath)
    }

    /// metrics.csv with exactly these lines (header first).
    public func writeMetrics(_ lines: [String]) throws {
        try AtomicFile.write(lines.joined(separator: "\n") + "\n", to: metricsPath)
    }

    /// Drops rows of epochs after `epoch` (written by a process that stopped before saving its state).
    public func truncateMetrics(after epoch: Int, header: String) throws {
        guard let text = try? String(contentsOfFile: metricsPath, encoding: .utf8) else {
            try startMetrics(header: header)
            return
        }
        var keep: [Substring] = []
        for line in text.split(separator: "\n") {
            if let e = Int(line.prefix { $0 != "," }), e > epoch { continue }
            keep.append(line)
        }
        try AtomicFile.write(keep.joined(separator: "\n") + "\n", to: metricsPath)
    }

    // MARK: Model files

    public func saveModel(_ potential: any Potential, to name: String, metadata: [String: String], derived: Bool = true) throws {
        try ModelFile.save(potential, to: file(name), extraMetadata: metadata, derived: derived)
    }

    // MARK: Cost

    /// What a run has cost so far.
    public struct Cost: Codable, Sendable, Equatable {
        public var wallSeconds = 0.0
        public var cpuSeconds = 0.0
        /// The largest peak resident set size of the processes (MB).
        public var peakRSSMB = 0.0
        /// Processes that worked on the run (1 + resumes).
        public var sessions = 0

        public init() {}
    }

    /// The cost of earlier processes (cost.json) when this process started working on the run.
    public struct Session: Sendable {
        let earlier: Cost
        let wallStart: Date
        let cpuStart: Double

        /// This process's cost so far (sessions: 1).
        public var thisProcess: Cost {
            var c = Cost()
            c.wallSeconds = Date().timeIntervalSince(wallStart)
            c.cpuSeconds = processCPUSeconds() - cpuStart
            c.peakRSSMB = peakResidentMegabytes()
            c.sessions = 1
            return c
        }

        /// The run's cost: earlier processes plus this one so far.
        public var total: Cost {
            var c = earlier
            c.wallSeconds += Date().timeIntervalSince(wallStart)
            c.cpuSeconds += processCPUSeconds() - cpuStart
            c.peakRSSMB = Swift.max(c.peakRSSMB, peakResidentMegabytes())
            c.sessions += 1
            return c
        }
    }

    /// Starts counting this process's work on the run (call once, before the first expensive step).
    public func beginSession() throws -> Session {
        Session(earlier: try readJSON(Cost.self, from: "cost.json") ?? Cost(), wallStart: Date(), cpuStart: processCPUSeconds())
    }

    /// The run's cost over all its processes so far: with `session`, earlier processes plus this one (written to
    /// cost.json); without, what cost.json holds.
    public func cost(_ session: Session?) throws -> Cost {
        guard let s = session else { return try readJSON(Cost.self, from: "cost.json") ?? Cost() }
        return try recordCost(s)
    }

    /// Writes cost.json (earlier processes plus this one so far); returns the total.
    @discardableResult
    public func recordCost(_ session: Session) throws -> Cost {
        let c = session.total
        try writeJSON(c, to: "cost.json", pretty: true)
        return c
    }
}

/// Peak resident set size of this process (MB).
public func peakResidentMegabytes() -> Double {
    var ru = rusage()
    getrusage(RUSAGE_SELF.rawValue, &ru)
    return Double(ru.ru_maxrss) / 1024
}

/// CPU time (user + system, all threads) used by this process so far, in seconds: on a shared machine a
/// steadier measure of training cost than wall time.
public func processCPUSeconds() -> Double {
    var ru = rusage()
    getrusage(RUSAGE_SELF.rawValue, &ru)
    func s(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) * 1e-6 }
    return s(ru.ru_utime) + s(ru.ru_stime)
}
