import Dispatch
import Foundation

/// Results written from worker threads into distinct slots of a buffer.
final class ResultSlots<T>: @unchecked Sendable {
    private var items: [T?]
    private let lock = NSLock()
    init(count: Int) { items = Array(repeating: nil, count: count) }
    func set(_ i: Int, _ v: T) { lock.lock(); items[i] = v; lock.unlock() }
    var values: [T] { items.map { $0! } }
}

/// Maps `body` over 0..<n on up to `threads` threads; the result order is the index order, so the outcome
/// does not depend on the thread count (each task must be independent and deterministic).
public func parallelMap<T>(_ n: Int, threads: Int, _ body: @escaping @Sendable (Int) -> T) -> [T] {
    if threads <= 1 || n <= 1 { return (0..<n).map(body) }
    let slots = ResultSlots<T>(count: n)
    let counter = AtomicCounter()
    DispatchQueue.concurrentPerform(iterations: Swift.min(threads, n)) { _ in
        while true {
            let i = counter.next()
            if i >= n { break }
            slots.set(i, body(i))
        }
    }
    return slots.values
}

final class AtomicCounter: @unchecked Sendable {
    private var value = 0
    private let lock = NSLock()
    func next() -> Int { lock.lock(); defer { value += 1; lock.unlock() }; return value }
}

/// Default worker count: RELAXFT_THREADS, else the number of active processors.
public var defaultThreadCount: Int {
    if let s = ProcessInfo.processInfo.environment["RELAXFT_THREADS"], let n = Int(s), n > 0 { return n }
    return Swift.max(1, ProcessInfo.processInfo.activeProcessorCount)
}
