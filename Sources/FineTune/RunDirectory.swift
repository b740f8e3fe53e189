import Atoms
import Foundation
import Potentials
import Tape

/// The stored options of a training run (config.json); `epochs` is the budget a resumed run may change.
public protocol RunConfiguration: Codable {
    var epochs: Int { get set }
    /// Throws when the options cannot make a run (a hand-edited config.json is checked as options are).
    func validate() throws
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
            if let items = try? fm.contentsOfDirectory(atPath: path), items.contains(where: { !isTemporary($0) }) {
                throw RunDirectoryError(message: "run directory '\(path)' exists and is not empty (use a new --out, or --resume \(path))")
            }
        }
        try fm.createDirectory(atPath: path, withIntermediateDirectories: true)
        dir.removeStaleTemporaries()  // of a process killed while it created the run
        try dir.writeJSON(config, to: "config.json", pretty: true)
        return dir
    }

    /// An existing run (its config.json must be there).
    public static func open(_ path: String) throws -> RunDirectory {
        let dir = RunDirectory(path)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw RunDirectoryError(message: "run directory '\(path)' does not exist")
        }
        guard isDirectory.boolValue else { throw RunDirectoryError(message: "'\(path)' is not a run directory (a file)") }
        guard dir.exists("config.json") else {
            let items = ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).filter { !Self.isTemporary($0) }
            if items.isEmpty {
                throw RunDirectoryError(message: "\(path): no config.json: the run was stopped before it started (run its command again with --out \(path))")
            }
            throw RunDirectoryError(message: "\(path): no config.json (not a run directory)")
        }
        return dir
    }

    /// A temporary file of `AtomicFile` (".NAME.relaxft-PID-N"), left behind when a process was killed mid-write.
    public static func isTemporary(_ name: String) -> Bool { name.hasPrefix(".") && name.contains(".relaxft-") }

    /// Removes temporary files that processes killed mid-write left in the directory (those of live processes stay).
    public func removeStaleTemporaries() {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [] where Self.isTemporary(name) {
            let tail = name[name.range(of: ".relaxft-", options: .backwards)!.upperBound...]
            guard let pid = Int32(tail.prefix { $0 != "-" }), pid != getpid(), kill(pid, 0) != 0, errno == ESRCH else { continue }
            try? FileManager.default.removeItem(atPath: file(name))
        }
    }

    /// An interrupted run's directory and stored configuration; `epochs`, when given, is the new epoch budget
    /// (applied to the configuration; the trainer stores it with `storeEpochs` once the run's state has been read,
    /// so that a resume that fails changes nothing).
    public static func resume<C: RunConfiguration>(_ path: String, as type: C.Type, epochs: Int? = nil) throws -> (run: RunDirectory, config: C) {
        let run = try open(path)
        var config = try run.readConfig(C.self)
        do { try config.validate() } catch { throw RunDirectoryError(message: "\(run.configPath): \(error)") }
        if let e = epochs { config.epochs = e }
        return (run, config)
    }

    /// Writes a new epoch budget into config.json (nothing when it is the stored one), and removes temporary
    /// files that killed processes left: called by a trainer once a resumed run's state has been read.
    public func storeEpochs<C: RunConfiguration>(_ epochs: Int, as type: C.Type) throws {
        removeStaleTemporaries()
        var stored = try readConfig(C.self)
        guard stored.epochs != epochs else { return }
        stored.epochs = epochs
        try writeJSON(stored, to: "config.json", pretty: true)
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

    /// The decoded file, or nil when it does not exist; an unreadable file is an error naming it and what is
    /// wrong in it. `userInfo` reaches the type's decoder.
    public func readJSON<T: Decodable>(_ type: T.Type, from name: String, userInfo: [CodingUserInfoKey: Any] = [:]) throws -> T? {
        guard let data = FileManager.default.contents(atPath: file(name)) else { return nil }
        do { return try Self.decoder(userInfo: userInfo).decode(type, from: data) } catch {
            throw RunDirectoryError(message: "\(file(name)): \(Self.describe(error))")
        }
    }

    /// A decoding error in words (the key path and what was expected), without the library's own text.
    public static func describe(_ error: Error) -> String {
        func path(_ keys: [CodingKey]) -> String {
            keys.isEmpty ? "the top level" : "'" + keys.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".") + "'"
        }
        guard let e = error as? DecodingError else { return "unreadable" }
        switch e {
        case .keyNotFound(let key, let c): return "missing \(path(c.codingPath + [key]))"
        case .valueNotFound(let t, let c): return "\(path(c.codingPath)) is null, expected \(describe(t))"
        case .typeMismatch(let t, let c): return "\(path(c.codingPath)) is not \(describe(t))"
        case .dataCorrupted(let c):
            if c.codingPath.isEmpty { return "not a JSON document of the expected form" }
            // Messages of our own decoders (an unknown relaxer, a bad gradient mode) are meant for users.
            let why = c.underlyingError == nil && !c.debugDescription.isEmpty && c.debugDescription.count < 200 ? ": " + c.debugDescription : ""
            return "\(path(c.codingPath)) is invalid" + why
        @unknown default: return "unreadable"
        }
    }

    static func describe(_ type: Any.Type) -> String {
        let t = "\(type)"
        if t.hasPrefix("Int") || t.hasPrefix("UInt") { return "an integer" }
        if t == "Double" || t == "Float" { return "a number" }
        if t == "String" { return "a string" }
        if t == "Bool" { return "true or false" }
        if t.hasPrefix("Array") { return "a list" }
        if t.hasPrefix("Dictionary") { return "an object" }
        return "of the expected form"
    }

    /// Optimizer state read back from a checkpoint must fit the model: a finite rate, a step count ≥ 0, and
    /// moments of the right sizes (`sizes`: Adam key → element count) that are finite.
    public static func validate(_ adam: Adam, sizes: [String: Int], file: String) throws {
        func fail(_ what: String) throws -> Never { throw RunDirectoryError(message: "\(file): \(what) (not a state this run wrote)") }
        guard adam.step >= 0, adam.learningRate.isFinite, adam.learningRate >= 0 else { try fail("optimizer step \(adam.step), learning rate \(adam.learningRate)") }
        for (name, moments) in [("m", adam.m), ("v", adam.v)] {
            for (k, xs) in moments.sorted(by: { $0.key < $1.key }) {
                guard let n = sizes[k] else { try fail("optimizer moments for unknown parameter \(k)") }
                guard xs.count == n else { try fail("optimizer moment \(name) of \(k) has \(xs.count) values, the parameter \(n)") }
                guard xs.allSatisfy(\.isFinite), name == "m" || xs.allSatisfy({ $0 >= 0 }) else { try fail("optimizer moment \(name) of \(k) is not finite") }
            }
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
        guard let js = meta[key] else { throw RunDirectoryError(message: "\(checkpointPath): no \(key) in __metadata__ (not a checkpoint of this kind of run)") }
        do { return (tensors, try Self.decoder(userInfo: userInfo).decode(type, from: Data(js.utf8))) } catch {
            throw RunDirectoryError(message: "\(checkpointPath): \(key) in __metadata__: \(Self.describe(error))")
        }
    }

    /// Puts a checkpoint's tensors into `model`: the same names and shapes as its parameters, or an error naming
    /// the file.
    public static func install(_ tensors: SafeTensors.OrderedTensors, into model: inout any Potential, file: String) throws {
        var seen = Set<String>()
        for (name, t) in tensors {
            guard let old = model.parameters[name], old.shape == t.shape else {
                throw RunDirectoryError(message: "\(file): tensor '\(name)' does not fit the model")
            }
            model.parameters[name] = t
            seen.insert(name)
        }
        if let missing = model.parameters.keys.first(where: { !seen.contains($0) }) {
            throw RunDirectoryError(message: "\(file): no tensor '\(missing)' (the model has \(model.parameters.count))")
        }
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
