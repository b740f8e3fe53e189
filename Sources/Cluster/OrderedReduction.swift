import Foundation

/// Contiguous shares of the items 0..<count over `parts` ranks, in rank order: the first `count % parts` ranks
/// get one item more. Contiguous shares keep every rank's items in the global order, which `orderedSum` needs.
public func shardRanges(count: Int, parts: Int) -> [Range<Int>] {
    precondition(count >= 0 && parts >= 1)
    let base = count / parts, extra = count % parts
    var ranges: [Range<Int>] = []
    var start = 0
    for r in 0..<parts {
        let n = base + (r < extra ? 1 : 0)
        ranges.append(start..<(start + n))
        start += n
    }
    return ranges
}

/// `acc[i] = acc[i] + x[i]`: one IEEE addition per element, the operation a single process's loop performs.
@inline(__always)
func accumulate(_ acc: UnsafeMutableBufferPointer<Double>, _ x: UnsafeBufferPointer<Double>) {
    for i in 0..<acc.count { acc[i] = acc[i] + x[i] }
}

/// Segment length (values) of the ordered sum's pipeline. With per-segment cost α + c·s (latency α, c per value
/// sent and added), a chain of R ranks takes about (R − 1 + L/s)(α + c·s) for L values, least at s = √(L·α/((R−1)·c)).
/// α/c ≈ 500 values (a few µs of latency against a few ns per value, on shared memory and on cluster networks
/// alike); clamped to 1K…64K values.
public func pipelineSegment(length: Int, ranks: Int) -> Int {
    guard ranks > 1 else { return Swift.max(1, length) }
    let s = (Double(length) * 500 / Double(ranks - 1)).squareRoot()
    return Swift.min(1 << 16, Swift.max(1 << 10, Int(s)))
}

extension Communicator {
    /// This rank's contiguous share of the items 0..<count.
    public func shard(of count: Int) -> Range<Int> { shardRanges(count: count, parts: size)[rank] }

    /// The elementwise sum of the items 0..<count, evaluated left to right from +0,
    /// `((0 + x₀) + x₁) + … + x₍count−1₎`, delivered to every rank: the bits a single process's loop gives,
    /// whatever the number of ranks. `local` holds this rank's items (`shard(of: count)`, in order), each
    /// `length` long.
    ///
    /// Floating-point addition is not associative, so a reproducible sum must keep the one-process order. With
    /// contiguous shards that order is a chain: rank r continues the partial sum of ranks 0…r−1 with its own items
    /// and passes it on; the last rank holding items broadcasts the total. The vector travels in segments of
    /// `segment` values (default `pipelineSegment`), so rank r + 1 adds segment k while rank r works on segment
    /// k + 1 (a pipeline). Each rank sends and receives the vector about twice, like MPI_Allreduce's ring; the
    /// chain adds (ranks − 1) segment latencies.
    public func orderedSum(_ local: [[Double]], count: Int, length: Int, segment: Int? = nil) -> [Double] {
        let ranges = shardRanges(count: count, parts: size)
        precondition(local.count == ranges[rank].count, "orderedSum: rank \(rank) holds \(local.count) items, its share is \(ranges[rank].count)")
        precondition(local.allSatisfy { $0.count == length }, "orderedSum: items must have \(length) values")
        var acc = [Double](repeating: 0, count: length)
        // Ranks with items form a prefix 0..<holders of the ranks (shares are contiguous, larger first).
        let holders = ranges.filter { !$0.isEmpty }.count
        guard holders > 0, length > 0 else { return acc }
        let step = Swift.max(1, segment ?? pipelineSegment(length: length, ranks: holders))
        acc.withUnsafeMutableBufferPointer { all in
            if rank < holders {
                var start = 0
                while start < length {
                    let seg = UnsafeMutableBufferPointer(rebasing: all[start..<Swift.min(start + step, length)])
                    if rank > 0 { receive(seg, from: rank - 1) }
                    for item in local {
                        item.withUnsafeBufferPointer { accumulate(seg, UnsafeBufferPointer(rebasing: $0[start..<(start + seg.count)])) }
                    }
                    if rank < holders - 1 { send(UnsafeBufferPointer(seg), to: rank + 1) }
                    start += step
                }
            }
            if size > 1 { broadcast(all, root: holders - 1) }
        }
        return acc
    }

    /// The same sum as `orderedSum` by another route: every rank gathers all items and adds them in order.
    /// Each rank receives count × length values (count/2 times the chain's traffic for count items); kept for
    /// `scripts/bench mpi`, which compares the two.
    public func orderedSumByGather(_ local: [[Double]], count: Int, length: Int) -> [Double] {
        let all = allgatherConcatenated(local.flatMap { $0 })
        precondition(all.count == count * length)
        var acc = [Double](repeating: 0, count: length)
        acc.withUnsafeMutableBufferPointer { a in
            all.withUnsafeBufferPointer { x in
                for k in 0..<count { accumulate(a, UnsafeBufferPointer(rebasing: x[(k * length)..<((k + 1) * length)])) }
            }
        }
        return acc
    }

    /// The sum of the items by MPI_Allreduce: each rank adds its own items left to right from +0, then the
    /// library adds the rank partials in its own order. Faster to write, but the bits depend on the rank count.
    public func unorderedSum(_ local: [[Double]], length: Int) -> [Double] {
        var acc = [Double](repeating: 0, count: length)
        acc.withUnsafeMutableBufferPointer { a in
            for item in local { item.withUnsafeBufferPointer { accumulate(a, $0) } }
            allreduceSum(a)
        }
        return acc
    }

    /// Every rank's values concatenated in rank order, on every rank (shards are contiguous, so this is the
    /// items' global order).
    public func allgatherConcatenated(_ local: [Double]) -> [Double] {
        if size == 1 { return local }
        let parts = allgatherBytes(local.withUnsafeBytes { Array($0) })
        let total = parts.reduce(0) { $0 + $1.count }
        precondition(parts.allSatisfy { $0.count % 8 == 0 })
        return [Double](unsafeUninitializedCapacity: total / 8) { out, initialized in
            let raw = UnsafeMutableRawBufferPointer(out)
            var offset = 0
            for part in parts where !part.isEmpty {
                part.withUnsafeBytes { raw.baseAddress!.advanced(by: offset).copyMemory(from: $0.baseAddress!, byteCount: part.count) }
                offset += part.count
            }
            initialized = total / 8
        }
    }

    /// Every rank's `local` values (its shard's results) concatenated in rank order, on every rank. Values
    /// travel as binary property lists, which keep every Double's bits (NaN payloads aside).
    public func gatherInOrder<T: Codable>(_ local: [T]) throws -> [T] {
        if size == 1 { return local }
        let encoder = PropertyListEncoder()
        encoder.outputFormat = .binary
        let mine = [UInt8](try encoder.encode(local))
        var out: [T] = []
        for part in allgatherBytes(mine) {
            out.append(contentsOf: try PropertyListDecoder().decode([T].self, from: Data(part)))
        }
        return out
    }

    /// `root`'s value on every rank (binary property list, exact Doubles).
    public func broadcast<T: Codable>(_ value: T, root: Int = 0) throws -> T {
        if size == 1 { return value }
        var bytes: [UInt8] = []
        if rank == root {
            let encoder = PropertyListEncoder()
            encoder.outputFormat = .binary
            bytes = [UInt8](try encoder.encode([value]))
        }
        broadcastBytes(&bytes, root: root)
        return try PropertyListDecoder().decode([T].self, from: Data(bytes))[0]
    }
}
