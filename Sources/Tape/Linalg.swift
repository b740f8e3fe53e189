import CLinalg

// Dense linear algebra on Tensors (not recorded): symmetric eigen-decomposition and solves, for BFGS,
// implicit differentiation and cell handling.

public enum LinalgError: Error, CustomStringConvertible {
    case failed(routine: String, info: Int32)
    public var description: String {
        switch self {
        case .failed(let r, let info): return "LAPACK \(r) failed (info = \(info))"
        }
    }
}

extension Tensor {
    /// Eigen-decomposition of a symmetric n×n matrix (LAPACKE dsyevd, upper triangle):
    /// eigenvalues ascending, eigenvectors as the columns of the returned matrix.
    public func symmetricEigen() throws -> (values: Tensor, vectors: Tensor) {
        precondition(rank == 2 && shape[0] == shape[1], "symmetricEigen needs a square matrix, got \(shape)")
        let n = shape[0]
        var a = self
        var w = Tensor.zeros([n])
        let info = a.withUnsafeMutableBufferPointer { pa in
            w.withUnsafeMutableBufferPointer { pw in
                LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 86 /* V */, 85 /* U */, Int32(n), pa.baseAddress, Int32(n), pw.baseAddress)
            }
        }
        guard info == 0 else { throw LinalgError.failed(routine: "dsyevd", info: info) }
        return (w, a)
    }

    /// Solves A X = B for a general square A (LAPACKE dgesv); B is n or n×k.
    public static func solve(_ a: Tensor, _ b: Tensor) throws -> Tensor {
        precondition(a.rank == 2 && a.shape[0] == a.shape[1], "solve needs a square matrix")
        let n = a.shape[0]
        let k = b.rank == 1 ? 1 : b.shape[1]
        precondition(b.shape[0] == n, "solve: right-hand side has \(b.shape[0]) rows, expected \(n)")
        var lu = a, x = b
        var piv = [Int32](repeating: 0, count: n)
        let info = lu.withUnsafeMutableBufferPointer { pa in
            x.withUnsafeMutableBufferPointer { px in
                LAPACKE_dgesv(LAPACK_ROW_MAJOR, Int32(n), Int32(k), pa.baseAddress, Int32(n), &piv, px.baseAddress, Int32(k))
            }
        }
        guard info == 0 else { throw LinalgError.failed(routine: "dgesv", info: info) }
        return x
    }

    /// Inverse of a 3×3 matrix (cells), or nil when singular.
    public func inverse3x3() -> Tensor? {
        precondition(shape == [3, 3], "inverse3x3 needs a 3×3 matrix")
        let m = array
        let det = determinant3x3
        guard det != 0 && det.isFinite else { return nil }
        let inv = [
            m[4] * m[8] - m[5] * m[7], m[2] * m[7] - m[1] * m[8], m[1] * m[5] - m[2] * m[4],
            m[5] * m[6] - m[3] * m[8], m[0] * m[8] - m[2] * m[6], m[2] * m[3] - m[0] * m[5],
            m[3] * m[7] - m[4] * m[6], m[1] * m[6] - m[0] * m[7], m[0] * m[4] - m[1] * m[3],
        ].map { $0 / det }
        return Tensor(shape: [3, 3], inv)
    }

    public var determinant3x3: Double {
        precondition(shape == [3, 3], "determinant3x3 needs a 3×3 matrix")
        let m = array
        return m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6]) + m[2] * (m[3] * m[7] - m[4] * m[6])
    }
}

/// BLAS threading: relaxft defaults to one thread (reproducible bits; no gain at its matrix sizes).
public enum BLAS {
    public static func setThreads(_ n: Int) { openblas_set_num_threads(Int32(n)) }
    public static var threads: Int { Int(openblas_get_num_threads()) }
}

public enum Allocator {
    /// Tensor buffers of 128 KiB and more would otherwise be mmap'ed and unmapped on every allocation
    /// (glibc's default threshold), costing page faults on each operation; executables call this once.
    public static func keepLargeBuffersInHeap() {
        mallopt(M_MMAP_THRESHOLD, 256 << 20)
        mallopt(M_TRIM_THRESHOLD, 512 << 20)
    }
}
