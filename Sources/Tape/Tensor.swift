// Dense, contiguous, row-major Double tensors with value semantics.
//
// Storage is a reference-counted buffer; mutation copies it first unless it is uniquely referenced
// (copy-on-write). Kernels work on raw pointers taken once per call: indexing a class-held array per
// element costs 30-70x in Swift (exclusivity and uniqueness checks), so no kernel does that.

/// Owned, fixed-size buffer of Doubles, allocated together with its header (one allocation per tensor).
/// Immutable after a kernel has filled it, except through `Tensor`'s copy-on-write mutators.
public final class TensorStorage: ManagedBuffer<Int, Double> {
    /// Number of elements.
    public var count: Int { header }

    /// The elements. Valid while the storage is alive (which any Tensor holding it guarantees).
    public var pointer: UnsafeMutablePointer<Double> { withUnsafeMutablePointerToElements { $0 } }

    static func make(count: Int) -> TensorStorage {
        _ = TensorStorage.allocatorConfigured
        let b = TensorStorage.create(minimumCapacity: Swift.max(count, 1)) { _ in count }
        return unsafeDowncast(b, to: TensorStorage.self)
    }

    static func make(count: Int, repeating value: Double) -> TensorStorage {
        let s = make(count: count)
        let p = s.pointer
        // Large fills (the zeroed gradient buffers of the fused operations) split over the operation's threads.
        parallelRows(count, perRow: 1, align: 4096) { r in (p + r.lowerBound).initialize(repeating: value, count: r.count) }
        return s
    }

    /// Large tensor buffers would otherwise be mmap'ed and unmapped by glibc on every allocation (page
    /// faults on each operation); configured once, on the first tensor.
    private static let allocatorConfigured: Bool = {
        Allocator.keepLargeBuffersInHeap()
        return true
    }()
}

public struct Tensor: Sendable, CustomStringConvertible {
    public private(set) var shape: [Int]
    // Immutable once shared (mutation copies first), so sharing across threads is safe.
    nonisolated(unsafe) internal var storage: TensorStorage

    /// Uninitialized tensor: every caller must write all elements before reading.

    internal init(uninitializedShape shape: [Int]) {
        self.shape = shape
        storage = TensorStorage.make(count: Tensor.elementCount(shape))
    }

    internal init(shape: [Int], storage: TensorStorage) {
        precondition(Tensor.elementCount(shape) == storage.count, "shape \(shape) does not match \(storage.count) elements")
        self.shape = shape
        self.storage = storage
    }

    public init(shape: [Int], repeating value: Double) {
        self.shape = shape
        storage = TensorStorage.make(count: Tensor.elementCount(shape), repeating: value)
    }

    public init(shape: [Int], _ values: [Double]) {
        let n = Tensor.elementCount(shape)
        precondition(values.count == n, "Tensor(shape: \(shape)) needs \(n) values, got \(values.count)")
        self.shape = shape
        storage = TensorStorage.make(count: n)
        values.withUnsafeBufferPointer { src in
            if n > 0 { storage.pointer.initialize(from: src.baseAddress!, count: n) }
        }
    }

    /// 1-D tensor from values.
    public init(_ values: [Double]) { self.init(shape: [values.count], values) }

    /// Rank-0 tensor.
    public init(scalar: Double) {
        shape = []
        storage = TensorStorage.make(count: 1, repeating: scalar)
    }

    public static func zeros(_ shape: [Int]) -> Tensor { Tensor(shape: shape, repeating: 0) }
    public static func ones(_ shape: [Int]) -> Tensor { Tensor(shape: shape, repeating: 1) }

    /// Identity matrix n×n.
    public static func identity(_ n: Int) -> Tensor {
        var t = Tensor.zeros([n, n])
        t.withUnsafeMutableBufferPointer { p in for i in 0..<n { p[i * n + i] = 1 } }
        return t
    }


    public static func elementCount(_ shape: [Int]) -> Int {
        var n = 1
        for d in shape {
            precondition(d >= 0, "negative dimension in shape \(shape)")
            n *= d
        }
        return n
    }

