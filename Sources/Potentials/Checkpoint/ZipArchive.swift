import Foundation

public struct ZipError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// Read-only zip archive (PKWARE APPNOTE): the central directory (with zip64 sizes and offsets) and entries
/// stored (method 0) or deflated (method 8), each checked against its CRC-32. Enough for Python wheels and
/// PyTorch checkpoints (`torch.save` writes a zip whose entries are stored).
public struct ZipArchive: Sendable {
    public struct Entry: Sendable {
        public let name: String
        /// 0 = stored, 8 = deflated.
        public let method: Int
        public let crc32: UInt32
        public let compressedSize: Int
        public let size: Int
        let localHeaderOffset: Int
        let flags: Int
    }

    public let bytes: [UInt8]
    public let entries: [Entry]
    private let index: [String: Int]

    public init(path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else { throw ZipError(message: "\(path): cannot read file") }
        do { try self.init(bytes: [UInt8](data)) } catch let e as ZipError { throw ZipError(message: "\(path): \(e.message)") }
    }

    public init(bytes: [UInt8]) throws {
        self.bytes = bytes
        entries = try ZipArchive.centralDirectory(bytes)
        var idx: [String: Int] = [:]
        for (k, e) in entries.enumerated() where idx[e.name] == nil { idx[e.name] = k }
        index = idx
    }

    public func entry(_ name: String) -> Entry? { index[name].map { entries[$0] } }

    /// The uncompressed content of an entry.
    public func read(_ name: String) throws -> [UInt8] {
        guard let e = entry(name) else { throw ZipError(message: "no entry '\(name)' in the archive") }
        return try read(e)
    }

    public func read(_ e: Entry) throws -> [UInt8] {
        if e.flags & 1 != 0 { throw ZipError(message: "entry '\(e.name)' is encrypted") }
        let h = e.localHeaderOffset
        guard h + 30 <= bytes.count, u32(bytes, h) == 0x0403_4b50 else { throw ZipError(message: "entry '\(e.name)': bad local header") }
        let start = h + 30 + u16(bytes, h + 26) + u16(bytes, h + 28)
        guard start + e.compressedSize <= bytes.count else { throw ZipError(message: "entry '\(e.name)' extends past the end of the archive") }
        let raw = Array(bytes[start..<(start + e.compressedSize)])
        let out: [UInt8]
        switch e.method {
        case 0: out = raw
        case 8:
            do { out = try Inflate.decompress(raw, expectedSize: e.size) } catch let err as InflateError {
                throw ZipError(message: "entry '\(e.name)': \(err)")
            }
        default: throw ZipError(message: "entry '\(e.name)': compression method \(e.method) is not supported (stored and deflated are)")
        }
        guard out.count == e.size else { throw ZipError(message: "entry '\(e.name)': \(out.count) bytes, the directory says \(e.size)") }
        guard CRC32.checksum(out) == e.crc32 else { throw ZipError(message: "entry '\(e.name)': CRC-32 mismatch (corrupt archive)") }
        return out
    }

    static func centralDirectory(_ b: [UInt8]) throws -> [Entry] {
        // End of central directory record: last signature within the final 64 KiB + 22 bytes (comment ≤ 65535).
        guard b.count >= 22 else { throw ZipError(message: "not a zip archive (too short)") }
        var eocd = -1
        var p = b.count - 22
        let lowest = Swift.max(0, b.count - 22 - 65535)
        while p >= lowest {
            if u32(b, p) == 0x0605_4b50 { eocd = p; break }
            p -= 1
        }
        guard eocd >= 0 else { throw ZipError(message: "not a zip archive (no end of central directory record)") }
        var count = u16(b, eocd + 10)
        var cdSize = u32(b, eocd + 12), cdOffset = u32(b, eocd + 16)
        if count == 0xFFFF || cdSize == 0xFFFF_FFFF || cdOffset == 0xFFFF_FFFF {
            // Zip64: a locator right before the record points to the zip64 end of central directory.
            let loc = eocd - 20
            guard loc >= 0, u32(b, loc) == 0x0706_4b50 else { throw ZipError(message: "zip64 locator missing") }
            let rec = u64(b, loc + 8)
            guard rec >= 0, rec + 56 <= b.count, u32(b, rec) == 0x0606_4b50 else { throw ZipError(message: "bad zip64 end of central directory") }
            count = u64(b, rec + 32)
            cdSize = u64(b, rec + 40)
            cdOffset = u64(b, rec + 48)
        }
        guard cdOffset >= 0, cdSize >= 0, cdOffset + cdSize <= b.count else { throw ZipError(message: "central directory lies outside the file") }
        var entries: [Entry] = []
        entries.reserveCapacity(count)
        var q = cdOffset
        for _ in 0..<count {
            guard q + 46 <= b.count, u32(b, q) == 0x0201_4b50 else { throw ZipError(message: "bad central directory entry at offset \(q)") }
            let flags = u16(b, q + 8), method = u16(b, q + 10)
            let crc = UInt32(truncatingIfNeeded: u32(b, q + 16))
            var csize = u32(b, q + 20), usize = u32(b, q + 24)
            let nameLen = u16(b, q + 28), extraLen = u16(b, q + 30), commentLen = u16(b, q + 32)
            var offset = u32(b, q + 42)
            guard q + 46 + nameLen + extraLen + commentLen <= b.count else { throw ZipError(message: "truncated central directory") }
            let name = String(decoding: b[(q + 46)..<(q + 46 + nameLen)], as: UTF8.self)
            // Zip64 extended information (id 1): 8-byte values for the fields saturated at 0xFFFFFFFF, in this order.
            var e = q + 46 + nameLen
            let extraEnd = e + extraLen
            while e + 4 <= extraEnd {
                let id = u16(b, e), len = u16(b, e + 2)
                if id == 1 {
                    var f = e + 4
                    if usize == 0xFFFF_FFFF, f + 8 <= e + 4 + len { usize = u64(b, f); f += 8 }
                    if csize == 0xFFFF_FFFF, f + 8 <= e + 4 + len { csize = u64(b, f); f += 8 }
                    if offset == 0xFFFF_FFFF, f + 8 <= e + 4 + len { offset = u64(b, f) }
                }
                e += 4 + len
            }
            guard csize >= 0, usize >= 0, offset >= 0 else { throw ZipError(message: "entry '\(name)': sizes out of range") }
            entries.append(Entry(name: name, method: method, crc32: crc, compressedSize: csize, size: usize, localHeaderOffset: offset, flags: flags))
            q += 46 + nameLen + extraLen + commentLen
        }
        return entries
    }
}

@inline(__always) private func u16(_ b: [UInt8], _ p: Int) -> Int { Int(b[p]) | Int(b[p + 1]) << 8 }
@inline(__always) private func u32(_ b: [UInt8], _ p: Int) -> Int { u16(b, p) | u16(b, p + 2) << 16 }
/// Little-endian UInt64 as Int (negative when the top bit is set; callers treat that as out of range).
@inline(__always) private func u64(_ b: [UInt8], _ p: Int) -> Int { Int(truncatingIfNeeded: UInt64(u32(b, p)) | UInt64(u32(b, p + 4)) << 32) }
