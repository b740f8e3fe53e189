// Dense, contiguous, row-major tensors with value semantics, of Doubles (the default, and what every
// operation supports) or Floats (opt-in single precision; see `ScalarKind`).
//
// Storage is a reference-counted buffer; mutation copies it first unless it is uniquely referenced
// (copy-on-write). Kernels work on raw pointers taken once per call: indexing a class-held array per
// element costs 30-70x in Swift (exclusivity and uniqueness checks), so no kernel does that.

import CLinalg

/// The element type of a tensor. Single precision halves memory traffic and doubles the vector width (sgemm
/// runs about twice dgemm's rate); operations without a single-precision kernel stop with a message naming
/// the missing kernel rather than convert silently.
public enum ScalarKind: UInt8, Sendable, CustomStringConvertible {
    case float64, float32
    public var description: String { self == .float64 ? "float64" : "float32" }
    /// Bytes per element.
    public var size: Int { self == .float64 ? 8 : 4 }
}

/// The element types kernels are written for, once, generically (specialised by the compiler per type).
protocol TapeScalar: BinaryFloatingPoint {
    static var kind: ScalarKind { get }
    init(_ x: Double)
    var double: Double { get }
    static func gemm(_ ta: CBLAS_TRANSPOSE, _ tb: CBLAS_TRANSPOSE, _ m: Int32, _ n: Int32, _ k: Int32, _ a: UnsafePointer<Self>, _ lda: Int32,
                     _ b: UnsafePointer<Self>, _ ldb: Int32, beta: Self, _ c: UnsafeMutablePointer<Self>, _ ldc: Int32)
    static func gemv(_ t: CBLAS_TRANSPOSE, _ m: Int32, _ n: Int32, _ a: UnsafePointer<Self>, _ lda: Int32, _ x: UnsafePointer<Self>,
                     _ y: UnsafeMutablePointer<Self>)
    static func axpy(_ n: Int32, _ s: Self, _ x: UnsafePointer<Self>, _ y: UnsafeMutablePointer<Self>)
}

extension Double: TapeScalar {
    static var kind: ScalarKind { .float64 }
    var double: Double { self }
    @inline(__always)
    static func gemm(_ ta: CBLAS_TRANSPOSE, _ tb: CBLAS_TRANSPOSE, _ m: Int32, _ n: Int32, _ k: Int32, _ a: UnsafePointer<Double>, _ lda: Int32,
                     _ b: UnsafePointer<Double>, _ ldb: Int32, beta: Double, _ c: UnsafeMutablePointer<Double>, _ ldc: Int32) {
        cblas_dgemm(CblasRowMajor, ta, tb, m, n, k, 1.0, a, lda, b, ldb, beta, c, ldc)
    }
    @inline(__always)
    static func gemv(_ t: CBLAS_TRANSPOSE, _ m: Int32, _ n: Int32, _ a: UnsafePointer<Double>, _ lda: Int32, _ x: UnsafePointer<Double>,
                     _ y: UnsafeMutablePointer<Double>) {
        cblas_dgemv(CblasRowMajor, t, m, n, 1.0, a, lda, x, 1, 0.0, y, 1)
    }
    @inline(__always)
    static func axpy(_ n: Int32, _ s: Double, _ x: UnsafePointer<Double>, _ y: UnsafeMutablePointer<Double>) { cblas_daxpy(n, s, x, 1, y, 1) }
}

extension Float: TapeScalar {
    static var kind: ScalarKind { .float32 }
    var double: Double { Double(self) }
    @inline(__always)
    static func gemm(_ ta: CBLAS_TRANSPOSE, _ tb: CBLAS_TRANSPOSE, _ m: Int32, _ n: Int32, _ k: Int32, _ a: UnsafePointer<Float>, _ lda: Int32,
                     _ b: UnsafePointer<Float>, _ ldb: Int32, beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int32) {
        cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, 1.0, a, lda, b, ldb, beta, c, ldc)
    }
    @inline(__always)
    static func gemv(_ t: CBLAS_TRANSPOSE, _ m: Int32, _ n: Int32, _ a: UnsafePointer<Float>, _ lda: Int32, _ x: UnsafePointer<Float>,
                     _ y: UnsafeMutablePointer<Float>) {
        cblas_sgemv(CblasRowMajor, t, m, n, 1.0, a, lda, x, 1, 0.0, y, 1)
    }
    @inline(__always)
    static func axpy(_ n: Int32, _ s: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>) { cblas_saxpy(n, s, x, 1, y, 1) }
}

/// Element count and type of a storage buffer.
public struct StorageHeader: Sendable {
    let count: Int
    let kind: ScalarKind
}

/// Owned, fixed-size buffer of elements, allocated together with its header (one allocation per tensor).
/// Immutable after a kernel has filled it, except through `Tensor`'s copy-on-write mutators. Single-precision
/// buffers hold their Floats in the same Double-sized allocation (half as many words).
public final class TensorStorage: ManagedBuffer<StorageHeader, Double> {
    /// Number of elements.
    public var count: Int { header.count }
    public var kind: ScalarKind { header.kind }

    /// The elements of a Double buffer. Valid while the storage is alive (which any Tensor holding it guarantees).
    public var pointer: UnsafeMutablePointer<Double> {
        precondition(header.kind == .float64, "this operation has no float32 kernel yet (cast the tensor to float64 first)")
        return withUnsafeMutablePointerToElements { $0 }
    }

    /// The elements as `S` (which must be the buffer's type).
    @inline(__always)
    func typed<S: TapeScalar>(_: S.Type) -> UnsafeMutablePointer<S> {
        precondition(header.kind == S.kind, "a \(S.kind) kernel was given a \(header.kind) tensor (mixed precision: cast first)")
        return withUnsafeMutablePointerToElements { UnsafeMutableRawPointer($0).assumingMemoryBound(to: S.self) }
    }

