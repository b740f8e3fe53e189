import Foundation
import Testing
import Tape
@testable import Potentials

/// Writes pickle opcodes by hand (the subset torch.save produces), for synthetic test pickles.
struct PickleWriter {
    var bytes: [UInt8] = [0x80, 2]
    mutating func op(_ o: UInt8) { bytes.append(o) }
    mutating func mark() { op(0x28) }
    mutating func str(_ s: String) {
        op(0x58)
        let u = Array(s.utf8)
        for k in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: u.count >> (8 * k))) }
        bytes += u
    }
    mutating func int(_ v: Int) {
        if v >= 0 && v < 256 { op(0x4B); bytes.append(UInt8(v)) } else if v >= 0 && v < 65536 {
            op(0x4D); bytes.append(UInt8(v & 255)); bytes.append(UInt8(v >> 8))
        } else {
            op(0x4A)
            for k in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * k))) }
        }
    }
    mutating func float(_ x: Double) {
        op(0x47)
        for k in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: x.bitPattern >> UInt64(k))) }
    }
    mutating func global(_ m: String, _ n: String) { op(0x63); bytes += Array("\(m)\n\(n)\n".utf8) }
    mutating func put(_ k: Int) { op(0x71); bytes.append(UInt8(k)) }
    mutating func get(_ k: Int) { op(0x68); bytes.append(UInt8(k)) }
    mutating func ints(_ v: [Int]) { mark(); for x in v { int(x) }; op(0x74) }
    /// `_rebuild_tensor_v2(('storage', torch.<type>Storage, key, 'cpu', numel), offset, size, stride, False, OrderedDict())`
    mutating func tensor(storage: String, key: String, numel: Int, offset: Int, size: [Int], stride: [Int]) {
        global("torch._utils", "_rebuild_tensor_v2")
        mark()
        mark(); str("storage"); global("torch", storage); str(key); str("cpu"); int(numel); op(0x74)
        op(0x51) // BINPERSID
        int(offset); ints(size); ints(stride); op(0x89)
        global("collections", "OrderedDict"); op(0x29); op(0x52)
        op(0x74)
        op(0x52)
    }
}

