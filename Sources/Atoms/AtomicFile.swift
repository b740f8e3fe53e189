import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Whole-file writes that never leave a partial file behind: a new temporary file in the destination's
/// directory, flushed to disk, then renamed over the destination (keeping an existing file's permissions).
///
/// What a destination path may be:
/// - a regular file, or no file yet: replaced atomically as above;
/// - a symbolic link (or a chain of them): written through, the file it points to is replaced atomically and
///   the link stays a link (a dangling link gets its target created, as `cp` does);
/// - a character device or a pipe (`/dev/null`, `/dev/stdout`, a FIFO), or a descriptor under /proc or
///   /dev/fd: the text is streamed into it when complete (not before: a failed run writes nothing), never
///   replaced by a regular file;
/// - a directory, a block device or a socket: refused.
public enum AtomicFile {
    public static func write(_ data: Data, to path: String) throws {
        let writer = try AtomicFileWriter(path: path)
        try writer.append(data)
        try writer.commit()
    }

    public static func write(_ text: String, to path: String) throws {
        try write(Data(text.utf8), to: path)
    }

    /// How a path would be written.
    public enum Destination: Equatable, Sendable {
        /// Replaced by renaming a temporary file onto `target` (the path with symbolic links resolved).
        case replace(target: String)
        /// Streamed into an existing device, pipe or descriptor.
        case stream
    }

    /// Classifies `path` as a destination (see the type's documentation), checking that it can be written:
    /// the directory of the file to replace exists and is writable, a stream target can be opened. Throws a
    /// `StructureFileError` of kind `.unwritable` that names the path and the reason.
    public static func destination(_ path: String) throws -> Destination {
        func fail(_ found: String) -> StructureFileError {
            StructureFileError(path: path, line: nil, kind: .unwritable, expected: "a regular file, a symbolic link to one, a pipe or a character device", found: found)
        }
        guard !path.isEmpty else { throw fail("an empty path") }
        var current = path
        for _ in 0..<40 {
            // Descriptors (/dev/stdout -> /proc/self/fd/1 -> pipe:[…]) are magic links: write into what they open.
            if current.hasPrefix("/proc/") || current.hasPrefix("/dev/fd/") {
                var st = stat()
                guard stat(current, &st) == 0 else { throw fail("\(current): \(String(cString: strerror(errno)))") }
                return try streamable(st, path: path, fail: fail)
            }
            var lst = stat()
            if lstat(current, &lst) != 0 {
                guard errno == ENOENT else { throw fail("\(current): \(String(cString: strerror(errno)))") }
                return .replace(target: try writableDirectory(for: current, original: path))
            }
            switch lst.st_mode & S_IFMT {
            case S_IFLNK:
                var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
                let n = readlink(current, &buffer, Int(PATH_MAX))
                guard n > 0 else { throw fail("\(current): unreadable symbolic link") }
                let link = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
                current = link.hasPrefix("/") ? link : directoryOf(current) + "/" + link
            case S_IFREG:
                return .replace(target: try writableDirectory(for: current, original: path))
            default:
                return try streamable(lst, path: path, fail: fail)
            }
        }
        throw fail("a chain of more than 40 symbolic links")
    }

    static func streamable(_ st: stat, path: String, fail: (String) -> StructureFileError) throws -> Destination {
        switch st.st_mode & S_IFMT {
        case S_IFCHR, S_IFIFO, S_IFREG: return .stream
        case S_IFDIR: throw fail("a directory")
        case S_IFBLK: throw fail("a block device")
        case S_IFSOCK: throw fail("a socket")
        default: throw fail("a special file")
        }
    }

    static func directoryOf(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    /// `target`, after checking that its directory exists and is writable.
    static func writableDirectory(for target: String, original: String) throws -> String {
        let directory = directoryOf(target)
        var st = stat()
        guard stat(directory, &st) == 0, st.st_mode & S_IFMT == S_IFDIR else {
            throw StructureFileError(path: original, line: nil, kind: .unwritable, expected: "an existing directory", found: "no directory \(directory)")
        }
        guard access(directory, W_OK) == 0 else {
            throw StructureFileError(path: original, line: nil, kind: .unwritable, expected: "a writable directory", found: "directory \(directory) is not writable")
        }
        return target
    }
}

/// A file written in pieces (a trajectory, say) that appears under its name only when complete: the pieces go
/// to a temporary file in the destination's directory; `commit` flushes it and renames it into place,
/// `discard` (or dropping the writer without committing) removes it. Destinations as for `AtomicFile`: a
/// device or pipe receives the whole text at `commit` (the pieces wait in a temporary file).
public final class AtomicFileWriter {
    public let path: String
    private let destination: AtomicFile.Destination
    private let temporary: String
    private var fd: Int32
    private var finished = false

