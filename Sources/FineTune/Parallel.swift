import Dispatch
import Foundation
import Tape

/// Results written from worker threads into distinct slots of a buffer.
final class ResultSlots<T>: @unchecked Sendable {
    private var items: [T?]
    private let lock = NSLock()
    init(count: Int) { items = Array(repeating: nil, count: count) }
    func set(_ i: Int, _ v: T) { lock.lock(); items[i] = v; lock.unlock() }
    var values: [T] { items.map { $0! } }
}

/// Maps `body` over 0..<n on up to `threads` threads; the result order is the index order, so the outcome
/// does not depend on the thread count (each task must be independent and deterministic). With fewer tasks than
/// threads, each task's operations get the spare threads (`IntraOpThreads`, which change no bit), so one large
/// structure still uses every core.
public func parallelMap<T>(_ n: Int, threads: Int, _ body: @escaping @Sendable (Int) -> T) -> [T] {
    let inner = Swift.max(1, threads / Swift.max(1, Swift.min(threads, n)))
    if threads <= 1 || n <= 1 { return IntraOpThreads.$count.withValue(inner) { (0..<n).map(body) } }
    let slots = ResultSlots<T>(count: n)
    let counter = AtomicCounter()
    DispatchQueue.concurrentPerform(iterations: Swift.min(threads, n)) { _ in
        IntraOpThreads.$count.withValue(inner) {
            while true {
                let i = counter.next()
                if i >= n { break }
                slots.set(i, body(i))
            }
        }
    }
    return slots.values
}

final class AtomicCounter: @unchecked Sendable {
    private var value = 0
    private let lock = NSLock()
    func next() -> Int { lock.lock(); defer { value += 1; lock.unlock() }; return value }
}

/// Default worker count: RELAXFT_THREADS, else the cores of this process's share of the node: an `srun` task's
/// SLURM_CPUS_PER_TASK, the cores divided by the ranks mpirun started on this node, or all active processors.
public var defaultThreadCount: Int {
    let env = ProcessInfo.processInfo.environment
    if let s = env["RELAXFT_THREADS"], let n = Int(s), n > 0 { return n }
    if env["SLURM_STEP_NUM_TASKS"] != nil, let s = env["SLURM_CPUS_PER_TASK"], let n = Int(s), n > 0 { return n }
    let cores = Swift.max(1, ProcessInfo.processInfo.activeProcessorCount)
    if let s = env["OMPI_COMM_WORLD_LOCAL_SIZE"], let ranks = Int(s), ranks > 1 { return Swift.max(1, cores / ranks) }
    return cores
}