/// Builds a zip archive from (name, method, stored payload, uncompressed content).
func makeZip(_ entries: [(name: String, method: Int, payload: [UInt8], content: [UInt8])]) -> [UInt8] {
    func le(_ v: Int, _ n: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
    var out: [UInt8] = [], central: [UInt8] = []
    for e in entries {
        let name = Array(e.name.utf8), crc = Int(CRC32.checksum(e.content)), offset = out.count
        let common = le(20, 2) + le(0, 2) + le(e.method, 2) + le(0, 4) + le(crc, 4) + le(e.payload.count, 4) + le(e.content.count, 4) + le(name.count, 2)
        out += le(0x0403_4b50, 4) + common + le(0, 2) + name + e.payload
        central += le(0x0201_4b50, 4) + le(20, 2) + common + le(0, 2) + le(0, 2) + le(0, 2) + le(0, 2) + le(0, 4) + le(offset, 4) + name
    }
    let cdOffset = out.count
    out += central
    out += le(0x0605_4b50, 4) + le(0, 4) + le(entries.count, 2) + le(entries.count, 2) + le(central.count, 4) + le(cdOffset, 4) + le(0, 2)
    return out
}

func floatBytes(_ v: [Float]) -> [UInt8] { v.flatMap { x in (0..<4).map { UInt8(truncatingIfNeeded: x.bitPattern >> UInt32(8 * $0)) } } }

@Suite struct CheckpointFormatTests {
    // Raw DEFLATE streams made with Python's zlib (compressobj(9, DEFLATED, -15, 9, strategy)).
    static let fixedText = Array("relaxft relaxft relaxft: fixed Huffman codes with back-references, relaxft!".utf8)
    static let fixedBlock: [UInt8] = [43, 74, 205, 73, 172, 72, 43, 81, 40, 66, 165, 173, 20, 210, 50, 43, 82, 83, 20, 60, 74, 211, 210, 114, 19,
                                      243, 20, 146, 243, 83, 82, 139, 21, 202, 51, 75, 50, 20, 146, 18, 147, 179, 117, 139, 82, 211, 82, 139, 82,
                                      243, 146, 83, 139, 117, 96, 90, 20, 1]
    /// Lines "atom k bond k²%97 angle 7k%31" for k < 200 (4991 bytes), one dynamic-Huffman block.
    static let dynamicText = Array((0..<200).map { k in "atom \(k) bond \(k * k % 97) angle \(k * 7 % 31)\n" }.joined().utf8)
    static let dynamicBlock = [UInt8](Data(base64Encoded: """
        dZhNbtZAEAX3OUWO4J7/OU4QERtINtxfgNz1LD+TFdI4lN326+ma7+3356/X4/Xb58f3v/+8ffz4+f56vLz9W41zNXJ1nqvlXG25Gu1crufyzuUS53JLxmB9nev9XC8915MyzuXKn0diZt4UfCRmneuDpyn9XN/n+uLZExNZaM3lpERWWlRUYoJiJ/ySF7LcWbiw80IWzDqgrLfqgQBlxYP/EICy5M0bKiMvZM2VIiBlzZOvmKCSNYfukKCSVXeBal7IqjdfoWYgSlbdeE+Qsuit6iBl2U23gJRlb3040pVld6qAlFUv7gAoqx68pkhQzbKLPh1BzbLXuqe9ZtW93fNes+hSPPFZ9fLM16x6hIW+Em9Lfc2iIyz2laqH5b5S9rDgtyy7rXvyW1Zdyz36LauOZdFvWfaw5De+dbXkt6x69Xv0WxY9t0W/ZdWzW/RbVj2rRb9tv5CbyWGkBPXwWyeoF3tWot+rVUf0e7u/DkDdXx+gYe+b5PdpH4jk92WfFNL2DCRpHJ6aJI2wmBH9USyYkKolGVD7IvqjW68Q/TGsuYj+mNaOkJb3L6RtDZ+gedgGQfJn2JbC6Ci2BwGqvmkBarbLEf3ZbV8k+nPYTgpp+tYLadleTfTn9s09g7YOHwe5HjY/ErSKDxxA9T6gSP5qNtFI/uo2AwENH5qQ5n3Ikvy1bCiT/LVtiidoHz71k7TDNSFJu5hWkPxdzUMgtbu2wOn/l5w97kpE7Pe8CxSp3+v+92C24aUnx/1xCH0c4R6FWBxesljVXpJYzV+rWN11Crc4hn87NOWwry3W8niItS1QUh707LIqnEeGZs4THnOhqnuVUM07qXKlW/PRAoGlqV8Fe3S4YMvtSrDt28jENg/beYChatdeBaz47haCVVesxpVmW6hg/b7nCjV8kxbKt3U6IiRsPgkCZdPwACZlK94XcrZHY1QfaWoMvK16Y+BtmptidZ+0Yg3XLZ0DHuOcBOJu1Y8CuNvlDMCQt+GNgb1tHwvRHibDhWruI1Zz7RKru16RPzncozMeEifYcvcSbPsjA8PjrjJJICZnbhT9oa9iVXv9agxU7vpkBBCbGzYlAptTMsR6mLtYyyWM/CF0j+NBYHSKOTCM7tkZw08t6gxJ3fLOkNZN6wy0Tn0u1jAZE8qPa2oMxO7afgggZtd8ZKB2+3FIxu20MV6nZD+rqjPwu+7nZPwuTJkCv7usTKzhWkYApx/T1Rk4niaQYNvVDBiS52eGwPKuwUgAl/9CIVb1+StYu09sNQamdw158ofrSQzE8h9mxFquaGJtdzTih+89fiwKhM/7YpcvREq+512B8PnpIVA+/8UI5WvWEijfQ6LkfI9ZsR+V75c/
        """, options: .ignoreUnknownCharacters)!)

    @Test func crc32AndSHA256KnownVectors() {
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)
        #expect(CRC32.checksum(Self.dynamicText) == 0x9121_3EC3)
        #expect(SHA256.hex([]) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        // Two blocks, and a length (56 bytes) whose padding needs an extra block.
        #expect(SHA256.hex(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        #expect(SHA256.hex([UInt8](repeating: 0x61, count: 1000)) == "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3")
    }

    @Test func inflateStoredFixedAndDynamicBlocks() throws {
        // Stored block built by hand: final bit, type 0, LEN and its complement.
        let text = Array("stored".utf8)
        let stored: [UInt8] = [1, 6, 0, 0xF9, 0xFF] + text
        #expect(try Inflate.decompress(stored) == text)
        #expect(try Inflate.decompress(Self.fixedBlock) == Self.fixedText)
        #expect(try Inflate.decompress(Self.dynamicBlock) == Self.dynamicText)
        // Two blocks in a row: a non-final stored block, then the fixed one.
        #expect(try Inflate.decompress([0, 6, 0, 0xF9, 0xFF] + text + Self.fixedBlock) == text + Self.fixedText)
    }

    @Test func inflateRejectsCorruptData() {
        #expect(throws: InflateError.self) { try Inflate.decompress([1, 6, 0, 0, 0] + Array("stored".utf8)) } // bad NLEN
        #expect(throws: InflateError.self) { try Inflate.decompress([7]) } // block type 3
        #expect(throws: InflateError.self) { try Inflate.decompress(Array(Self.dynamicBlock.prefix(100))) } // truncated
    }

    @Test func zipStoredAndDeflatedEntriesWithCRCCheck() throws {
        let a = Array("hello".utf8)
        let zip = makeZip([("a.txt", 0, a, a), ("dir/b.txt", 8, Self.dynamicBlock, Self.dynamicText)])
        let z = try ZipArchive(bytes: zip)
        #expect(z.entries.map(\.name) == ["a.txt", "dir/b.txt"])
        #expect(z.entry("dir/b.txt")?.method == 8)
        #expect(try z.read("a.txt") == a)
        #expect(try z.read("dir/b.txt") == Self.dynamicText)
        #expect(throws: ZipError.self) { try z.read("missing") }
        var bad = zip
        bad[30 + 5] ^= 1 // flip a bit of the stored content: CRC mismatch
        #expect(throws: ZipError.self) { try ZipArchive(bytes: bad).read("a.txt") }
        #expect(throws: ZipError.self) { try ZipArchive(bytes: Array("not a zip file at all, no end record".utf8)) }
    }

    @Test func unpicklerReadsTheTorchSubset() throws {
        var w = PickleWriter()
        w.op(0x7D); w.put(0); w.mark()
        w.str("n"); w.int(-5)
        w.str("big"); w.int(70000)
        w.str("x"); w.float(0.1)
        w.str("flags"); w.op(0x88); w.op(0x89); w.op(0x4E); w.op(0x87) // (True, False, None)
        w.str("list"); w.op(0x5D); w.put(1); w.mark(); w.int(1); w.int(2); w.op(0x65)
        w.str("od"); w.global("collections", "OrderedDict"); w.op(0x29); w.op(0x52); w.put(2)
        w.str("k"); w.int(3); w.op(0x73) // SETITEM into the OrderedDict
        w.mark(); w.str("m"); w.get(1); w.op(0x75) // SETITEMS: memo reference to the list
        w.mark(); w.op(0x74); w.op(0x62) // BUILD with () state: attributes of a dict subclass are dropped
        w.op(0x75); w.op(0x2E)
        let v = try Unpickler.load(w.bytes)
        #expect(v["n"] == .int(-5))
        #expect(v["big"] == .int(70000))
        #expect(v["x"] == .float(0.1))
        #expect(v["flags"] == .tuple([.bool(true), .bool(false), .none]))
        #expect(v["list"] == .list([.int(1), .int(2)]))
        #expect(v["od"]?["k"] == .int(3))
        // The list was completed (APPENDS) after it was memoized: the later reference sees the items.
        #expect(v["od"]?["m"] == .list([.int(1), .int(2)]))
        #expect(throws: PickleError.self) { try Unpickler.load([0x80, 2, 0xFF, 0x2E]) } // unknown opcode
        #expect(throws: PickleError.self) { try Unpickler.load([0x80, 2, 0x68, 7, 0x2E]) } // undefined memo key
        #expect(throws: PickleError.self) { try Unpickler.load([0x80, 2, 0x4B]) } // truncated
    }

    /// A torch-style zip: `ck/data.pkl` holding {'model': {'state_dict': OrderedDict, 'model_args': {...}}} and
    /// two float32 storages, one tensor viewed transposed (strides (1, 2)) at an offset.
    static func syntheticCheckpoint() -> [UInt8] {
        var w = PickleWriter()
        w.op(0x7D); w.mark(); w.str("model"); w.op(0x7D); w.mark()
        w.str("state_dict"); w.global("collections", "OrderedDict"); w.op(0x29); w.op(0x52); w.mark()
        w.str("layer.weight"); w.tensor(storage: "FloatStorage", key: "0", numel: 7, offset: 1, size: [3, 2], stride: [1, 3])
        w.str("layer.bias"); w.tensor(storage: "FloatStorage", key: "1", numel: 2, offset: 0, size: [2], stride: [1])
        w.op(0x75)
        w.str("model_args"); w.op(0x7D); w.mark()
        w.str("atom_fea_dim"); w.int(64); w.str("mlp_hidden_dims"); w.op(0x5D); w.mark(); w.int(64); w.int(32); w.op(0x65)
        w.str("gMLP_norm"); w.str("layer"); w.str("learnable_rbf"); w.op(0x88)
        w.op(0x75)
        w.op(0x75); w.op(0x75); w.op(0x2E)
        let s0 = floatBytes([9, 0.5, 1.5, 2.5, 3.5, 4.5, 5.5]), s1 = floatBytes([-1, 0.1])
        return makeZip([("ck/data.pkl", 0, w.bytes, w.bytes), ("ck/data/0", 0, s0, s0), ("ck/data/1", 0, s1, s1),
                        ("ck/version", 0, [0x33, 0x0A], [0x33, 0x0A])])
    }

    @Test func torchCheckpointTensorsAndCHGNetMetadata() throws {
        let ck = try TorchCheckpoint(bytes: Self.syntheticCheckpoint())
        let sd = try ck.stateDict(ck.root["model"]!["state_dict"]!)
        #expect(sd.map(\.name) == ["layer.weight", "layer.bias"])
        // Storage [9, .5, 1.5, 2.5, 3.5, 4.5, 5.5], offset 1, size (3, 2), stride (1, 3): rows (.5, 3.5), (1.5, 4.5), (2.5, 5.5).
        #expect(sd[0].tensor.tensor == Tensor(shape: [3, 2], [0.5, 3.5, 1.5, 4.5, 2.5, 5.5]))
        #expect(sd[1].tensor.tensor == Tensor([-1, Double(Float(0.1))]))
        #expect(sd[1].tensor.dtype == "float32")
        let (tensors, meta) = try CHGNetWeights.convert(checkpoint: Self.syntheticCheckpoint())
        #expect(tensors.count == 2)
        #expect(meta["relaxft_kind"] == "chgnet")
        #expect(meta["atom_fea_dim"] == "64")
        #expect(meta["mlp_hidden_dims"] == "[64, 32]")
        #expect(meta["learnable_rbf"] == "true")
        #expect(meta["mlp_out_bias"] == "false")
        #expect(throws: TorchCheckpointError.self) { try TorchCheckpoint(bytes: Array(repeating: 0, count: 100)) }
    }
}