    public init(path: String) throws {
        self.path = path
        destination = try AtomicFile.destination(path)
        let directory: String, name = URL(fileURLWithPath: path).lastPathComponent
        switch destination {
        case .replace(let target): directory = AtomicFile.directoryOf(target)
        case .stream: directory = NSTemporaryDirectory().hasSuffix("/") ? String(NSTemporaryDirectory().dropLast()) : NSTemporaryDirectory()
        }
        temporary = directory + "/." + name + ".relaxft-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        fd = open(temporary, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o666)
        guard fd >= 0 else { throw Self.failure(path, "cannot create a file in \(directory)") }
        if case .replace(let target) = destination {
            var existing = stat()
            if stat(target, &existing) == 0 {
                _ = fchmod(fd, existing.st_mode & 0o7777)
                if geteuid() == 0 { _ = fchown(fd, existing.st_uid, existing.st_gid) }  // root replacing a user's file
            }
        }
    }

    deinit { discard() }

    public func append(_ data: Data) throws {
        precondition(!finished, "append after commit or discard")
        guard Self.writeAll(fd, data) else {
            let e = Self.failure(path, "write failed")
            discard()
            throw e
        }
    }

    public func append(_ text: String) throws { try append(Data(text.utf8)) }

    /// Flushes the file to disk and renames it over `path` (or streams it into a device or pipe).
    public func commit() throws {
        precondition(!finished, "commit after commit or discard")
        switch destination {
        case .replace(let target):
            guard fsync(fd) == 0 else {
                let e = Self.failure(path, "write failed")
                discard()
                throw e
            }
            close(fd)
            finished = true
            let replacement = FaultInjection.nextReplacement()
            FaultInjection.killIf(.beforeRename, at: replacement)
            guard rename(temporary, target) == 0 else {
                let e = Self.failure(path, "cannot replace the file")
                unlink(temporary)
                throw e
            }
            FaultInjection.killIf(.afterRename, at: replacement)
        case .stream:
            defer { discard() }
            let out = open(path, O_WRONLY | O_APPEND | O_CLOEXEC)
            guard out >= 0 else { throw Self.failure(path, "cannot open") }
            defer { close(out) }
            guard lseek(fd, 0, SEEK_SET) == 0 else { throw Self.failure(path, "cannot read back the temporary file") }
            var buffer = [UInt8](repeating: 0, count: 1 << 16)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                guard n >= 0 else { throw Self.failure(path, "cannot read back the temporary file") }
                if n == 0 { break }
                guard Self.writeAll(out, Data(buffer[0..<n])) else { throw Self.failure(path, "write failed") }
            }
        }
    }

    /// Removes the temporary file; the destination is left as it was.
    public func discard() {
        guard !finished else { return }
        finished = true
        close(fd)
        unlink(temporary)
    }

    /// Writes all of `data` to `fd` (retrying on interrupts and short writes); false on an error (errno set).
    private static func writeAll(_ fd: Int32, _ data: Data) -> Bool {
        data.withUnsafeBytes { buffer -> Bool in
            guard let base = buffer.baseAddress else { return true }  // nothing to write
            var offset = 0
            while offset < buffer.count {
                let n = Glibc.write(fd, base + offset, buffer.count - offset)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { return false }
                offset += n
            }
            return true
        }
    }

    private static func failure(_ path: String, _ what: String) -> StructureFileError {
        StructureFileError(path: path, line: nil, kind: .unwritable, expected: "a writable destination", found: "\(what): \(String(cString: strerror(errno)))")
    }
}

/// Deterministic kills for the tests that check a run can be resumed from any moment: with
/// `RELAXFT_FAULT_KILL=before-rename:K` (or `after-rename:K`) the process sends itself SIGKILL at its K-th
/// atomic file replacement, with the new file complete but not yet renamed into place (or just after). Every
/// state a run directory can be left in by a kill is one of these; without the variable nothing happens.
enum FaultInjection {
    enum Moment: String { case beforeRename = "before-rename", afterRename = "after-rename" }

    static let plan: (moment: Moment, count: Int)? = {
        guard let v = ProcessInfo.processInfo.environment["RELAXFT_FAULT_KILL"] else { return nil }
        let parts = v.split(separator: ":")
        guard parts.count == 2, let m = Moment(rawValue: String(parts[0])), let k = Int(parts[1]), k > 0 else { return nil }
        return (m, k)
    }()

    nonisolated(unsafe) private static var replacements = 0
    private static let lock = NSLock()

    /// Counts a replacement (1-based) when a plan is set.
    static func nextReplacement() -> Int {
        guard plan != nil else { return 0 }
        lock.lock()
        defer { lock.unlock() }
        replacements += 1
        return replacements
    }

    static func killIf(_ moment: Moment, at replacement: Int) {
        guard let p = plan, p.moment == moment, p.count == replacement else { return }
        kill(getpid(), SIGKILL)
    }
}
