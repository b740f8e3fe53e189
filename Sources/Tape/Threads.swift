import Dispatch
import Foundation
import Synchronization

/// Threads inside one operation (one structure's loops and matrix products), as opposed to the trainers' threads,
/// which take whole structures. Results do not depend on the count: work is split only where each output element
/// is computed by the same instructions in the same order whatever the split (independent rows, the rows or columns
/// of a matrix product); sums over rows go through fixed chunks of `reductionChunk` rows whose partial sums are added
/// in chunk order, the same with one thread as with many.
public enum IntraOpThreads {
    /// Threads an operation may use (≥ 1), bound for a scope with `IntraOpThreads.$count.withValue(n) { … }` (a task
    /// local: it holds for the thread or task that binds it, so structures relaxed on several threads keep 1).
    @TaskLocal public static var count = 1

    /// Work (about one multiply–add per unit) below which an operation stays on the calling thread: a split costs
    /// a few microseconds of thread wake-up.
    static let minimumWork = 1 << 15

    /// Operations split over threads so far in this process (for tests that must see a split happen).
    public static var splits: Int { splitCounter.load(ordering: .relaxed) }
    static let splitCounter = Atomic<Int>(0)

    /// Rows of a matrix product's output (or, for a weight gradient, of its inner dimension) per BLAS call, given
    /// the multiply-adds per such row: a function of the shape alone, never of the thread count, so that the calls
    /// and their rounding are fixed. The largest power of two (32–512) keeping a call within 2¹⁸ multiply-adds:
    /// OpenBLAS computes such calls with its small-matrix kernels, which skip the packing of the operands that its
    /// general kernel does. Measured on CHGNet's shapes (one thread, 6,048 pairs): pairs × 64 by 64 × 64 44.6 GFLOP/s
    /// in 512-row calls, 54.2 in 64-row calls; pairs × 64 by 64 × 128 41.5 → 55.2 (32 rows); the weight gradient
    /// (64 × pairs by pairs × 128) 41.4 → 50.9. Small blocks also split the products of a 200-atom cell into
    /// enough pieces to balance two or more threads.
    @inline(__always)
    static func productBlock(perRow: Int) -> Int {
        var b = 512
        while b > 32 && b &* perRow > 1 << 18 { b >>= 1 }
        return b
    }

    /// Rows per partial sum in row reductions.
    static let reductionChunk = 32
}

/// Runs `body` over contiguous parts of 0..<n (boundaries multiples of `align`), on up to `IntraOpThreads.count`
/// threads when the work (`n · perRow`) is worth it, else once over the whole range on this thread. `body` must
/// write only what its own rows own. The parts go to whichever thread asks first (the calling thread included), so
/// a worker that wakes late takes less; results cannot depend on who ran which part.
@inline(__always)
func parallelRows(_ n: Int, perRow: Int, align: Int = 1, _ body: (Range<Int>) -> Void) {
    // The size test first: it is free, and most operations (classical potentials, small cells) stop there.
    if n < 2 * align || n &* perRow < IntraOpThreads.minimumWork { body(0..<n); return }
    let threads = IntraOpThreads.count
    if threads <= 1 { body(0..<n); return }
    let units = (n + align - 1) / align
    // More parts than threads: late or slower threads balance out.
    let parts = Swift.min(units, 4 * threads, 0xFFFF)
    IntraOpThreads.splitCounter.add(1, ordering: .relaxed)
    withoutActuallyEscaping(body) { body in
        let task = UncheckedTask(body)
        let part = UncheckedPart { p in
            let lo = Swift.min(n, (units * p / parts) * align), hi = Swift.min(n, (units * (p + 1) / parts) * align)
            if lo < hi { task.body(lo..<hi) }
        }
        if !WorkerPool.shared.run(parts: parts, threads: threads, part.body) {
            // The pool serves one operation at a time; another structure's operation has it.
            let stride = Swift.min(threads, parts)
            DispatchQueue.concurrentPerform(iterations: stride) { t in
                var p = t
                while p < parts { part.body(p); p += stride }
            }
        }
    }
}

/// A row task handed to worker threads: the parts write disjoint rows, which the compiler cannot see.
private struct UncheckedTask: @unchecked Sendable {
    let body: (Range<Int>) -> Void
    init(_ body: @escaping (Range<Int>) -> Void) { self.body = body }
}

private struct UncheckedPart: @unchecked Sendable {
    let body: (Int) -> Void
}

/// Persistent worker threads for `parallelRows`. An operation's parts take tens of microseconds to milliseconds and a
/// BPTT step through CHGNet splits hundreds of them, so a worker that has to be woken for each (as with
/// `concurrentPerform`) starts late and the calling thread waits: the workers spin for `spinNanoseconds` after each
/// operation before they sleep. Parts are claimed through one atomic ticket holding the operation's number and the
/// next part (and the part count), so a worker that arrives after its operation finished can never take a part of
/// the next one.
final class WorkerPool: @unchecked Sendable {
    static let shared = WorkerPool()
    static let spinNanoseconds: UInt64 = 200_000
    static let cores = Swift.max(1, ProcessInfo.processInfo.activeProcessorCount)

