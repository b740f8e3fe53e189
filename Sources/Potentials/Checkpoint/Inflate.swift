// DEFLATE decoding (RFC 1951) and CRC-32, enough to read compressed entries of zip files such as Python
// wheels without zlib. The decoder follows the structure of Mark Adler's "puff" reference decoder: canonical
// Huffman codes decoded one bit at a time from per-length counts, which is short and easy to check; speed
// (tens of MB/s) is ample for reading a few megabytes of model weights once.

public struct InflateError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { "DEFLATE data: \(message)" }
}

public enum Inflate {
    /// Decompresses a raw DEFLATE stream (no zlib or gzip header). `expectedSize` only reserves capacity.
    public static func decompress(_ input: [UInt8], expectedSize: Int = 0) throws -> [UInt8] {
        try input.withUnsafeBufferPointer { p in
            var s = State(input: p)
            s.output.reserveCapacity(expectedSize)
            var last = false
            repeat {
                last = try s.bits(1) == 1
                switch try s.bits(2) {
                case 0: try s.stored()
                case 1: try s.codes(lengths: Fixed.lengths, distances: Fixed.distances)
                case 2: try s.dynamic()
                default: throw InflateError(message: "invalid block type 3")
                }
            } while !last
            return s.output
        }
    }

    /// Canonical Huffman code: number of codes of each length 0...15, and the symbols ordered by code.
    struct Huffman {
        var count = [Int](repeating: 0, count: 16)
        var symbol: [Int]

        /// Builds the code from code lengths per symbol. Over-subscribed codes are rejected; incomplete ones are
        /// accepted (RFC 1951 allows a single distance code) and an unused code then fails in `decode`.
        init(lengths: [Int]) throws {
            symbol = [Int](repeating: 0, count: lengths.count)
            for l in lengths { count[l] += 1 }
            var left = 1
            for len in 1...15 {
                left <<= 1
                left -= count[len]
                if left < 0 { throw InflateError(message: "over-subscribed Huffman code") }
            }
            var offs = [Int](repeating: 0, count: 16)
            for len in 1..<15 { offs[len + 1] = offs[len] + count[len] }
            for (sym, l) in lengths.enumerated() where l != 0 {
                symbol[offs[l]] = sym
                offs[l] += 1
            }
        }
    }

    enum Fixed {
        static let lengths: Huffman = {
            var l = [Int](repeating: 8, count: 288)
            for i in 144..<256 { l[i] = 9 }
            for i in 256..<280 { l[i] = 7 }
            return try! Huffman(lengths: l)
        }()
        static let distances: Huffman = try! Huffman(lengths: [Int](repeating: 5, count: 30))
    }

    static let lengthBase = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258]
    static let lengthExtra = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0]
    static let distBase = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073,
                           4097, 6145, 8193, 12289, 16385, 24577]
    static let distExtra = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13]
    /// Order in which code-length code lengths are stored in a dynamic block header.
    static let codeLengthOrder = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15]

    struct State {
        let input: UnsafeBufferPointer<UInt8>
        var pos = 0
        var bitBuffer: UInt64 = 0
        var bitCount = 0
        var output: [UInt8] = []

        init(input: UnsafeBufferPointer<UInt8>) { self.input = input }

        /// The next `n` bits (LSB first, as DEFLATE packs them).
        @inline(__always)
        mutating func bits(_ n: Int) throws -> Int {
            while bitCount < n {
                guard pos < input.count else { throw InflateError(message: "unexpected end of compressed data") }
                bitBuffer |= UInt64(input[pos]) << UInt64(bitCount)
                pos += 1
                bitCount += 8
            }
            let v = Int(bitBuffer & ((1 << UInt64(n)) - 1))
            bitBuffer >>= UInt64(n)
            bitCount -= n
            return v
        }

        /// Uncompressed block: byte-aligned LEN, NLEN, then LEN raw bytes.
        mutating func stored() throws {
            bitBuffer = 0
            bitCount = 0
            guard pos + 4 <= input.count else { throw InflateError(message: "truncated stored block header") }
            let len = Int(input[pos]) | Int(input[pos + 1]) << 8
            let nlen = Int(input[pos + 2]) | Int(input[pos + 3]) << 8
            pos += 4
            guard len == (~nlen & 0xFFFF) else { throw InflateError(message: "stored block length does not match its complement") }
            guard pos + len <= input.count else { throw InflateError(message: "truncated stored block") }
            output.append(contentsOf: input[pos..<(pos + len)])
            pos += len
        }

        @inline(__always)
        mutating func decode(_ h: Huffman) throws -> Int {
            var code = 0, first = 0, index = 0
            for len in 1...15 {
                code |= try bits(1)
                let count = h.count[len]
                if code - count < first { return h.symbol[index + (code - first)] }
                index += count
                first += count
                first <<= 1
                code <<= 1
            }
            throw InflateError(message: "invalid Huffman code")
        }

        mutating func codes(lengths: Huffman, distances: Huffman) throws {
            while true {
                let sym = try decode(lengths)
                if sym < 256 {
                    output.append(UInt8(sym))
                } else if sym == 256 {
                    return
                } else {
                    let li = sym - 257
                    guard li < 29 else { throw InflateError(message: "invalid length symbol \(sym)") }
                    let len = Inflate.lengthBase[li] + (try bits(Inflate.lengthExtra[li]))
                    let di = try decode(distances)
                    guard di < 30 else { throw InflateError(message: "invalid distance symbol \(di)") }
                    let dist = Inflate.distBase[di] + (try bits(Inflate.distExtra[di]))
                    guard dist <= output.count else { throw InflateError(message: "distance \(dist) reaches before the start of the output") }
                    // Byte by byte: the copy may overlap what it writes (run-length style back-references).
                    let start = output.count - dist
                    for k in 0..<len { output.append(output[start + k]) }
                }
            }
        }

        mutating func dynamic() throws {
            let nlen = try bits(5) + 257, ndist = try bits(5) + 1, ncode = try bits(4) + 4
            guard nlen <= 286, ndist <= 30 else { throw InflateError(message: "too many length or distance codes") }
            var cl = [Int](repeating: 0, count: 19)
            for k in 0..<ncode { cl[Inflate.codeLengthOrder[k]] = try bits(3) }
            let clCode = try Huffman(lengths: cl)
            var lengths = [Int]()
            lengths.reserveCapacity(nlen + ndist)
            while lengths.count < nlen + ndist {
                let sym = try decode(clCode)
                if sym < 16 { lengths.append(sym); continue }
                var value = 0, rep: Int
                switch sym {
                case 16:
                    guard let prev = lengths.last else { throw InflateError(message: "repeat with no previous code length") }
                    value = prev
                    rep = 3 + (try bits(2))
                case 17: rep = 3 + (try bits(3))
                default: rep = 11 + (try bits(7))
                }
                guard lengths.count + rep <= nlen + ndist else { throw InflateError(message: "code lengths overflow") }
                lengths.append(contentsOf: repeatElement(value, count: rep))
            }
            guard lengths[256] != 0 else { throw InflateError(message: "no end-of-block code") }
            try codes(lengths: Huffman(lengths: Array(lengths[0..<nlen])), distances: Huffman(lengths: Array(lengths[nlen...])))
        }
    }
}

/// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), as zip files store it.
public enum CRC32 {
    static let table: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    public static func checksum<C: Collection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
        var c: UInt32 = 0xFFFF_FFFF
        table.withUnsafeBufferPointer { t in
            for b in bytes { c = t[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        }
        return c ^ 0xFFFF_FFFF
    }
}
