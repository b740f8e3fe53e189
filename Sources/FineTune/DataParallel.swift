import Cluster
import Foundation
import Potentials
import Tape

// Data-parallel training over the ranks of an MPI job (module Cluster). Every rank holds the whole model, data
// and optimiser state; each takes a contiguous share of every mini-batch (`Communicator.shard`), and the pieces
// of the batch gradient are summed with `orderedSum` in the order one process adds them, so every rank gets the
// bits a single process computes and takes the same optimiser step. Rank 0 alone writes files.

/// The layout of named gradient tensors in one flat vector: names in a fixed order, each at its offset.
struct GradientLayout {
    let names: [String]
    let shapes: [[Int]]
    let offsets: [Int]
    let length: Int

    init(_ entries: [(String, [Int])]) {
        names = entries.map(\.0)
        shapes = entries.map(\.1)
        var o: [Int] = [], n = 0
        for s in shapes {
            o.append(n)
            n += s.reduce(1, *)
        }
        offsets = o
        length = n
    }

    /// The tensors of `gradients` (all names present) in one vector, each value times `scale` (one IEEE
    /// multiplication per value, as `Tensor * Double` does).
    func flatten(_ gradients: [String: Tensor], scale: Double? = nil) -> [Double] {
        var out = [Double](repeating: 0, count: length)
        for (k, name) in names.enumerated() {
            let t = gradients[name]!
            precondition(t.shape == shapes[k], "gradient '\(name)' has shape \(t.shape), expected \(shapes[k])")
            t.withUnsafeBufferPointer { src in
                for i in 0..<src.count { out[offsets[k] + i] = scale.map { src[i] * $0 } ?? src[i] }
            }
        }
        return out
    }

    func unflatten(_ flat: [Double]) -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        for (k, name) in names.enumerated() {
            let n = shapes[k].reduce(1, *)
            out[name] = Tensor(shape: shapes[k], Array(flat[offsets[k]..<(offsets[k] + n)]))
        }
        return out
    }
}

extension Communicator {
    /// Whether this rank writes the run's files (rank 0).
    public var writesFiles: Bool { rank == 0 }

    /// Maps `body` over this rank's share of 0..<count and returns every rank's results in index order, on every
    /// rank: the same array one process computes (results travel as binary property lists, exact Doubles).
    func shardedMap<T: Codable>(_ count: Int, _ body: (Range<Int>) throws -> [T]) throws -> [T] {
        let mine = shard(of: count)
        let local = try body(mine)
        precondition(local.count == mine.count, "shardedMap: \(local.count) results for \(mine.count) items")
        return try gatherInOrder(local)
    }

    /// Ends with an error on every rank when a rank's `digest` of its inputs (configuration, data, starting
    /// weights and state) differs from rank 0's: each rank reads the inputs itself, so they must see the same files.
    func requireSameInputs(_ digest: UInt64, what: String) throws {
        guard size > 1 else { return }
        let all = allgatherBytes(withUnsafeBytes(of: digest.littleEndian) { Array($0) })
        if let r = all.indices.first(where: { all[$0] != all[0] }) {
            throw DataParallelError(message: "rank \(r) of \(size) read other \(what) than rank 0: every rank must see the same files (put the data and the run directory on a file system all nodes share)")
        }
    }

    /// The run's cost over all ranks of this job: CPU seconds summed, wall time and peak memory the largest rank's.
    func jobCost(_ session: RunDirectory.Session) -> RunDirectory.Cost {
        var c = session.total
        guard size > 1 else { return c }
        let mine = session.thisProcess
        var sum = [mine.cpuSeconds], mx = [mine.wallSeconds, mine.peakRSSMB]
        sum.withUnsafeMutableBufferPointer { allreduceSum($0) }
        mx.withUnsafeMutableBufferPointer { allreduceMax($0) }
        c.cpuSeconds = session.earlier.cpuSeconds + sum[0]
        c.wallSeconds = session.earlier.wallSeconds + mx[0]
        c.peakRSSMB = Swift.max(session.earlier.peakRSSMB, mx[1])
        return c
    }

    /// Rank 0's model file on every rank: rank 0 reads it and sends its bytes, so that no rank reads a file while
    /// rank 0 may be replacing it (and run directories on node-local disks work).
    func loadModelFromRankZero(_ path: String) throws -> (potential: any Potential, metadata: [String: String]) {
        if size == 1 { return try ModelFile.load(path) }
        var bytes: [UInt8] = []
        if rank == 0 {
            guard let d = FileManager.default.contents(atPath: path) else { throw DataParallelError(message: "\(path): cannot read") }
            bytes = [UInt8](d)
        }
        broadcastBytes(&bytes, root: 0)
        let (tensors, meta) = try SafeTensors.parse(Data(bytes), path: path)
        return try ModelFile.load(tensors: tensors, metadata: meta, path: path)
    }
}

public struct DataParallelError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// FNV-1a over bytes and Doubles' bits: a digest of a rank's inputs, compared across ranks.
struct InputDigest {
    private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325

    mutating func add(bytes: some Sequence<UInt8>) {
        for b in bytes { value = (value ^ UInt64(b)) &* 0x100_0000_01b3 }
    }
    mutating func add(_ x: Double) {
        value = (value ^ x.bitPattern) &* 0x100_0000_01b3
    }
    mutating func add(_ t: Tensor) {
        for s in t.shape { add(Double(s)) }
        t.withUnsafeBufferPointer { for x in $0 { add(x) } }
    }
    mutating func add(json value: some Encodable) {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        e.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        add(bytes: (try? e.encode(value)) ?? Data())
    }
}