    private let busy = Atomic<Bool>(false)
    /// (operation number << 32) | (part count << 16) | next part.
    private let ticket = Atomic<Int>(0)
    private let finished = Atomic<Int>(0)
    private var body: ((Int) -> Void)?
    private let creation = Mutex<[Worker]>([])

    private final class Worker: @unchecked Sendable {
        let sleeping = Atomic<Bool>(false)
        let wake = DispatchSemaphore(value: 0)
    }

    /// Runs parts 0..<parts on this thread and up to threads − 1 workers; false (nothing run) when the pool is busy.
    func run(parts: Int, threads: Int, _ part: @escaping (Int) -> Void) -> Bool {
        guard busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else { return false }
        // Never more threads than cores: a spinning worker on an oversubscribed core would take it from the caller.
        let workers = self.workers(Swift.min(threads, Self.cores) - 1)
        self.body = part
        finished.store(0, ordering: .relaxed)
        let operation = (ticket.load(ordering: .relaxed) >> 32) &+ 1
        ticket.store(operation << 32 | parts << 16, ordering: .sequentiallyConsistent)
        for w in workers where w.sleeping.exchange(false, ordering: .sequentiallyConsistent) { w.wake.signal() }
        claimAndRun(operation)
        // A worker still on a part may have lost its core to another process: yield rather than spin against it.
        while finished.load(ordering: .acquiring) < parts { sched_yield() }
        self.body = nil
        busy.store(false, ordering: .releasing)
        return true
    }

    /// Takes parts of `operation` until none is left.
    private func claimAndRun(_ operation: Int) {
        while true {
            var t = ticket.load(ordering: .acquiring)
            while true {
                if t >> 32 != operation || t & 0xFFFF >= (t >> 16) & 0xFFFF { return }
                let (done, seen) = ticket.compareExchange(expected: t, desired: t + 1, ordering: .acquiringAndReleasing)
                if done { break }
                t = seen
            }
            runPart(t & 0xFFFF)
            finished.add(1, ordering: .releasing)
        }
    }

    @inline(never)
    private func runPart(_ p: Int) { body!(p) }

    private func workers(_ count: Int) -> [Worker] {
        creation.withLock { workers in
            while workers.count < count {
                let w = Worker()
                workers.append(w)
                let thread = Thread { [unowned self] in self.serve(w) }
                thread.stackSize = 8 << 20
                thread.start()
            }
            return Array(workers.prefix(count))
        }
    }

    private func serve(_ w: Worker) {
        var seen = 0
        while true {
            var t = ticket.load(ordering: .acquiring)
            if t >> 32 == seen {
                let start = DispatchTime.now().uptimeNanoseconds
                var spins = 0
                while t >> 32 == seen {
                    spins &+= 1
                    // On a loaded machine the spin gives way to runnable threads (on an idle one this returns at once).
                    if spins & 63 == 0 { sched_yield() }
                    if spins & 255 == 0, DispatchTime.now().uptimeNanoseconds - start > Self.spinNanoseconds {
                        // Sleep unless an operation arrived meanwhile; the submitter clears `sleeping` and signals.
                        w.sleeping.store(true, ordering: .sequentiallyConsistent)
                        if ticket.load(ordering: .sequentiallyConsistent) >> 32 == seen
                            || !w.sleeping.exchange(false, ordering: .sequentiallyConsistent) {
                            w.wake.wait()
                        }
                        spins = 0
                    }
                    t = ticket.load(ordering: .acquiring)
                }
            }
            seen = t >> 32
            claimAndRun(seen)
        }
    }
}

/// Sums over rows through fixed chunks: `body(chunkRows, partial)` adds the contributions of its rows into
/// `partial` (width doubles, zeroed); the partials are then added in chunk order into `into` (not zeroed).
/// The result is the same for every thread count.
func chunkedRowSum(_ n: Int, width: Int, perRow: Int, into: UnsafeMutablePointer<Double>,
                   _ body: (Range<Int>, UnsafeMutablePointer<Double>) -> Void) {
    let c = IntraOpThreads.reductionChunk
    let chunks = (n + c - 1) / c
    if chunks == 0 { return }
    let partials = UnsafeMutablePointer<Double>.allocate(capacity: chunks * width)
    defer { partials.deallocate() }
    partials.initialize(repeating: 0, count: chunks * width)
    parallelRows(chunks, perRow: c * perRow) { range in
        for q in range { body(q * c ..< Swift.min(n, (q + 1) * c), partials + q * width) }
    }
    for q in 0..<chunks {
        let p = partials + q * width
        for k in 0..<width { into[k] += p[k] }
    }
}

