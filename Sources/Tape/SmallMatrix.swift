import CLinalg
import Foundation

// Small dense matrices: a Cholesky factorisation (LAPACKE) for BFGS steps, and matrix functions on plain
// arrays for the cell filter's deformation gradients.

/// Cholesky factor of a symmetric positive-definite matrix (LAPACKE dpotrf), or nil when it is not.
public struct CholeskyFactor: Sendable {
    public let factor: Tensor
    public let n: Int

    public init?(_ a: Tensor) {
        let dim = a.shape[0]
        n = dim
        var l = a
        // Column-major lower = row-major upper for a symmetric matrix; column-major calls avoid LAPACKE's
        // transposed copies of the whole matrix.
        let info = l.withUnsafeMutableBufferPointer { p in LAPACKE_dpotrf(LAPACK_COL_MAJOR, 76 /* L */, Int32(dim), p.baseAddress, Int32(dim)) }
        guard info == 0 else { return nil }
        factor = l
    }

    public func solve(_ b: Tensor) -> Tensor {
        var x = b.reshaped([n])
        let info = x.withUnsafeMutableBufferPointer { px in
            factor.withUnsafeBufferPointer { pf in
                LAPACKE_dpotrs(LAPACK_COL_MAJOR, 76, Int32(n), 1, pf.baseAddress, Int32(n), px.baseAddress, Int32(n))
            }
        }
        precondition(info == 0, "Cholesky solve failed (info \(info))")
        return x
    }
}

/// Small dense matrix functions (row-major n×n arrays), used by the cell filter: exponential, logarithm and the
/// Fréchet derivative of the exponential. Deformation gradients are close to the identity, so plain
/// scaling-and-squaring with long Taylor series is accurate to round-off here.
public enum MatrixFunctions {
    public static func multiply(_ a: [Double], _ b: [Double], _ n: Int) -> [Double] {
        var c = [Double](repeating: 0, count: n * n)
        for i in 0..<n { for k in 0..<n {
            let aik = a[i * n + k]
            for j in 0..<n { c[i * n + j] += aik * b[k * n + j] }
        } }
        return c
    }

    public static func identity(_ n: Int) -> [Double] {
        var m = [Double](repeating: 0, count: n * n)
        for i in 0..<n { m[i * n + i] = 1 }
        return m
    }

    public static func norm1(_ a: [Double], _ n: Int) -> Double {
        (0..<n).map { j in (0..<n).reduce(0.0) { $0 + Swift.abs(a[$1 * n + j]) } }.max() ?? 0
    }

    /// exp(A): scale so that ‖A/2^s‖₁ ≤ 1/8, Taylor series to convergence, square s times.
    public static func exp(_ a: [Double], _ n: Int) -> [Double] {
        let nrm = norm1(a, n)
        var s = 0
        while nrm / Foundation.pow(2, Double(s)) > 0.125 { s += 1 }
        let scale = 1 / Foundation.pow(2, Double(s))
        let x = a.map { $0 * scale }
        var result = identity(n), term = identity(n)
        for k in 1...30 {
            term = multiply(term, x, n).map { $0 / Double(k) }
            for i in 0..<(n * n) { result[i] += term[i] }
            if norm1(term, n) < 1e-18 * norm1(result, n) { break }
        }
        for _ in 0..<s { result = multiply(result, result, n) }
        return result
    }

    /// Principal log(A) for A with eigenvalues near the positive real axis: inverse scaling and squaring
    /// (Denman–Beavers square roots until ‖A^(1/2^k) − I‖₁ ≤ 1/8), then the series of log(I + X).
    public static func log(_ a: [Double], _ n: Int) -> [Double] {
        var y = a
        var k = 0
        let eye = identity(n)
        while norm1(zip(y, eye).map { $0 - $1 }, n) > 0.125 && k < 60 {
            y = sqrt(y, n)
            k += 1
        }
        let x = zip(y, eye).map { $0 - $1 }
        var result = [Double](repeating: 0, count: n * n)
        var power = eye
        for j in 1...60 {
            power = multiply(power, x, n)
            let c = (j % 2 == 1 ? 1.0 : -1.0) / Double(j)
            for i in 0..<(n * n) { result[i] += c * power[i] }
            if norm1(power, n) / Double(j) < 1e-18 { break }
        }
        let f = Foundation.pow(2, Double(k))
        return result.map { $0 * f }
    }

    /// Principal square root by the Denman–Beavers iteration.
    public static func sqrt(_ a: [Double], _ n: Int) -> [Double] {
        var y = a, z = identity(n)
        for _ in 0..<100 {
            guard let yi = inverse(y, n), let zi = inverse(z, n) else { break }
            let yn = zip(y, zi).map { 0.5 * ($0 + $1) }
            let zn = zip(z, yi).map { 0.5 * ($0 + $1) }
            let change = norm1(zip(yn, y).map { $0 - $1 }, n)
            y = yn
            z = zn
            if change <= 1e-16 * norm1(y, n) { break }
        }
        return y
    }

    /// Gauss–Jordan inverse with partial pivoting.
    public static func inverse(_ a: [Double], _ n: Int) -> [Double]? {
        var m = a, inv = identity(n)
        for c in 0..<n {
            var p = c
            for r in (c + 1)..<max(n, c + 1) where Swift.abs(m[r * n + c]) > Swift.abs(m[p * n + c]) { p = r }
            guard m[p * n + c] != 0 else { return nil }
            if p != c {
                for j in 0..<n { m.swapAt(c * n + j, p * n + j); inv.swapAt(c * n + j, p * n + j) }
            }
            let d = m[c * n + c]
            for j in 0..<n { m[c * n + j] /= d; inv[c * n + j] /= d }
            for r in 0..<n where r != c {
                let f = m[r * n + c]
                if f == 0 { continue }
                for j in 0..<n { m[r * n + j] -= f * m[c * n + j]; inv[r * n + j] -= f * inv[c * n + j] }
            }
        }
        return inv
    }

    /// Fréchet derivative L(A, E) of exp at A in direction E: the upper-right block of exp([[A, E], [0, A]]).
    public static func expFrechet(_ a: [Double], _ e: [Double], _ n: Int) -> [Double] {
        let m = 2 * n
        var big = [Double](repeating: 0, count: m * m)
        for i in 0..<n { for j in 0..<n {
            big[i * m + j] = a[i * n + j]
            big[(i + n) * m + (j + n)] = a[i * n + j]
            big[i * m + (j + n)] = e[i * n + j]
        } }
        let ex = exp(big, m)
        var out = [Double](repeating: 0, count: n * n)
        for i in 0..<n { for j in 0..<n { out[i * n + j] = ex[i * m + (j + n)] } }
        return out
    }

    public static func transpose(_ a: [Double], _ n: Int) -> [Double] {
        var t = a
        for i in 0..<n { for j in 0..<n { t[j * n + i] = a[i * n + j] } }
        return t
    }
}
