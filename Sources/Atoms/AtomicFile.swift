import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Whole-file writes that never leave a partial file behind: a new temporary file in the destination's
/// directory, flushed to disk, then renamed over the destination (keeping an existing file's permissions).
public enum AtomicFile {
    public static func write(_ data: Data, to path: String) throws {
        let writer = try AtomicFileWriter(path: path)
        try writer.append(data)
        try writer.commit()
    }

    public static func write(_ text: String, to path: String) throws {
        try write(Data(text.utf8), to: path)
    }
}

/// A file written in pieces (a trajectory, say) that appears under its name only when complete: the pieces go
/// to a temporary file in the destination's directory; `commit` flushes it and renames it into place,
/// `discard` (or dropping the writer without committing) removes it.
public final class AtomicFileWriter {
    public let path: String
    private let temporary: String
    private var fd: Int32
    private var finished = false

    public init(path: String) throws {
        self.path = path
        let url = URL(fileURLWithPath: path)
        let directory = url.deletingLastPathComponent().path
        temporary = directory + "/." + url.lastPathComponent + ".relaxft-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o666)
        guard fd >= 0 else { throw Self.failure(path, "cannot create a file in \(directory)") }
        var existing = stat()
        if stat(path, &existing) == 0 { _ = fchmod(fd, existing.st_mode & 0o7777) }
    }

    deinit { discard() }

    public func append(_ data: Data) throws {
        precondition(!finished, "append after commit or discard")
        let written = data.withUnsafeBytes { buffer -> Bool in
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
        guard written else {
            let e = Self.failure(path, "write failed")
            discard()
            throw e
        }
    }

    public func append(_ text: String) throws { try append(Data(text.utf8)) }

    /// Flushes the file to disk and renames it over `path`.
    public func commit() throws {
        precondition(!finished, "commit after commit or discard")
        guard fsync(fd) == 0 else {
            let e = Self.failure(path, "write failed")
            discard()
            throw e
        }
        close(fd)
        finished = true
        guard rename(temporary, path) == 0 else {
            let e = Self.failure(path, "cannot replace the file")
            unlink(temporary)
            throw e
        }
    }

    /// Removes the temporary file; the destination is left as it was.
    public func discard() {
        guard !finished else { return }
        finished = true
        close(fd)
        unlink(temporary)
    }

    private static func failure(_ path: String, _ what: String) -> StructureFileError {
        StructureFileError(path: path, line: nil, kind: .unwritable, expected: "a writable destination", found: "\(what): \(String(cString: strerror(errno)))")
    }
}
