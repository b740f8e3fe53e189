import Dispatch
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

    /// Rows of a matrix product's output per BLAS call.
    static let productRowBlock = 512

    /// Rows per partial sum in row reductions.
    static let reductionChunk = 32
}

/// Runs `body` over contiguous parts of 0..<n (boundaries multiples of `align`), on up to `IntraOpThreads.count`
/// threads when the work (`n · perRow`) is worth it, else once over the whole range on this thread. `body` must
/// write only what its own rows own.
@inline(__always)
func parallelRows(_ n: Int, perRow: Int, align: Int = 1, _ body: (Range<Int>) -> Void) {
    // The size test first: it is free, and most operations (classical potentials, small cells) stop there.
    if n < 2 * align || n &* perRow < IntraOpThreads.minimumWork { body(0..<n); return }
    let threads = IntraOpThreads.count
    if threads <= 1 { body(0..<n); return }
    let units = (n + align - 1) / align
    let parts = Swift.min(threads, units)
    IntraOpThreads.splitCounter.add(1, ordering: .relaxed)
    withoutActuallyEscaping(body) { body in
        let task = UncheckedTask(body)
        DispatchQueue.concurrentPerform(iterations: parts) { p in
            let lo = Swift.min(n, (units * p / parts) * align), hi = Swift.min(n, (units * (p + 1) / parts) * align)
            if lo < hi { task.body(lo..<hi) }
        }
    }
}

/// A row task handed to worker threads: the parts write disjoint rows, which the compiler cannot see.
private struct UncheckedTask: @unchecked Sendable {
    let body: (Range<Int>) -> Void
    init(_ body: @escaping (Range<Int>) -> Void) { self.body = body }
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

