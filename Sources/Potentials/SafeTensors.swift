import Atoms
import Foundation
import Tape

/// Reader and writer of the safetensors format: an 8-byte little-endian header length, a JSON header
/// mapping names to {dtype, shape, data_offsets} plus an optional string map `__metadata__`, then the raw
/// little-endian data. Files written here are readable by Python's `safetensors` package.
public enum SafeTensors {
    public enum DType: String, Sendable {
        case f64 = "F64", f32 = "F32", i64 = "I64", i32 = "I32"
        var size: Int { self == .f64 || self == .i64 ? 8 : 4 }
    }

    public struct FileError: Error, CustomStringConvertible {
        public let path: String
        public let message: String
        public var description: String { "\(path): \(message)" }
    }

    /// Tensors (widened to Double) and metadata of a file, in file order of their data offsets.
    public static func read(_ path: String) throws -> (tensors: OrderedTensors, metadata: [String: String]) {
        guard let data = FileManager.default.contents(atPath: path) else { throw FileError(path: path, message: "cannot read file") }
        return try parse(data, path: path)
    }

    public typealias OrderedTensors = [(name: String, tensor: Tensor)]

    public static func parse(_ data: Data, path: String = "<data>") throws -> (tensors: OrderedTensors, metadata: [String: String]) {
        guard data.count >= 8 else { throw FileError(path: path, message: "not a safetensors file (shorter than 8 bytes)") }
        let bytes = [UInt8](data)
        var n: UInt64 = 0
        for k in 0..<8 { n |= UInt64(bytes[k]) << (8 * UInt64(k)) }
        guard n <= UInt64(bytes.count - 8) else { throw FileError(path: path, message: "header length \(n) exceeds the file size \(bytes.count)") }
        let headerEnd = 8 + Int(n)
        guard let json = try? JSONSerialization.jsonObject(with: Data(bytes[8..<headerEnd])) as? [String: Any] else {
            throw FileError(path: path, message: "header is not a JSON object")
        }
        var metadata: [String: String] = [:]
        var entries: [(String, DType, [Int], Int, Int)] = []
        for (name, value) in json {
            if name == "__metadata__" {
                guard let m = value as? [String: Any] else { throw FileError(path: path, message: "__metadata__ is not an object") }
                for (k, v) in m {
                    guard let s = v as? String else { throw FileError(path: path, message: "metadata value of '\(k)' is not a string") }
                    metadata[k] = s
                }
                continue
            }
            guard let d = value as? [String: Any], let dts = d["dtype"] as? String, let shape = d["shape"] as? [Int],
                  let offs = d["data_offsets"] as? [Int], offs.count == 2 else {
                throw FileError(path: path, message: "malformed header entry '\(name)'")
            }
            guard let dt = DType(rawValue: dts) else { throw FileError(path: path, message: "tensor '\(name)': unsupported dtype \(dts) (F64, F32, I64, I32 are read)") }
            // Sizes from the header are checked without trapping: a shape whose product overflows, or offsets
            // past the end of the file, are errors (the bytes must be in the file).
            guard shape.allSatisfy({ $0 >= 0 }), let count = checkedProduct(shape), let size = checkedProduct([count, dt.size]) else {
                throw FileError(path: path, message: "tensor '\(name)': shape \(shape) is not a valid size")
            }
            guard offs[0] >= 0, offs[1] >= offs[0], offs[1] - offs[0] == size, offs[1] <= bytes.count - headerEnd else {
                throw FileError(path: path, message: "tensor '\(name)': data offsets \(offs) do not match shape \(shape) and dtype \(dts) (\(bytes.count - headerEnd) data bytes)")
            }
            entries.append((name, dt, shape, offs[0], offs[1]))
        }
        entries.sort { $0.3 < $1.3 }
        var out: OrderedTensors = []
        for (name, dt, shape, begin, _) in entries {
            let count = shape.reduce(1, *)
            var values = [Double](repeating: 0, count: count)
            let base = headerEnd + begin
            bytes.withUnsafeBufferPointer { p in
                let raw = UnsafeRawPointer(p.baseAddress! + base)
                for i in 0..<count {
                    switch dt {
                    case .f64: values[i] = Double(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self)))
                    case .f32: values[i] = Double(Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))))
                    case .i64: values[i] = Double(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)))
                    case .i32: values[i] = Double(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)))
                    }
                }
            }
            out.append((name, Tensor(shape: shape, values)))
        }
        return (out, metadata)
    }

    /// Serialises tensors as F64 (or F32) with string metadata.
    public static func serialize(_ tensors: OrderedTensors, metadata: [String: String], dtype: DType = .f64) -> Data {
        precondition(dtype == .f64 || dtype == .f32, "tensors are written as F64 or F32")
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        for (name, t) in tensors {
            header[name] = ["dtype": dtype.rawValue, "shape": t.shape, "data_offsets": [offset, offset + t.count * dtype.size]]
            offset += t.count * dtype.size
        }
        var json = try! JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        // Pad with spaces so the data starts 8-byte aligned, as the reference implementation does.
        while json.count % 8 != 0 { json.append(0x20) }
        var out = Data(capacity: 8 + json.count + offset)
        var n = UInt64(json.count).littleEndian
        withUnsafeBytes(of: &n) { out.append(contentsOf: $0) }
        out.append(json)
        for (_, t) in tensors {
            t.withUnsafeBufferPointer { p in
                var buf = [UInt8](repeating: 0, count: p.count * dtype.size)
                buf.withUnsafeMutableBytes { raw in
                    for i in 0..<p.count {
                        if dtype == .f64 {
                            raw.storeBytes(of: p[i].bitPattern.littleEndian, toByteOffset: 8 * i, as: UInt64.self)
                        } else {
                            raw.storeBytes(of: Float(p[i]).bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self)
                        }
                    }
                }
                out.append(contentsOf: buf)
            }
        }
        return out
    }

    /// Writes atomically (temporary file in the same directory, then rename).
    public static func write(_ tensors: OrderedTensors, metadata: [String: String], to path: String, dtype: DType = .f64) throws {
        try AtomicFile.write(serialize(tensors, metadata: metadata, dtype: dtype), to: path)
    }
}
