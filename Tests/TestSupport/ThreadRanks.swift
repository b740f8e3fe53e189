import Cluster
import Foundation

/// Ranks as threads of this process, for testing the algorithms above the transport without MPI: messages
/// between two ranks on one channel arrive in order, as MPI guarantees.
public final class ThreadHub: @unchecked Sendable {
    struct Key: Hashable { var from: Int, to: Int, channel: String }
    public let size: Int
    private let condition = NSCondition()
    private var queues: [Key: [[UInt8]]] = [:]
    public init(size: Int) { self.size = size }

    func post(_ bytes: [UInt8], _ key: Key) {
        condition.lock()
        queues[key, default: []].append(bytes)
        condition.broadcast()
        condition.unlock()
    }

    func take(_ key: Key) -> [UInt8] {
        condition.lock(); defer { condition.unlock() }
        while queues[key, default: []].isEmpty { condition.wait() }
        return queues[key]!.removeFirst()
    }

    /// Runs `body` once per rank, each on its own thread (blocking receives need them all alive), and returns
    /// the results in rank order.
    public func run<T>(_ body: @escaping @Sendable (ThreadRank) -> T) -> [T] {
        let box = Slots<T>(size), lock = NSLock(), group = DispatchGroup()
        for r in 0..<size {
            group.enter()
            let t = Thread { [self] in
                let v = body(ThreadRank(rank: r, hub: self))
                lock.lock(); box.items[r] = v; lock.unlock()
                group.leave()
            }
            t.stackSize = 8 << 20
            t.start()
        }
        group.wait()
        return box.items.map { $0! }
    }
}

final class Slots<T>: @unchecked Sendable {
    var items: [T?]
    init(_ n: Int) { items = Array(repeating: nil, count: n) }
}

public final class ThreadRank: Communicator, @unchecked Sendable {
    public let rank: Int
    let hub: ThreadHub
    init(rank: Int, hub: ThreadHub) { self.rank = rank; self.hub = hub }
    public var size: Int { hub.size }
    public var backend: String { "threads" }

    private func bytes(_ b: UnsafeBufferPointer<Double>) -> [UInt8] { Array(UnsafeRawBufferPointer(b)) }
    private func fill(_ b: UnsafeMutableBufferPointer<Double>, _ bytes: [UInt8]) {
        precondition(bytes.count == b.count * 8, "message of \(bytes.count) bytes for \(b.count) doubles")
        bytes.withUnsafeBytes { raw in for i in 0..<b.count { b[i] = raw.loadUnaligned(fromByteOffset: 8 * i, as: Double.self) } }
    }

    public func barrier() { _ = allgatherBytes([]) }
    public func broadcast(_ buffer: UnsafeMutableBufferPointer<Double>, root: Int) {
        if rank == root {
            for r in 0..<size where r != root { hub.post(bytes(UnsafeBufferPointer(buffer)), .init(from: root, to: r, channel: "bcast")) }
        } else {
            fill(buffer, hub.take(.init(from: root, to: rank, channel: "bcast")))
        }
    }
    public func broadcastBytes(_ b: inout [UInt8], root: Int) {
        if rank == root {
            for r in 0..<size where r != root { hub.post(b, .init(from: root, to: r, channel: "bcast")) }
        } else {
            b = hub.take(.init(from: root, to: rank, channel: "bcast"))
        }
    }
    public func allgatherBytes(_ b: [UInt8]) -> [[UInt8]] {
        for r in 0..<size where r != rank { hub.post(b, .init(from: rank, to: r, channel: "gather")) }
        return (0..<size).map { $0 == rank ? b : hub.take(.init(from: $0, to: rank, channel: "gather")) }
    }
    private func allreduce(_ buffer: UnsafeMutableBufferPointer<Double>, _ op: (Double, Double) -> Double) {
        let parts = allgatherBytes(bytes(UnsafeBufferPointer(buffer)))
        var tmp = [Double](repeating: 0, count: buffer.count)
        // A rank order other than the items' (last rank first), as a library's tree may add.
        for (k, p) in parts.reversed().enumerated() {
            tmp.withUnsafeMutableBufferPointer { t in
                var x = [Double](repeating: 0, count: buffer.count)
                x.withUnsafeMutableBufferPointer { fill($0, p) }
                for i in 0..<t.count { t[i] = k == 0 ? x[i] : op(t[i], x[i]) }
            }
        }
        for i in 0..<buffer.count { buffer[i] = tmp[i] }
    }
    public func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) { allreduce(buffer, +) }
    public func allreduceMax(_ buffer: UnsafeMutableBufferPointer<Double>) { allreduce(buffer, max) }
    public func send(_ buffer: UnsafeBufferPointer<Double>, to destination: Int) { hub.post(bytes(buffer), .init(from: rank, to: destination, channel: "p2p")) }
    public func receive(_ buffer: UnsafeMutableBufferPointer<Double>, from source: Int) { fill(buffer, hub.take(.init(from: source, to: rank, channel: "p2p"))) }
    public func abort(code: Int32) -> Never { fatalError("abort(\(code))") }
}