    public var count: Int { storage.count }
    public var rank: Int { shape.count }

    /// The single value of a tensor with one element.
    public var scalar: Double {
        precondition(count == 1, "scalar of a tensor with shape \(shape)")
        return storage.pointer[0]
    }

    /// Copy of the elements in row-major order.
    public var array: [Double] { Array(UnsafeBufferPointer(start: storage.pointer, count: count)) }

    /// Read-only access to the elements (row-major).

    public func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Double>) throws -> R) rethrows -> R {
        try body(UnsafeBufferPointer(start: storage.pointer, count: storage.count))
    }

    /// Mutable access; copies the storage first when it is shared (copy-on-write).

    public mutating func withUnsafeMutableBufferPointer<R>(_ body: (UnsafeMutableBufferPointer<Double>) throws -> R) rethrows -> R {
        if !isKnownUniquelyReferenced(&storage) {
            let fresh = TensorStorage.make(count: storage.count)
            fresh.pointer.initialize(from: storage.pointer, count: storage.count)
            storage = fresh
        }
        return try body(UnsafeMutableBufferPointer(start: storage.pointer, count: storage.count))
    }

    /// Flat element access (row-major). Convenient, not for hot loops.
    public subscript(flat i: Int) -> Double {
        get {
            precondition(i >= 0 && i < count, "flat index \(i) out of range for shape \(shape)")
            return storage.pointer[i]
        }
        set {
            precondition(i >= 0 && i < count, "flat index \(i) out of range for shape \(shape)")
            withUnsafeMutableBufferPointer { $0[i] = newValue }
        }
    }

    /// Element access by multi-index. Convenient, not for hot loops.
    public subscript(_ index: Int...) -> Double {
        get { self[flat: flatIndex(index)] }
        set { self[flat: flatIndex(index)] = newValue }
    }

    private func flatIndex(_ index: [Int]) -> Int {
        precondition(index.count == shape.count, "index \(index) has wrong rank for shape \(shape)")
        var f = 0
        for (k, i) in index.enumerated() {
            precondition(i >= 0 && i < shape[k], "index \(index) out of range for shape \(shape)")
            f = f * shape[k] + i
        }
        return f
    }

    /// Same elements, new shape (no copy). Accepts one -1 dimension.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        var s = newShape
        if let k = s.firstIndex(of: -1) {
            let rest = s.enumerated().filter { $0.offset != k }.reduce(1) { $0 * $1.element }
            precondition(rest > 0 && count % rest == 0, "cannot reshape \(shape) to \(newShape)")
            s[k] = count / rest
        }
        precondition(Tensor.elementCount(s) == count, "cannot reshape \(shape) to \(newShape)")
        return Tensor(shape: s, storage: storage)
    }

    /// True when every element is finite.
    public var isFinite: Bool {
        withUnsafeBufferPointer { p in
            for x in p where !x.isFinite { return false }
            return true
        }
    }

    public var description: String {
        let vals = count <= 12 ? array.map { "\($0)" }.joined(separator: ", ") : array.prefix(12).map { "\($0)" }.joined(separator: ", ") + ", …"
        return "Tensor(shape: \(shape), [\(vals)])"
    }

    /// Max |a - b| over elements (shapes must match).
    public func maxAbsDifference(_ other: Tensor) -> Double {
        precondition(shape == other.shape, "maxAbsDifference: shapes \(shape) and \(other.shape)")
        var m = 0.0
        withUnsafeBufferPointer { a in
            other.withUnsafeBufferPointer { b in
                for i in 0..<a.count { m = Swift.max(m, Swift.abs(a[i] - b[i])) }
            }
        }
        return m
    }

    /// Bitwise equality of shape and every element.
    public func bitwiseEqual(_ other: Tensor) -> Bool {
        guard shape == other.shape else { return false }
        return withUnsafeBufferPointer { a in
            other.withUnsafeBufferPointer { b in
                for i in 0..<a.count where a[i].bitPattern != b[i].bitPattern { return false }
                return true
            }
        }
    }
}