    static func make(count: Int, kind: ScalarKind = .float64) -> TensorStorage {
        _ = TensorStorage.allocatorConfigured
        let words = kind == .float64 ? count : (count + 1) / 2
        let b = TensorStorage.create(minimumCapacity: Swift.max(words, 1)) { _ in StorageHeader(count: count, kind: kind) }
        let s = unsafeDowncast(b, to: TensorStorage.self)
        if kind == .float32 {
            s.withUnsafeMutablePointerToElements { p in _ = UnsafeMutableRawPointer(p).bindMemory(to: Float.self, capacity: Swift.max(count, 1)) }
        }
        return s
    }

    static func make(count: Int, repeating value: Double, kind: ScalarKind = .float64) -> TensorStorage {
        let s = make(count: count, kind: kind)
        // Large fills (the zeroed gradient buffers of the fused operations) split over the operation's threads.
        if kind == .float64 {
            let p = s.typed(Double.self)
            parallelRows(count, perRow: 1, align: 4096) { r in (p + r.lowerBound).initialize(repeating: value, count: r.count) }
        } else {
            let p = s.typed(Float.self), v = Float(value)
            parallelRows(count, perRow: 1, align: 4096) { r in (p + r.lowerBound).initialize(repeating: v, count: r.count) }
        }
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

    internal init(uninitializedShape shape: [Int], kind: ScalarKind = .float64) {
        self.shape = shape
        storage = TensorStorage.make(count: Tensor.elementCount(shape), kind: kind)
    }

    internal init(shape: [Int], storage: TensorStorage) {
        precondition(Tensor.elementCount(shape) == storage.count, "shape \(shape) does not match \(storage.count) elements")
        self.shape = shape
        self.storage = storage
    }

    public init(shape: [Int], repeating value: Double, kind: ScalarKind = .float64) {
        self.shape = shape
        storage = TensorStorage.make(count: Tensor.elementCount(shape), repeating: value, kind: kind)
    }

    /// A single-precision tensor from Floats.
    public init(shape: [Int], float32 values: [Float]) {
        let n = Tensor.elementCount(shape)
        precondition(values.count == n, "Tensor(shape: \(shape)) needs \(n) values, got \(values.count)")
        self.shape = shape
        storage = TensorStorage.make(count: n, kind: .float32)
        let dst = storage.typed(Float.self)
        values.withUnsafeBufferPointer { src in if n > 0 { dst.initialize(from: src.baseAddress!, count: n) } }
    }

    /// The element type.
    public var kind: ScalarKind { storage.kind }

    /// The same values as `kind` (rounded to nearest when narrowing); `self` when already of that kind.
    public func converted(to kind: ScalarKind) -> Tensor {
        if kind == self.kind { return self }
        let out = Tensor(uninitializedShape: shape, kind: kind)
        if kind == .float32 {
            let src = storage.typed(Double.self), dst = out.storage.typed(Float.self)
            parallelRows(count, perRow: 1, align: 4096) { r in for i in r { dst[i] = Float(src[i]) } }
        } else {
            let src = storage.typed(Float.self), dst = out.storage.typed(Double.self)
            parallelRows(count, perRow: 1, align: 4096) { r in for i in r { dst[i] = Double(src[i]) } }
        }
        return out
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

    public static func zeros(_ shape: [Int], kind: ScalarKind = .float64) -> Tensor { Tensor(shape: shape, repeating: 0, kind: kind) }
    public static func ones(_ shape: [Int], kind: ScalarKind = .float64) -> Tensor { Tensor(shape: shape, repeating: 1, kind: kind) }

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
        return kind == .float64 ? storage.pointer[0] : Double(storage.typed(Float.self)[0])
    }

    /// Copy of the elements in row-major order.
    public var array: [Double] {
        if kind == .float32 { return UnsafeBufferPointer(start: storage.typed(Float.self), count: count).map(Double.init) }
        return Array(UnsafeBufferPointer(start: storage.pointer, count: count))
    }

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
        if kind == .float32 { return UnsafeBufferPointer(start: storage.typed(Float.self), count: count).allSatisfy(\.isFinite) }
        return withUnsafeBufferPointer { p in
            for x in p where !x.isFinite { return false }
            return true
        }
    }

    public var description: String {
        let vals = count <= 12 ? array.map { "\($0)" }.joined(separator: ", ") : array.prefix(12).map { "\($0)" }.joined(separator: ", ") + ", …"
        return "Tensor(shape: \(shape)\(kind == .float32 ? ", float32" : ""), [\(vals)])"
    }

    /// Max |a - b| over elements (shapes must match).
    public func maxAbsDifference(_ other: Tensor) -> Double {
        precondition(shape == other.shape, "maxAbsDifference: shapes \(shape) and \(other.shape)")
        var m = 0.0
        if kind == .float32 || other.kind == .float32 {
            for (a, b) in zip(array, other.array) { m = Swift.max(m, Swift.abs(a - b)) }
            return m
        }
        withUnsafeBufferPointer { a in
            other.withUnsafeBufferPointer { b in
                for i in 0..<a.count { m = Swift.max(m, Swift.abs(a[i] - b[i])) }
            }
        }
        return m
    }

    /// Bitwise equality of shape and every element.
    public func bitwiseEqual(_ other: Tensor) -> Bool {
        guard shape == other.shape, kind == other.kind else { return false }
        if kind == .float32 { return array.map(\.bitPattern) == other.array.map(\.bitPattern) }
        return withUnsafeBufferPointer { a in
            other.withUnsafeBufferPointer { b in
                for i in 0..<a.count where a[i].bitPattern != b[i].bitPattern { return false }
                return true
            }
        }
    }
}
