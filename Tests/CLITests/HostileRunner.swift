import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// How a run of the binary on a hostile input ended, worst first.
enum HostileOutcome: String, Sendable, CaseIterable {
    /// Killed at the time limit.
    case hang
    /// Ended by a signal (a trap, an abort, the address-space limit).
    case crash
    /// Left new or changed files behind, or replaced a special file.
    case partial
    /// Exited with another code than expected.
    case wrongExit = "wrong-exit"
    /// The message does not name the culprit, leaks raw control characters or raw Foundation error text.
    case unnamed
    /// Expected exit code, culprit named, nothing written.
    case clean
}

/// A special file set up in the scratch directory before the run; it must be unchanged afterwards.
enum SpecialFile: Sendable {
    /// A character device with the given major/minor numbers (1, 7 is /dev/full: every write fails with ENOSPC).
    case charDevice(String, major: UInt32, minor: UInt32)
    case directory(String)
    /// name → target (relative); the link must still be a link afterwards.
    case symlink(String, to: String)
}

/// One hostile input: files written into a scratch directory, the relaxft arguments, and what must happen.
struct HostileCase: Sendable, CustomTestStringConvertible {
    let id: String
    let args: [String]
    var files: [String: Data] = [:]
    var special: [SpecialFile] = []
    /// Environment variables set for the run (MPI launcher variables, say).
    var environment: [String: String] = [:]
    var exit: Int32 = 2
    /// Substrings the error output must contain: the file (and line), option or structure at fault.
    var names: [String]
    /// Files the run may create or change (none for an error).
    var mayWrite: Set<String> = []
    /// A known failure, with the reason (the test then expects it to fail until it is fixed).
    var pending: String? = nil
    var testDescription: String { id }
}

/// Runs the relaxft binary (or `RELAXFT_BINARY`) on hostile cases under limits: 4 GB of address space, two
/// CPU minutes, a 60 s wall-clock limit. With `RELAXFT_HOSTILE_REPORT=FILE` set, each case appends
/// `id<TAB>outcome` to FILE, so that a corpus can be counted against any binary (e.g. an older one).
enum HostileRunner {
    static let binary = ProcessInfo.processInfo.environment["RELAXFT_BINARY"] ?? relaxftBinary
    static let wallLimit = 60.0

    /// Runs relaxft under the limits, with HOME and RELAXFT_HOME inside the scratch directory.
    static func run(_ args: [String], in dir: URL, environment: [String: String] = [:]) throws -> CLIRun {
        // exec keeps the pid, so a signal ending relaxft is the process's termination reason.
        try runTool("/bin/sh", ["-c", "ulimit -v 4000000 2>/dev/null; ulimit -t 120 2>/dev/null; exec \"$0\" \"$@\"", binary] + args, in: dir,
                    environment: ["HOME": dir.path, "RELAXFT_HOME": dir.path + "/.relaxft-home"].merging(environment) { $1 }, timeout: wallLimit)
    }

    /// Name, size, modification time and kind of every file below `dir` (the scratch directory's state).
    static func snapshot(_ dir: URL) -> [String: String] {
        var out: [String: String] = [:]
        func walk(_ path: String, _ rel: String) {
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: path) else { return }
            for n in names {
                let p = path + "/" + n, r = rel.isEmpty ? n : rel + "/" + n
                var st = stat()
                guard lstat(p, &st) == 0 else { continue }
                out[r] = "\(st.st_mode) \(st.st_size) \(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec) \(st.st_rdev)"
                if st.st_mode & S_IFMT == S_IFDIR { walk(p, r) }
            }
        }
        walk(dir.path, "")
        return out
    }

    /// Text no message may contain: traps, raw Foundation and decoding errors.
    static let rawErrorText = ["Fatal error", "Backtrace", "NSCocoaErrorDomain", "couldn’t be", "DecodingError", "keyNotFound(", "typeMismatch(",
                               "dataCorrupted(", "valueNotFound(", "Swift.", "Foundation."]

    /// Sets up, runs and judges one case; records issues through `#expect` and returns the outcome.
    @discardableResult
    static func check(_ c: HostileCase) throws -> HostileOutcome {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("relaxft-hostile-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        for (name, data) in c.files {
            let url = dir.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try data.write(to: url)
        }
        for s in c.special {
            switch s {
            case .charDevice(let name, let major, let minor):
                // Linux's encoding of small device numbers (glibc's makedev for major, minor < 256).
                let p = dir.appendingPathComponent(name).path
                #expect(mknod(p, S_IFCHR | 0o666, dev_t(major << 8 | minor)) == 0, "cannot make the device node \(p) (needs root)")
            case .directory(let name):
                try FileManager.default.createDirectory(at: dir.appendingPathComponent(name), withIntermediateDirectories: true)
            case .symlink(let name, let target):
                try FileManager.default.createSymbolicLink(atPath: dir.appendingPathComponent(name).path, withDestinationPath: target)
            }
        }
        let before = snapshot(dir)
        let run = try run(c.args, in: dir, environment: c.environment)
        let after = snapshot(dir)

        var outcome = HostileOutcome.clean
        func worse(_ o: HostileOutcome) {
            if HostileOutcome.allCases.firstIndex(of: o)! < HostileOutcome.allCases.firstIndex(of: outcome)! { outcome = o }
        }
        let stderr = run.stderr
        #expect(!run.timedOut, "\(c.id): killed after \(wallLimit) s")
        if run.timedOut { worse(.hang) }
        #expect(!run.signaled, "\(c.id): signal \(run.status)\n\(stderr.suffix(1500))")
        if run.signaled { worse(.crash) }
        let changed = Set(before.keys).union(after.keys).filter { before[$0] != after[$0] }.subtracting(c.mayWrite).sorted()
        #expect(changed.isEmpty, "\(c.id): wrote or changed \(changed)")
        if !changed.isEmpty { worse(.partial) }
        if !run.signaled && !run.timedOut {
            #expect(run.status == c.exit, "\(c.id): exit \(run.status), expected \(c.exit)\n\(stderr.suffix(1500))")
            if run.status != c.exit { worse(.wrongExit) }
            let missing = c.names.filter { !stderr.contains($0) }
            #expect(missing.isEmpty, "\(c.id): the message does not name \(missing)\n\(stderr.suffix(1500))")
            let raw = rawErrorText.filter { stderr.contains($0) }
            #expect(raw.isEmpty, "\(c.id): raw error text \(raw)\n\(stderr.suffix(1500))")
            let control = stderr.unicodeScalars.contains { $0.value < 0x20 && $0 != "\n" && $0 != "\t" || $0.value == 0x7F }
            #expect(!control, "\(c.id): control characters in the message")
            if !missing.isEmpty || !raw.isEmpty || control { worse(.unnamed) }
        }
        record(c.id, outcome)
        return outcome
    }

    static let reportLock = NSLock()

    static func record(_ id: String, _ outcome: HostileOutcome) {
        guard let path = ProcessInfo.processInfo.environment["RELAXFT_HOSTILE_REPORT"] else { return }
        reportLock.lock()
        defer { reportLock.unlock() }
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        guard fd >= 0 else { return }
        let line = Array("\(id)\t\(outcome.rawValue)\n".utf8)
        _ = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }
}
